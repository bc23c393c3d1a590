#!/usr/bin/env bash
# One GPU: caat-1b (micro-batch 8, one micro-batch per step, synthetic tokens) in bf16 and in fp16 with Megatron's dynamic
# loss scaling (--fp16 --accumulate-allreduce-grads-in-fp32: fp16 weights and activations, fp32 main gradients and master
# weights), bf16 under PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True (--expandable-segments), and gpt2-large (36 layers,
# h 1280, s 1024) in fp16 at micro-batch 8. Each run's metrics.csv and summary.json, then `harness validate` of all of
# them on the GPU preset (the simulator beside each measurement: step time and peak memory) into validate.csv, and a
# summary line per run in results.md (median step ms, MFU, peak allocated GiB, skipped iterations, final loss scale).
# Usage: scripts/gpu/precision-and-memory.sh HARNESS_BINARY OUT_DIR [GPU_PRESET]   Exits 1 when every run failed.
set -euo pipefail
source "$(dirname "$0")/preamble.sh" "$1" "$2" precision.log 40
gpu=${3:-h100-sxm}
common=(--device cuda --gpu "$gpu" --attention-backend auto --mock-data --train-iters "$iters" --log-interval 10)
caat=(--model caat-1b --micro-batch-size 8 --global-batch-size 8)
run caat-1b-bf16 "${caat[@]}" --bf16
run caat-1b-fp16 "${caat[@]}" --fp16 --accumulate-allreduce-grads-in-fp32
run caat-1b-bf16-expandable "${caat[@]}" --bf16 --expandable-segments
run gpt2-large-fp16 --model gpt2-large --micro-batch-size 8 --global-batch-size 8 --fp16 --accumulate-allreduce-grads-in-fp32
if [ "$succeeded" -gt 0 ]; then
  "$harness" validate "$out" --csv "$out/validate.csv" 2>&1 | tee -a "$log" || echo "== validate failed (exit code ${PIPESTATUS[0]})" | tee -a "$log"
  # Every run's record in one archive (plots left out), for transfers that keep only a few files.
  tar -C "$out" -czf "$out/runs.tgz" --exclude='*.png' $(cd "$out" && ls -d */)
fi
finish precision
