"""How the keypoints of annotated recordings hold up under a variant, against the same seeds without it.

Give the episodes of one task under the variant and, with `--base`, the same seeds without it (`glue record` with
the same `--seed-start`, then `glue annotate` on both): the same object layout and, for the scripted expert, the
same motion, so what differs is what the camera sees. Each keypoint belongs to the object whose tick-0
segmentation it lies on (keypoints are placed inside the grounded masks). Per object the script prints

- first frame: how far each keypoint lies from the base episode's keypoint of the same index (the policy reads
  the coordinates in index order) and from the base's nearest keypoint of the same object (placement, order
  aside), and the share whose nearest base keypoint has another index;
- later ticks, for each condition: the share of keypoint-ticks the tracker calls visible, and the share visible
  and on their own object in that tick's segmentation (tracked on the object, not drifted off it or onto
  what covers it); then the visible share in each tenth of the episode (when points drop out);
- with `--eval`, the variant's mean visible share per object over the seeds an eval.json counts as successes
  and over its failures.

    .venv/bin/python scripts/keypoint_quality.py out/demos/place-fruit-lighting-1000-kp/*.arrow \
        --base out/demos/place-fruit-none-1000-kp/*.arrow --eval out/eval-keypoints/place-fruit-lighting/eval.json
"""

import argparse
import sys

import numpy as np

from first_frame_visibility import eval_outcomes, tick_segmentation, one_task, read_episode


def keypoint_rows(path, table):
    """Each tick's keypoints as an [N, 3] array (x, y, visible); exits naming the file when a tick has none or the
    count changes."""
    rows = []
    for tick, cell in enumerate(table.column("keypoints").to_pylist()):
        if cell is None or len(cell) % 3 or (rows and len(cell) != rows[0].size):
            sys.exit(f"{path}: tick {tick} has no [N, 3] keypoints like tick 0 (column keypoints; run glue annotate)")
        rows.append(np.asarray(cell, dtype=np.float32).reshape(-1, 3))
    return rows


def episode_quality(path):
    """(seed, {object: dict}) with, per text-query object, its tick-0 keypoints (index, x, y), over ticks 1..
    the counts of keypoint-ticks, visible ones and visible ones on the object's own segmentation, and each
    tick's visible share."""
    table, queries, instances = read_episode(path)
    keypoints = keypoint_rows(path, table)

    def seg_at(tick, points):
        seg = tick_segmentation(path, table, tick)
        xs = np.clip(np.floor(points[:, 0]).astype(int), 0, seg.shape[1] - 1)
        ys = np.clip(np.floor(points[:, 1]).astype(int), 0, seg.shape[0] - 1)
        return seg[ys, xs]

    owner = seg_at(0, keypoints[0])
    mine = {q: owner == instances[q] for q in queries}
    visible = {q: 0 for q in queries}
    on_object = {q: 0 for q in queries}
    per_tick = {q: [] for q in queries}
    for tick in range(1, len(keypoints)):
        points = keypoints[tick]
        seen = points[:, 2] > 0.5
        under = seg_at(tick, points)
        for q in queries:
            visible[q] += int(seen[mine[q]].sum())
            on_object[q] += int((seen & (under == instances[q]))[mine[q]].sum())
            per_tick[q].append(seen[mine[q]].mean() if mine[q].any() else np.nan)
    objects = {
        q: {
            "first": np.column_stack([np.nonzero(mine[q])[0], keypoints[0][mine[q]][:, :2]]),
            "ticks": int(mine[q].sum()) * (len(keypoints) - 1),
            "visible": visible[q],
            "on_object": on_object[q],
            "per_tick": np.array(per_tick[q]),
        }
        for q in queries
    }
    return int(table.schema.metadata[b"seed"]), objects


def load(paths):
    return one_task(dict(episode_quality(p) for p in paths))


def share_of(cell):
    return cell["visible"] / cell["ticks"] if cell["ticks"] else np.nan


def share(part, whole):
    return f"{part / whole:.2f}" if whole else "-"


def print_tracking(name, episodes):
    for q in next(iter(episodes.values())):
        cells = [objs[q] for objs in episodes.values()]
        ticks, visible, on = (sum(c[k] for c in cells) for k in ("ticks", "visible", "on_object"))
        print(f"{name} | {q} | {len(cells)} | {share(visible, ticks)} | {share(on, ticks)} | {share(on, visible)}")


def print_profile(name, episodes, parts=10):
    """The visible share in each `parts`-th of the episodes' later ticks, averaged over episodes."""
    for q in next(iter(episodes.values())):
        tenths = np.zeros(parts)
        for objs in episodes.values():
            ticks = objs[q]["per_tick"]
            part = np.minimum(parts - 1, np.arange(len(ticks)) * parts // max(1, len(ticks)))
            tenths += [np.nanmean(ticks[part == i]) if (part == i).any() else np.nan for i in range(parts)]
        print(f"{name} | {q} | " + " ".join(f"{v / len(episodes):.2f}" for v in tenths))


def print_first_frame(variant, base):
    """Per object, the variant's tick-0 keypoints against the base's on the seeds both hold."""
    seeds = sorted(set(variant) & set(base))
    if not seeds:
        sys.exit("--base: no seed in common with the episodes")
    print("object | seeds | same-index distance px (median, mean) | nearest base keypoint px (median) | nearest has another index")
    for q in variant[seeds[0]]:
        same, nearest, reordered = [], [], []
        for s in seeds:
            a, b = variant[s][q]["first"], base[s][q]["first"]
            if len(a) == 0 or len(b) == 0:
                continue
            d = np.linalg.norm(a[:, None, 1:] - b[None, :, 1:], axis=2)
            closest = d.argmin(axis=1)
            nearest.extend(d[np.arange(len(a)), closest])
            reordered.extend(b[closest, 0] != a[:, 0])
            common = np.intersect1d(a[:, 0], b[:, 0])
            same.extend(d[np.searchsorted(a[:, 0], common), np.searchsorted(b[:, 0], common)])
        print(f"{q} | {len(seeds)} | {np.median(same):.1f}, {np.mean(same):.1f} | {np.median(nearest):.1f} | "
              f"{np.mean(reordered):.2f}")


def print_by_outcome(episodes, path):
    outcome = dict(eval_outcomes(path))
    for success in (True, False):
        cells = [objs for seed, objs in episodes.items() if outcome.get(seed) is success]
        means = [f"{q} {np.mean([share_of(objs[q]) for objs in cells]):.2f}" for q in next(iter(episodes.values()))]
        label = "successes" if success else "failures"
        print(f"{path} {label}: {len(cells)} episodes, mean visible share " + (", ".join(means) if cells else "-"))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("episodes", nargs="+", help="annotated .arrow episodes under the variant")
    parser.add_argument("--base", nargs="*", default=[], help="annotated episodes of the same seeds without it")
    parser.add_argument("--eval", nargs="*", default=[], help="eval.json files of the variant's seeds")
    args = parser.parse_args()
    variant = load(args.episodes)
    base = load(args.base) if args.base else None
    print("condition | object | episodes | visible (ticks 1..) | visible and on the object | of the visible, on the object")
    print_tracking("variant", variant)
    if base:
        print_tracking("base", base)
    print("condition | object | visible share in each tenth of the episode")
    print_profile("variant", variant)
    if base:
        print_profile("base", base)
        print_first_frame(variant, base)
    for path in args.eval:
        print_by_outcome(variant, path)


if __name__ == "__main__":
    main()
