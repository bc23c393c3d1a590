#!/usr/bin/env bash
# Which part of the GPU path breaks activation offload (H100, 2026-12-07: every --cpu-offloading run of llama-7b, 8 layers,
# stopped on an Inf gradient norm within 5 iterations; Kwai's offload under pp 4 interleaved on one GPU on a NaN at the first).
# Runs a 4-layer llama-7b a few steps without offload, with --cpu-offloading-num-layers 2, and with it and each GPU-only
# piece turned off in turn (the executor's fused kernels; cuDNN/flash attention), printing each run's losses and gradient
# norms; then the layouts that ran out of memory beside others, alone, with their peak memory.
# Usage: scripts/gpu/offload-diagnosis.sh HARNESS_BINARY OUT_DIR [GPU_PRESET]
set -uo pipefail
harness=$1 out=$2 gpu=${3:-h100-sxm}
mkdir -p "$out"
common=(--device cuda --gpu "$gpu" --bf16 --model llama-7b --num-layers 4 --seq-length 2048 --micro-batch-size 2 --global-batch-size 2
        --mock-data --seed 1234 --train-iters 6 --log-interval 1 --no-check-for-nan-in-loss-and-grad)
one() { # name, flags
  local name=$1; shift
  timeout --signal=INT 120 "$harness" run "${common[@]}" --out "$out/$name" "$@" >"$out/$name.log" 2>&1
  echo "== $name (exit $?): $*"
  [ -f "$out/$name/metrics.csv" ] && cut -d, -f1,6,7,17 "$out/$name/metrics.csv" | head -8
}
one none
one cpu2 --cpu-offloading --cpu-offloading-num-layers 2
one cpu2-unfused --cpu-offloading --cpu-offloading-num-layers 2 --no-fused-kernels
one cpu2-math --cpu-offloading --cpu-offloading-num-layers 2 --attention-backend unfused
one cpu2-unfused-math --cpu-offloading --cpu-offloading-num-layers 2 --no-fused-kernels --attention-backend unfused
small=(--device cuda --gpu "$gpu" --bf16 --model caat-130m --mock-data --seed 1234 --train-iters 6 --log-interval 1
       --global-batch-size 16 --micro-batch-size 2 --make-vocab-size-divisible-by 1024)
alone() { # name, then flags
  local name=$1; shift
  timeout --signal=INT 150 "$harness" run "${small[@]}" --out "$out/$name" "$@" >"$out/$name.log" 2>&1
  echo "== $name alone (exit $?): $*"; grep -v "^iter" "$out/$name.log" | tail -2 | cut -c1-300
  [ -f "$out/$name/metrics.csv" ] && cut -d, -f1,6,7,17 "$out/$name/metrics.csv" | tail -2
}
alone dp2-zero2 --nproc-per-node 2 --ranks-on-one-device --zero-stage 2
alone pp4-interleaved --nproc-per-node 4 --ranks-on-one-device --pipeline-model-parallel-size 4 --num-layers-per-virtual-pipeline-stage 1
alone tp2-pp2-dp2 --nproc-per-node 8 --ranks-on-one-device --tensor-model-parallel-size 2 --pipeline-model-parallel-size 2 --sequence-parallel --use-distributed-optimizer
