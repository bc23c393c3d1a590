#!/usr/bin/env bash
# Megatron-LM's two-GPU ablation with gpt2-large (s 1024, bf16, synthetic tokens), on a machine with 2 GPUs, from
# an unpacked bundle (scripts/gpu/bundle.sh): one GPU with micro-batch 32; DP2 with global batch 64, also with
# --overlap-grad-reduce (its CUDA-stream path runs here first); TP2, TP2+SP, CP2 and PP2 with micro-batch 64.
# Megatron-LM measured on two H200s: DP2's step equal to one GPU's, TP2 about 1.24x and PP2 about 1.87x the one-GPU
# step (for twice the work per replica); results.md gives our ratios. A run out of memory runs once more with
# selective recomputation. Exits 1 when every run failed.
# Usage: scripts/gpu/run-parallel-ablation.sh HARNESS_BINARY OUT_DIR   (results go under results/parallel/)
set -euo pipefail
source "$(dirname "$0")/preamble.sh" "$1" "$2" ablation.log 20
common=(--model gpt2-large --bf16 --mock-data --device cuda --train-iters "$iters" --log-interval 5)
retry=selective
run 1gpu    --micro-batch-size 32 --global-batch-size 32
run dp2     --nproc-per-node 2 --micro-batch-size 32 --global-batch-size 64
run dp2-overlap --nproc-per-node 2 --overlap-grad-reduce --micro-batch-size 32 --global-batch-size 64
run tp2     --nproc-per-node 2 --tensor-model-parallel-size 2 --micro-batch-size 64 --global-batch-size 64
run tp2-sp  --nproc-per-node 2 --tensor-model-parallel-size 2 --sequence-parallel --micro-batch-size 64 --global-batch-size 64
run cp2     --nproc-per-node 2 --context-parallel-size 2 --micro-batch-size 64 --global-batch-size 64
run pp2     --nproc-per-node 2 --pipeline-model-parallel-size 2 --micro-batch-size 64 --global-batch-size 64
finish parallel 1gpu
