#!/usr/bin/env bash
# caat-1b (s 2048, bf16, synthetic tokens) on eight GPUs: tensor parallel 8 against data parallel 8 (with and
# without the distributed optimizer), tokens/s/GPU and MFU. A run out of memory runs once more with selective
# recomputation. Exits 1 when every run failed. Usage: scripts/gpu/run-tp8-vs-dp8.sh HARNESS_BINARY OUT_DIR
set -euo pipefail
source "$(dirname "$0")/preamble.sh" "$1" "$2" tp8-dp8.log 30
common=(--model caat-1b --bf16 --mock-data --device cuda --nproc-per-node 8 --train-iters "$iters" --log-interval 10)
retry=selective
run tp8          --tensor-model-parallel-size 8 --micro-batch-size 8 --global-batch-size 32
run tp8-sp       --tensor-model-parallel-size 8 --sequence-parallel --micro-batch-size 8 --global-batch-size 32
run dp8          --micro-batch-size 4 --global-batch-size 32
run dp8-distopt  --micro-batch-size 4 --global-batch-size 32 --use-distributed-optimizer
finish parallel
