#!/usr/bin/env bash
# The executor's single-GPU measurements (issue 3), run on the GPU machine from an unpacked bundle
# (scripts/gpu/bundle.sh): the fused kernels against libtorch (harness kernel-check), CUDA loading and a short
# real-data run, caat-1b bf16 MFU with the fused kernels and, side by side, with libtorch's operators only,
# gpt2-large s1024 micro-batch 32, and the C# loop's host overhead (a model too small to keep the GPU busy).
# Usage: scripts/gpu/run-executor-bench.sh HARNESS_BINARY OUT_DIR [GPU_PRESET]   (MFU against that preset's peak)
# Writes OUT_DIR/<run>/{metrics.csv,summary.json,loss.png,throughput.png}, OUT_DIR/bench.log, OUT_DIR/kernel-check.log
# and OUT_DIR/results.md. Exits 1, with one sentence, when every run failed.
set -euo pipefail
source "$(dirname "$0")/preamble.sh" "$1" "$2" bench.log
# Megatron-core's --attention-backend auto: Transformer Engine's choice (cuDNN's fused attention on Hopper), as its
# recipes run; the record says which kernel ran.
common=(--device cuda --gpu "${3:-h100-sxm}" --attention-backend auto)

"$harness" kernel-check 2>&1 | tee "$out/kernel-check.log" | tee -a "$log" || echo "== kernel-check failed (exit code ${PIPESTATUS[0]})" | tee -a "$log"
# 1. Loading and correctness on the GPU: the tiny model on the shipped corpus, fp32 then bf16.
run smoke-fp32 --train-iters 30 --log-interval 10
run smoke-bf16 --train-iters 30 --log-interval 10 --bf16
# 2. caat-1b (L22 h2048 ffn5632 a32, 8 KV groups, s 2048), bf16, synthetic tokens; the last run is the same step on
#    libtorch's operators alone (no fused kernels, no gradient-accumulation fusion), for the side-by-side ratio.
caat=(--model caat-1b --bf16 --mock-data --global-batch-size ${CAAT_GBS:-64} --train-iters ${CAAT_ITERS:-15} --log-interval 5)
for mbs in ${CAAT_MBS:-8 16}; do
  run caat-1b-mbs$mbs "${caat[@]}" --micro-batch-size $mbs
done
last=${CAAT_MBS:-8 16}
last=${last##* }
run caat-1b-mbs$last-libtorch-only "${caat[@]}" --micro-batch-size $last --no-fused-kernels --no-gradient-accumulation-fusion
# 3. gpt2-large, s 1024, micro-batch 32 (the seed ablation's one-GPU baseline); too big for some cards without
#    recomputation, so then once more with full recomputation.
retry=full run gpt2-large --model gpt2-large --bf16 --mock-data --micro-batch-size 32 --global-batch-size 32 --train-iters ${GPT2_ITERS:-15} --log-interval 5
# 4. Host overhead: a model so small the GPU finishes each kernel at once, so the step time is the host's.
run host-overhead --num-layers 2 --hidden-size 64 --num-attention-heads 4 --seq-length 64 --vocab-size 512 --mock-data --micro-batch-size 1 --train-iters 200 --log-interval 50 --bf16
finish executor
