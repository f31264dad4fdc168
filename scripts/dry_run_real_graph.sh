#!/usr/bin/env bash
# The real-robot graph (dataflow.yml) with no robot and no camera: the franka-driver's dry run, a recorded
# push-button frame streamed as the camera's raw rgb24 source, the operator's box for grounding, the shipped
# push-button checkpoint. The verdict file is written before the run (`failure`: a dry run judges nothing), so the
# episode ends on its own. Prints every node's latency and the recording. Settings: TICKS (default 50), OUT
# (default out/dry-run). Needs the README set-up (.venv with dora and pyarrow, the release build).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-out/dry-run}
ticks=${TICKS:-50}
rm -rf "$out" && mkdir -p "$out"
.venv/bin/python - "$out" "$ticks" <<'PY'
import os, re, sys
import pyarrow.ipc as ipc
out, ticks = os.path.abspath(sys.argv[1]), sys.argv[2]
root = os.getcwd()
episode = ipc.open_file(f"{root}/recordings/push-button-none-seed001000-ep0000.arrow").read_all()
with open(f"{out}/frame.rgb", "wb") as f:
    f.write(episode.column("image")[0].as_py())
graph = open(f"{root}/dataflow.yml").read()
for old, new in [
    ("path: target/release/", f"path: {root}/target/release/"),
    ("checkpoints/", f"{root}/checkpoints/"),
    ("BACKEND: franka", "BACKEND: dry-run"),
    ('MAX_TICKS: "300"', f'MAX_TICKS: "{ticks}"'),
    ("VERDICT_FILE: out/verdict", f"VERDICT_FILE: {out}/verdict"),
    ('SOURCE_WIDTH: "640"', 'SOURCE_WIDTH: "224"'),
    ('SOURCE_HEIGHT: "480"', 'SOURCE_HEIGHT: "224"'),
    ("OUT_DIR: out/recordings", f"OUT_DIR: {out}/recordings"),
]:
    assert old in graph, f"dataflow.yml no longer has `{old}`"
    graph = graph.replace(old, new)
# The operator's box instead of the detector and segmenter, whose weights are not in the repository.
graph = re.sub(r"DETECTOR: .*", 'BOXES: "90,60,150,120"', graph)
graph = re.sub(r"\n *SEGMENTER: .*", "", graph)
graph = re.sub(r"SOURCE: ffmpeg.*", f'SOURCE: "while :; do cat {out}/frame.rgb; sleep 0.03; done"', graph)
open(f"{out}/dataflow.yml", "w").write(graph)
PY
echo failure > "$out/verdict"
.venv/bin/dora run "$out/dataflow.yml" > "$out/dora.log" 2>&1 || { tail -40 "$out/dora.log"; exit 1; }
grep -E "stdout (franka-driver|camera|grounding|tracker|encoder|policy|recorder): " "$out/dora.log" | sed -E 's/^.*stdout [a-z-]+: //'
target/release/glue inspect "$out"/recordings/*/*.arrow
