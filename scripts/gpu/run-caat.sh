#!/usr/bin/env bash
# CAAT-Net partial synchronization on real GPUs: caat-130m and caat-1b at TP 2, 4 and 8 with sync factor
# p in {1, 0.5, 0.25, 0}, a few hundred steps each on the shipped corpus (GPT-2 BPE: --vocab-size 50257, padded
# to a multiple of 128·t), bf16. Per run: metrics.csv (loss curve, tokens/s/GPU, MFU, communication time, peak
# memory over ranks) and summary.json; results.md tabulates them. Needs a machine with 8 GPUs (TP 8), or set TPS.
# Usage: scripts/gpu/run-caat.sh HARNESS_BINARY OUT_DIR   Exits 1 when every run failed.
set -euo pipefail
source "$(dirname "$0")/preamble.sh" "$1" "$2" caat.log 300
for model in caat-130m caat-1b; do
  if [ "$model" = caat-130m ]; then batch=(--micro-batch-size 16 --global-batch-size 64); else batch=(--micro-batch-size 4 --global-batch-size 32); fi
  for tp in ${TPS:-2 4 8}; do
    common=(--model "$model" --vocab-size 50257 --bf16 --device cuda --nproc-per-node "$tp" --tensor-model-parallel-size "$tp"
            "${batch[@]}" --train-iters "$iters" --lr 3e-4 --min-lr 3e-5 --lr-warmup-iters 30 --log-interval 50)
    for p in 1 0.5 0.25 0; do
      run "$model-tp$tp-p$p" --sync-factor "$p"
    done
  done
done
finish parallel
