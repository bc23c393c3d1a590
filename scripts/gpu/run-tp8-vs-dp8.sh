#!/usr/bin/env bash
# caat-1b (s 2048, bf16, synthetic tokens) on eight GPUs: tensor parallel 8 against data parallel 8 (with and
# without the distributed optimizer), tokens/s/GPU and MFU. Usage: scripts/gpu/run-tp8-vs-dp8.sh HARNESS_BINARY OUT_DIR
set -uo pipefail
harness=$1
out=$2
iters=${ITERS:-30}
mkdir -p "$out"
log="$out/tp8-dp8.log"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$log"
export NCCL_NVLS_ENABLE=${NCCL_NVLS_ENABLE:-0}
common=(--model caat-1b --bf16 --mock-data --device cuda --nproc-per-node 8 --train-iters "$iters" --log-interval 10)
run() {
  local name=$1; shift
  echo "== $name: $*" | tee -a "$log"
  "$harness" run "${common[@]}" --out "$out/$name" "$@" 2>&1 | tee -a "$log" | grep -vE '^(\[rank [0-9]+\] )?iter +[0-9]+/' || true
  if ! [ -s "$out/$name/summary.json" ] && [ -z "${RETRY:-}" ]; then # out of memory: once more with selective recompute
    RETRY=1 run "$name-selective" "$@" --recompute-granularity selective
  fi
}
run tp8          --tensor-model-parallel-size 8 --micro-batch-size 8 --global-batch-size 32
run tp8-sp       --tensor-model-parallel-size 8 --sequence-parallel --micro-batch-size 8 --global-batch-size 32
run dp8          --micro-batch-size 4 --global-batch-size 32
run dp8-distopt  --micro-batch-size 4 --global-batch-size 32 --use-distributed-optimizer
python3 "$(dirname "$0")/parallel-summary.py" "$out" | tee "$out/results.md"
