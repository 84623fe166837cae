#!/usr/bin/env bash
# The GPU check, as steps of at most 8 minutes each, one JSON per step in OUTDIR as each step finishes.
#   bash scripts/gpu_check.sh OUTDIR [STEP ...]
# STEPs (default: all, in this order): env models torch-bert torch-xlnet pretrain-bert pretrain-xlnet gpu-tests
# tensorrt-bert tensorrt-xlnet; env always runs. The models live in $BILM_GPU_CHECK_WORK (default OUTDIR/work),
# so a later call with other steps reuses them (run `models` again in it: it skips what exists).
# Stops at the first step that fails or runs out of time (exit code non-zero); a step that cannot run here
# (TensorRT not installed) is recorded as skipped with the reason; a step where only some rows failed is
# "partial", the check goes on, and exits 1 at the end. On an H200 without TensorRT the whole
# check should take 8-12 minutes (estimates, not yet measured: env 10 s, models 1 min, torch 1-3 min and
# pretrain 1-3 min per family, most of it torch.compile); with TensorRT add 3-6 min per family.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:?usage: bash scripts/gpu_check.sh OUTDIR [STEP ...]}"
shift
only=" $* "
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore}"

# step NAME SECONDS ARGS...: run one step under `timeout`; if it dies without writing its JSON (killed at the
# limit, or crashed before Python could), write one that says so; stop the check on any failure
step() {
  local name=$1 limit=${BILM_GPU_CHECK_LIMIT_S:-$2} rc  # the override: for the test of a step past its limit
  shift 2
  [[ $name == env || $only == "  " || $only == *" $name "* ]] || return 0
  echo "== $name (at most ${limit}s)"
  set +e  # the step's own exit status, not grep's (which fails when it filters every line)
  timeout --kill-after=10 "$limit" python scripts/gpu_check.py "$@" 2>&1 | tee "$OUT/$name.log" | \
    grep -v -E "^\s*$|Warning|warn\(" | tail -n 40
  rc=${PIPESTATUS[0]}
  set -e
  if [[ $rc != 0 && ! -s "$OUT/$name.json" ]]; then
    local why="exit $rc"; [[ $rc == 124 || $rc == 137 ]] && why="ran past its limit of ${limit}s"
    printf '{"step": "%s", "status": "failed", "reason": "%s; see %s.log"}\n' "$name" "$why" "$name" > "$OUT/$name.json"
  fi
  if [[ $rc != 0 ]]; then
    echo "gpu_check: step $name failed ($OUT/$name.json); stopping" >&2
    exit "$rc"
  fi
}

step env 60 env "$OUT"
step models 300 models "$OUT"
for family in bert xlnet; do
  step "torch-$family" 480 torch "$OUT" "$family"
done
for family in bert xlnet; do
  step "pretrain-$family" 480 pretrain "$OUT" "$family"
done
step gpu-tests 480 gpu-tests "$OUT"
for family in bert xlnet; do
  step "tensorrt-$family" 480 tensorrt "$OUT" "$family"
done
echo "results: $OUT/*.json"
partial=$(grep -l '"status": "partial"' "$OUT"/*.json || true)
if [[ -n $partial ]]; then
  echo "gpu_check: some rows failed (their errors are in the JSON): $partial" >&2
  exit 1
fi
