# Sourced by every GPU script: source "$(dirname "$0")/preamble.sh" HARNESS_BINARY OUT_DIR LOG_NAME [DEFAULT_ITERS]
# Sets harness, out, log, iters (ITERS overrides the default) and script (the caller's name, for its sentences), records
# the machine (GPUs, driver, PyTorch; a line saying what is missing instead of a traceback), and keeps NCCL's NVLink
# multicast (NVLS) off unless NCCL_NVLS_ENABLE is set. Defines:
#   run NAME FLAGS...   harness run "${common[@]}" FLAGS --out OUT/NAME; a run that leaves no summary.json is reported
#                       (its exit code; its output is in the log) and, where retry=GRANULARITY is set, run once more as
#                       NAME-GRANULARITY with --recompute-granularity GRANULARITY (out of memory is the usual failure)
#   finish TABLE [BASELINE]   the results table (summary.py) into OUT/results.md; one sentence naming the runs that
#                       failed; exit status 1 when no run left a summary (every run failed), else 0
harness=$1
out=$2
iters=${ITERS:-${4:-}}
script=$(basename "$0")
here=$(dirname "${BASH_SOURCE[0]}")
mkdir -p "$out"
log="$out/$3"
export NCCL_NVLS_ENABLE=${NCCL_NVLS_ENABLE:-0}
common=()
retry=
failed=()
succeeded=0
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv,noheader 2>/dev/null \
    || echo "nvidia-smi: not found, or it sees no GPU"
  python3 -c 'import torch; print("PyTorch", torch.__version__, "CUDA", torch.version.cuda)' 2>/dev/null \
    || echo "PyTorch: python3 cannot import torch (harness --libtorch DIR can name a libtorch instead)"
} | tee -a "$log"

run() { # NAME, then harness run flags added to "${common[@]}"
  local name=$1 status=0; shift
  echo "== $name: $*" | tee -a "$log"
  "$harness" run "${common[@]}" --out "$out/$name" "$@" 2>&1 | tee -a "$log" \
    | { grep -vE '^(\[rank [0-9]+\] )?iter +[0-9]+/' || true; } || status=${PIPESTATUS[0]}
  if [ -s "$out/$name/summary.json" ]; then
    succeeded=$((succeeded + 1))
    return
  fi
  failed+=("$name")
  echo "== $name failed (exit code $status): no summary.json" | tee -a "$log"
  if [ -n "$retry" ]; then
    local granularity=$retry
    retry= run "$name-$granularity" "$@" --recompute-granularity "$granularity"
  fi
}

finish() { # TABLE [BASELINE]
  python3 "$here/summary.py" "$out" "$@" | tee "$out/results.md"
  if [ "$succeeded" -eq 0 ]; then
    echo "$script: every run failed (${failed[*]:-none ran}); no summary.json under $out, their output is in $log." >&2
    exit 1
  fi
  if [ "${#failed[@]}" -gt 0 ]; then
    echo "$script: ${#failed[@]} run(s) left no summary.json (${failed[*]}); their output is in $log." >&2
  fi
}
