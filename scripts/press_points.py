"""Where push-button policies come down and how far they move about low, against where the button is, split by
whether the first frame shows the button.

The expert's episodes on the evaluation's seeds, variant and strength (`glue record`) give each seed's button (the
TCP's position at the expert's lowest tick, the press) and whether the first frame shows it
(`first_frame_visibility.query_pixels`). The training demonstrations (`--demos`) give the mean press point, where
buttons usually are, and the mean first-frame keypoint position in pixels (the value for `glue eval --unseen-at`).
For each policy run (`NAME=DIR`, the episodes of `glue eval --record` in DIR), over the hidden-button and the
visible seeds: successes; where the TCP first comes down to within 2 cm of the button's height (its horizontal
distance to the button and to the demonstrations' mean; the mean of those points and their median spread about
it); and the horizontal distance it travels while staying that low (summed over consecutive low ticks), which
tells a policy that stays where it came down from one that moves about over the table.

    .venv/bin/python scripts/press_points.py out/demos/push-button-occlusion-1000/*.arrow \
        --demos out/demos/push-button-annotated/*.arrow \
        --runs GLUE=out/study-pb/press/push-button-glue-e94-seed4-occlusion
"""

import argparse
import glob
import os
import statistics
import sys

import pyarrow as pa

from first_frame_visibility import query_pixels

LOW = 0.02  # within this height above the button's press height the TCP counts as down at the button's level (m)


def read(path):
    """(seed, per-tick TCP positions (x, y, z), success, tick 0's keypoints) of a recorded episode."""
    try:
        table = pa.ipc.open_file(path).read_all()
    except (OSError, pa.ArrowInvalid) as e:
        sys.exit(f"{path}: not a readable Arrow episode file ({e})")
    meta = table.schema.metadata or {}
    states = table.column("robot_state").to_pylist() if "robot_state" in table.schema.names else []
    if not states or any(s is None or len(s) != 15 for s in states):
        sys.exit(f"{path}: expected a robot_state column of 15 entries per tick (RobotState::NAMES)")
    keypoints = table.column("keypoints").to_pylist()[0] if "keypoints" in table.schema.names else None
    return int(meta[b"seed"]), [tuple(s[8:11]) for s in states], meta.get(b"success") == b"true", keypoints


def horizontal(a, b):
    return ((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2) ** 0.5


def mean(points, n):
    return tuple(statistics.fmean(p[i] for p in points) for i in range(n))


def descent(tcp, button):
    """The first tick's position within LOW of the button's height, and the horizontal travel over consecutive
    ticks that are both that low."""
    low = [p[2] <= button[2] + LOW for p in tcp]
    first = next((p for p, down in zip(tcp, low) if down), None)
    travel = sum(horizontal(a, b) for a, b, da, db in zip(tcp, tcp[1:], low, low[1:]) if da and db)
    return first, travel


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("expert", nargs="+", help="the expert's recorded .arrow episodes on the evaluation's seeds")
    parser.add_argument("--demos", nargs="+", required=True, help="the training demonstrations (.arrow, annotated)")
    parser.add_argument("--runs", nargs="+", required=True, help="NAME=DIR: a policy's recorded episodes")
    args = parser.parse_args()
    button, hidden = {}, set()
    for path in args.expert:
        seed, tcp, success, _ = read(path)
        if not success:
            sys.exit(f"{path}: the expert failed seed {seed}, so its lowest point is not the button's")
        button[seed] = min(tcp, key=lambda p: p[2])
        if min(first for first, _ in query_pixels(path)[1].values()) == 0:
            hidden.add(seed)
    presses, centroids = [], []
    for path in args.demos:
        _, tcp, _, keypoints = read(path)
        presses.append(min(tcp, key=lambda p: p[2]))
        seen = [keypoints[i:i + 2] for i in range(0, len(keypoints or []), 3) if keypoints[i + 2] >= 0.5]
        if not seen:
            sys.exit(f"{path}: no visible keypoint on tick 0 (run `glue annotate` on the demonstrations)")
        centroids.append(mean(seen, 2))
    usual = mean(presses, 2)
    pixel = mean(centroids, 2)
    print(f"{len(button)} seeds, {len(hidden)} with the button hidden on the first frame; the demonstrations' mean "
          f"press point ({usual[0]:.3f}, {usual[1]:.3f}) m, their median distance from it "
          f"{100 * statistics.median(horizontal(p, usual) for p in presses):.1f} cm; their mean first-frame keypoint "
          f"{pixel[0]:.1f},{pixel[1]:.1f} px (rows {min(c[1] for c in centroids):.0f}-{max(c[1] for c in centroids):.0f})")
    print("run | seeds | success | first came down: to the button, median | to the demos' mean, median "
          "| mean point (spread) | travel while down, median")
    for run in args.runs:
        name, sep, folder = run.partition("=")
        if not sep:
            sys.exit(f"--runs {run}: expected NAME=DIR")
        episodes = [read(p)[:3] for p in sorted(glob.glob(os.path.join(folder, "**", "*.arrow"), recursive=True))]
        unknown = sorted(s for s, _, _ in episodes if s not in button)
        if not episodes or unknown:
            sys.exit(f"--runs {run}: {len(episodes)} episodes, seeds without an expert episode: {unknown}")
        for label, group in (("hidden", True), ("visible", False)):
            rows = [(s, *descent(tcp, button[s]), ok) for s, tcp, ok in episodes if (s in hidden) == group]
            if not rows:
                continue
            down = [(s, first) for s, first, _, _ in rows if first is not None]
            wins = sum(ok for *_, ok in rows)
            if not down:
                print(f"{name} | {label} | {wins}/{len(rows)} | never came down")
                continue
            centre = mean([p for _, p in down], 2)
            print(f"{name} | {label} | {wins}/{len(rows)} "
                  f"| {100 * statistics.median(horizontal(p, button[s]) for s, p in down):.1f} cm "
                  f"| {100 * statistics.median(horizontal(p, usual) for _, p in down):.1f} cm "
                  f"| ({centre[0]:.3f}, {centre[1]:.3f}) m ({100 * statistics.median(horizontal(p, centre) for _, p in down):.1f} cm) "
                  f"| {100 * statistics.median(t for _, _, t, _ in rows):.0f} cm"
                  + (f" ({len(rows) - len(down)} never came down)" if len(down) < len(rows) else ""))


if __name__ == "__main__":
    main()
