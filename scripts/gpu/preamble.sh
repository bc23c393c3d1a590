# Sourced by the multi-GPU run scripts: source "$(dirname "$0")/preamble.sh" HARNESS_BINARY OUT_DIR LOG_NAME DEFAULT_ITERS
# Sets harness, out, iters (ITERS overrides the default) and log, records the GPUs, and keeps NCCL's NVLink
# multicast (NVLS) off unless NCCL_NVLS_ENABLE is set; defines run() for scripts that set common=(...).
harness=$1
out=$2
iters=${ITERS:-$4}
mkdir -p "$out"
log="$out/$3"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$log"
export NCCL_NVLS_ENABLE=${NCCL_NVLS_ENABLE:-0}

run() { # name, then harness run flags added to "${common[@]}"
  local name=$1; shift
  echo "== $name: $*" | tee -a "$log"
  "$harness" run "${common[@]}" --out "$out/$name" "$@" 2>&1 | tee -a "$log" | grep -vE '^(\[rank [0-9]+\] )?iter +[0-9]+/' || true
  if ! [ -s "$out/$name/summary.json" ] && [ -z "${RETRY:-}" ]; then # out of memory: once more with selective recompute
    RETRY=1 run "$name-selective" "$@" --recompute-granularity selective
  fi
}
