"""How much of the grounded object the first frame shows, against closed-loop success on the same seeds.

For each recorded episode (`glue record`, e.g. the expert on the evaluation's seeds, variant and strength: the first
frame depends only on those), the pixels of each text-query object in tick 0's segmentation;
with `--eval`, the successes of those seeds in `eval.json` files, pooled for seeds where an object is hidden
(0 pixels) and where all are visible.

    .venv/bin/python scripts/first_frame_visibility.py out/demos/push-button-occlusion-1000/*.arrow \
        --eval out/study-pb/k94/push-button-glue-e94-k*-occlusion/eval.json
"""

import argparse
import json
import sys

import numpy as np
import pyarrow as pa


def query_pixels(path):
    """(seed, {object name: pixels in tick 0's segmentation}) for the episode's text-query objects."""
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
    seg = np.frombuffer(table.column("segmentation")[0].as_py(), dtype=np.uint8)
    return int(meta[b"seed"]), {q: int((seg == instances[q]).sum()) for q in queries}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("episodes", nargs="+", help="recorded .arrow episodes")
    parser.add_argument("--eval", nargs="*", default=[], help="eval.json files whose seeds to pool")
    args = parser.parse_args()
    pixels = dict(query_pixels(p) for p in args.episodes)
    if len({tuple(objs) for objs in pixels.values()}) > 1:
        sys.exit("the episodes query different objects: pass episodes of one task")
    print("seed | " + " | ".join(next(iter(pixels.values()))) + " (first-frame pixels)")
    for seed in sorted(pixels):
        print(f"{seed} | " + " | ".join(str(n) for n in pixels[seed].values()))
    hidden = {s for s, objs in pixels.items() if min(objs.values()) == 0}
    print(f"{len(hidden)} of {len(pixels)} first frames hide a queried object")
    if not args.eval:
        return
    tally = {True: [0, 0], False: [0, 0]}  # hidden -> [successes, episodes]
    for path in args.eval:
        with open(path) as f:
            for episode in json.load(f)["per_episode"]:
                if episode["seed"] in pixels:
                    cell = tally[episode["seed"] in hidden]
                    cell[0] += int(episode["success"])
                    cell[1] += 1
    for is_hidden, (wins, n) in tally.items():
        rate = f"{100 * wins / n:.0f}%" if n else "-"
        print(f"{'hidden' if is_hidden else 'visible'}: {wins}/{n} episodes succeeded ({rate})")


if __name__ == "__main__":
    main()
