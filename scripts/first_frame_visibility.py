"""How much of the grounded object the first frame shows, against closed-loop success on the same seeds.

For each recorded episode (`glue record`, e.g. the expert on the evaluation's seeds, variant and strength: the first
frame depends only on those), the pixels of each text-query object in tick 0's segmentation, and the most it shows
on any later tick (whether it comes into view as the episode goes on, where grounding again could find it);
with `--eval`, the successes of those seeds in `eval.json` files, pooled for seeds where an object is hidden
(0 pixels) on the first frame and where all are visible; with `--unoccluded`, episodes of the same seeds without
the variant (the same object layout), the share of each object the first frame shows and how far the centroid of
its visible part lies from its whole silhouette's (where keypoints placed on the visible part put the object).

    .venv/bin/python scripts/first_frame_visibility.py out/demos/push-button-occlusion-1000/*.arrow \
        --eval out/study-pb/k94/push-button-glue-e94-k*-occlusion/eval.json
    .venv/bin/python scripts/first_frame_visibility.py out/demos/place-fruit-occlusion-1000/*.arrow \
        --unoccluded out/demos/place-fruit-none-1000/*.arrow
"""

import argparse
import json
import sys

import numpy as np
import pyarrow as pa


def read_episode(path):
    """The episode's table, its text-query objects and their instance ids; exits with a message naming the file
    when it is not a glue episode."""
    try:
        table = pa.ipc.open_file(path).read_all()
    except (OSError, pa.ArrowInvalid) as e:
        sys.exit(f"{path}: not a readable Arrow episode file ({e})")
    meta = table.schema.metadata or {}
    if not meta.get(b"glue.format", b"").startswith(b"glue-episode/") or table.num_rows == 0:
        sys.exit(f"{path}: not a glue episode with at least one tick (schema metadata glue.format, rows)")
    queries = json.loads(meta[b"text_query"])
    instances = {o["name"]: o["instance"] for o in json.loads(meta[b"objects"])}
    missing = [q for q in queries if q not in instances]
    if missing:
        sys.exit(f"{path}: text_query {missing} not among the episode's objects {sorted(instances)}")
    return table, queries, instances


def tick_segmentation(path, table, tick=0):
    """Tick `tick`'s instance ids as a height x width image (the episode's metadata)."""
    cell = table.column("segmentation")[tick].as_py()
    height, width = int(table.schema.metadata[b"height"]), int(table.schema.metadata[b"width"])
    if cell is None or len(cell) != height * width:
        sys.exit(f"{path}: tick {tick}'s segmentation is not {height}x{width} uint8 instance ids (column segmentation)")
    return np.frombuffer(cell, dtype=np.uint8).reshape(height, width)


def one_task(episodes):
    """`episodes` (seed -> {object name: ...}) unchanged; exits when they query different objects."""
    if len({tuple(objs) for objs in episodes.values()}) > 1:
        sys.exit("the episodes query different objects: pass episodes of one task")
    return episodes


def eval_outcomes(path):
    """[(seed, success)] of an eval.json's per_episode list; exits naming the file when it cannot be read."""
    try:
        with open(path) as f:
            return [(e["seed"], bool(e["success"])) for e in json.load(f)["per_episode"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        sys.exit(f"{path}: not a readable eval.json with a per_episode list of {{seed, success}} ({e!r})")


def query_pixels(path):
    """(seed, {object name: (pixels in tick 0's segmentation, most pixels on any tick)}, {object name: tick 0's
    boolean mask}) for the episode's text-query objects."""
    table, queries, instances = read_episode(path)
    meta = table.schema.metadata
    first = tick_segmentation(path, table)
    counts = {q: [] for q in queries}
    for tick, cell in enumerate(table.column("segmentation").to_pylist()):
        if cell is None:
            sys.exit(f"{path}: tick {tick} has no segmentation (column segmentation, one uint8 instance id per pixel)")
        seg = np.frombuffer(cell, dtype=np.uint8)
        for q in queries:
            counts[q].append(int((seg == instances[q]).sum()))
    masks = {q: first == instances[q] for q in queries}
    return int(meta[b"seed"]), {q: (c[0], max(c)) for q, c in counts.items()}, masks


def first_frame_masks(path):
    """(seed, {object name: tick 0's boolean mask}) for the episode's text-query objects."""
    table, queries, instances = read_episode(path)
    seg = tick_segmentation(path, table)
    return int(table.schema.metadata[b"seed"]), {q: seg == instances[q] for q in queries}


def centroid(mask):
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()]) if len(xs) else None


def compare_unoccluded(b, unoccluded):
    """Per object: the share of its unoccluded silhouette the varied first frame (`b`: seed -> masks) shows, and
    the shift of the visible part's centroid from the whole silhouette's, over the seeds both sets hold."""
    a = dict(first_frame_masks(p) for p in unoccluded)
    seeds = sorted(set(a) & set(b))
    if not seeds:
        sys.exit("--unoccluded: no seed in common with the episodes")
    print(f"object | seeds | share in view (median) | under half in view | hidden | centroid shift of the visible part, px (median, max)")
    for q in a[seeds[0]]:
        shares, shifts, hidden = [], [], 0
        for s in seeds:
            whole, seen = a[s][q], b[s][q] & a[s][q]
            if not whole.any():
                continue
            shares.append(seen.sum() / whole.sum())
            c = centroid(seen)
            if c is None:
                hidden += 1
            else:
                shifts.append(float(np.linalg.norm(c - centroid(whole))))
        shift = f"{np.median(shifts):.1f}, {max(shifts):.1f}" if shifts else "-"
        print(f"{q} | {len(shares)} | {np.median(shares):.2f} | {sum(x < 0.5 for x in shares)} | {hidden} | {shift}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("episodes", nargs="+", help="recorded .arrow episodes")
    parser.add_argument("--eval", nargs="*", default=[], help="eval.json files whose seeds to pool")
    parser.add_argument("--unoccluded", nargs="*", default=[], help="episodes of the same seeds without the variant")
    args = parser.parse_args()
    episodes = [query_pixels(p) for p in args.episodes]
    pixels = one_task({seed: px for seed, px, _ in episodes})
    print("seed | " + " | ".join(next(iter(pixels.values()))) + " (first-frame pixels / most on any tick)")
    for seed in sorted(pixels):
        print(f"{seed} | " + " | ".join(f"{first} / {most}" for first, most in pixels[seed].values()))
    hidden = {s for s, objs in pixels.items() if min(first for first, _ in objs.values()) == 0}
    never = {s for s, objs in pixels.items() if min(most for _, most in objs.values()) == 0}
    print(f"{len(hidden)} of {len(pixels)} first frames hide a queried object; "
          f"in {len(never)} it stays hidden on every tick")
    if args.unoccluded:
        compare_unoccluded({seed: masks for seed, _, masks in episodes}, args.unoccluded)
    if not args.eval:
        return
    tally = {True: [0, 0], False: [0, 0]}  # hidden -> [successes, episodes]
    for path in args.eval:
        for seed, success in eval_outcomes(path):
            if seed in pixels:
                cell = tally[seed in hidden]
                cell[0] += int(success)
                cell[1] += 1
    for is_hidden, (wins, n) in tally.items():
        rate = f"{100 * wins / n:.0f}%" if n else "-"
        print(f"{'hidden' if is_hidden else 'visible'}: {wins}/{n} episodes succeeded ({rate})")


if __name__ == "__main__":
    main()
