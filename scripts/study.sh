#!/usr/bin/env bash
# The study of docs/results.md (issue 5, sec. IV-V of the paper in our simulator), end to end:
#   demos    expert demonstrations per task (seeds 0..DEMOS-1), keypoints tracked into them (`glue annotate`)
#   train    GLUE, GLUE-S and DP per task, plus GLUE with K = 10 and 20 keypoints on ABLATION_TASK
#   eval     every checkpoint closed-loop on held-out seeds 1000.., in-domain and under each OOD variant
#   report   docs/results.md tables and plots from the eval.json files (`glue report`)
# Usage: scripts/study.sh [demos] [train] [eval] [report]   (no argument: all four)
# Settings (environment): GLUE (the binary), STUDY (output folder), DEMOS, EPOCHS, TRAIN_MINUTES (optional
# wall-clock cap per training run), TRAIN_JOBS (runs at once: one per GPU; several processes on one GPU or on a
# 2-core CPU only share it), BATCH, EPISODES, PARALLEL (episodes batched per eval), EVAL_JOBS (evals at once),
# DEVICE (cpu | wgpu), DEADLINE (unix time after which no eval starts and running ones stop).
set -euo pipefail

GLUE=${GLUE:-target/release/glue}
STUDY=${STUDY:-out/study}
DEMOS=${DEMOS:-50}
EPOCHS=${EPOCHS:-120}
TRAIN_MINUTES=${TRAIN_MINUTES:-}
TRAIN_JOBS=${TRAIN_JOBS:-1}
BATCH=${BATCH:-32}
EPISODES=${EPISODES:-50}
PARALLEL=${PARALLEL:-10}
EVAL_JOBS=${EVAL_JOBS:-1}
DEVICE=${DEVICE:-cpu}
DEADLINE=${DEADLINE:-0}
TASKS=${TASKS:-"push-button stack-block place-fruit"}
POLICIES=${POLICIES:-"glue glue-s dp"}
VARIANTS=${VARIANTS:-"none clutter occlusion lighting"}
ABLATION_TASK=${ABLATION_TASK:-push-button}
ABLATION_K=${ABLATION_K-"10 20"}   # set it empty to skip the ablation

stages=${*:-demos train eval report}
mkdir -p "$STUDY"/{demos,runs,eval,logs}

# The demonstrations of a run: GLUE trains on keypoints tracked with its K (as the loop sees them).
demos_for() { # task k
  if [ "$2" = 15 ]; then echo "$STUDY/demos/$1"; else echo "$STUDY/demos/$1-k$2"; fi
}

run_demos() {
  for task in $TASKS; do
    (
      "$GLUE" record --task "$task" --episodes "$DEMOS" --seed-start 0 --out "$STUDY/demos/$task"
      "$GLUE" annotate --k 15 "$STUDY/demos/$task"
      if [ "$task" = "$ABLATION_TASK" ]; then
        for k in $ABLATION_K; do
          rm -rf "$(demos_for "$task" "$k")" && cp -r "$STUDY/demos/$task" "$(demos_for "$task" "$k")"
          "$GLUE" annotate --k "$k" "$(demos_for "$task" "$k")"
        done
      fi
    ) >"$STUDY/logs/demos-$task.log" 2>&1 &
  done
  wait
  grep -h "recorded" "$STUDY"/logs/demos-*.log
}

train_one() { # task policy k
  local name="$1-$2" data cap=()
  [ "$3" = 15 ] || name="$name-k$3"
  data=$(demos_for "$1" "$3")
  [ -n "$TRAIN_MINUTES" ] && cap=(--max-minutes "$TRAIN_MINUTES")
  if [ -d "$STUDY/runs/$name/state" ]; then
    "$GLUE" train --resume --out "$STUDY/runs/$name" --epochs "$EPOCHS" "${cap[@]}" --device "$DEVICE"
  else
    "$GLUE" train --policy "$2" --data "$data" --out "$STUDY/runs/$name" --epochs "$EPOCHS" --batch-size "$BATCH" \
      "${cap[@]}" --device "$DEVICE"
  fi >"$STUDY/logs/train-$name.log" 2>&1 || echo "train $name failed: see $STUDY/logs/train-$name.log" >&2
}

run_train() {
  {
    for task in $TASKS; do for policy in $POLICIES; do echo "$task $policy 15"; done; done
    for k in $ABLATION_K; do echo "$ABLATION_TASK glue $k"; done
  } | xargs -P "$TRAIN_JOBS" -L 1 bash -c 'train_one "$@"' _
  grep -h "^epoch .*validation" "$STUDY"/logs/train-*.log | tail -n 20 || true
}

eval_one() { # run variant k
  local out="$STUDY/eval/$1-$2" left=600
  [ -f "$out/eval.json" ] && return 0
  if [ "$DEADLINE" != 0 ]; then left=$((DEADLINE - $(date +%s))); [ "$left" -gt 5 ] || return 0; fi
  timeout "$left" "$GLUE" eval --checkpoint "$STUDY/runs/$1/last" --task "$(echo "$1" | cut -d- -f1-2)" \
    --variant "$2" --k "$3" --episodes "$EPISODES" --parallel "$PARALLEL" --device "$DEVICE" --out "$out" \
    >"$STUDY/logs/eval-$1-$2.log" 2>&1 || echo "eval $1 $2 did not finish" >&2
}
export -f train_one eval_one demos_for
export GLUE STUDY EPISODES PARALLEL DEVICE DEADLINE EPOCHS TRAIN_MINUTES BATCH

run_eval() {
  # In-domain first, then the key-patch ablation, then the OOD variants (what a cut-short run loses last).
  {
    for task in $TASKS; do for policy in $POLICIES; do echo "$task-$policy none 15"; done; done
    for k in $ABLATION_K; do echo "$ABLATION_TASK-glue-k$k none $k"; done
    for variant in $VARIANTS; do
      [ "$variant" = none ] && continue
      for task in $TASKS; do for policy in $POLICIES; do echo "$task-$policy $variant 15"; done; done
    done
  } | xargs -P "$EVAL_JOBS" -L 1 bash -c 'eval_one "$@"' _
  grep -h "succeeded" "$STUDY"/logs/eval-*.log || true
}

run_report() {
  "$GLUE" report --study "$STUDY" --out docs/results
}

for stage in $stages; do
  echo "== $stage ($(date -u +%T))"
  "run_$stage"
done
