"""How much of the grounded object the first frame shows, against closed-loop success on the same seeds.

For each recorded episode (`glue record`, e.g. the expert on the evaluation's seeds, variant and strength: the first
frame depends only on those), the pixels of each text-query object in tick 0's segmentation, and the most it shows
on any later tick (whether it comes into view as the episode goes on, where grounding again could find it);
with `--eval`, the successes of those seeds in `eval.json` files, pooled for seeds where an object is hidden
(0 pixels) on the first frame and where all are visible.

    .venv/bin/python scripts/first_frame_visibility.py out/demos/push-button-occlusion-1000/*.arrow \
        --eval out/study-pb/k94/push-button-glue-e94-k*-occlusion/eval.json
"""

import argparse
import json
import sys

import numpy as np
import pyarrow as pa


def query_pixels(path):
    """(seed, {object name: (pixels in tick 0's segmentation, most pixels on any tick)}) for the episode's
    text-query objects."""
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
    counts = {q: [] for q in queries}
    for tick, cell in enumerate(table.column("segmentation").to_pylist()):
        if cell is None:
            sys.exit(f"{path}: tick {tick} has no segmentation (column segmentation, one uint8 instance id per pixel)")
        seg = np.frombuffer(cell, dtype=np.uint8)
        for q in queries:
            counts[q].append(int((seg == instances[q]).sum()))
    return int(meta[b"seed"]), {q: (c[0], max(c)) for q, c in counts.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("episodes", nargs="+", help="recorded .arrow episodes")
    parser.add_argument("--eval", nargs="*", default=[], help="eval.json files whose seeds to pool")
    args = parser.parse_args()
    pixels = dict(query_pixels(p) for p in args.episodes)
    if len({tuple(objs) for objs in pixels.values()}) > 1:
        sys.exit("the episodes query different objects: pass episodes of one task")
    print("seed | " + " | ".join(next(iter(pixels.values()))) + " (first-frame pixels / most on any tick)")
    for seed in sorted(pixels):
        print(f"{seed} | " + " | ".join(f"{first} / {most}" for first, most in pixels[seed].values()))
    hidden = {s for s, objs in pixels.items() if min(first for first, _ in objs.values()) == 0}
    never = {s for s, objs in pixels.items() if min(most for _, most in objs.values()) == 0}
    print(f"{len(hidden)} of {len(pixels)} first frames hide a queried object; "
          f"in {len(never)} it stays hidden on every tick")
    if not args.eval:
        return
    tally = {True: [0, 0], False: [0, 0]}  # hidden -> [successes, episodes]
    for path in args.eval:
        try:
            with open(path) as f:
                episodes = [(e["seed"], bool(e["success"])) for e in json.load(f)["per_episode"]]
        except (OSError, ValueError, KeyError, TypeError) as e:
            sys.exit(f"{path}: not a readable eval.json with a per_episode list of {{seed, success}} ({e!r})")
        for seed, success in episodes:
            if seed in pixels:
                cell = tally[seed in hidden]
                cell[0] += int(success)
                cell[1] += 1
    for is_hidden, (wins, n) in tally.items():
        rate = f"{100 * wins / n:.0f}%" if n else "-"
        print(f"{'hidden' if is_hidden else 'visible'}: {wins}/{n} episodes succeeded ({rate})")


if __name__ == "__main__":
    main()
