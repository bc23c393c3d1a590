#!/usr/bin/env bash
# The executor's single-GPU measurements (issue 3), run on the GPU machine from an unpacked bundle
# (scripts/gpu/bundle.sh): the fused kernels against libtorch (harness kernel-check), CUDA loading and a short
# real-data run, caat-1b bf16 MFU with the fused kernels and, side by side, with libtorch's operators only,
# gpt2-large s1024 micro-batch 32, and the C# loop's host overhead (a model too small to keep the GPU busy).
# Usage: scripts/gpu/run-executor-bench.sh HARNESS_BINARY OUT_DIR [GPU_PRESET]   (MFU against that preset's peak)
# Writes OUT_DIR/<run>/{metrics.csv,summary.json,loss.png,throughput.png}, OUT_DIR/bench.log, OUT_DIR/kernel-check.log
# and OUT_DIR/results.md.
set -uo pipefail
harness=$1
out=$2
gpu=${3:-h100-sxm}
mkdir -p "$out"
log="$out/bench.log"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$log"
python3 -c 'import torch; print("PyTorch", torch.__version__, "CUDA", torch.version.cuda)' | tee -a "$log"

run() { # name, then harness run flags
  local name=$1; shift
  echo "== $name: $*" | tee -a "$log"
  "$harness" run --device cuda --gpu "$gpu" --out "$out/$name" "$@" 2>&1 | tee -a "$log" | grep -vE '^iter +[0-9]+/' || true
  tail -n 3 "$log" | grep -E '^iter' || true
}

"$harness" kernel-check 2>&1 | tee "$out/kernel-check.log" | tee -a "$log"
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
# 3. gpt2-large, s 1024, micro-batch 32 (the seed ablation's one-GPU baseline).
run gpt2-large --model gpt2-large --bf16 --mock-data --micro-batch-size 32 --global-batch-size 32 --train-iters ${GPT2_ITERS:-15} --log-interval 5
if ! [ -s "$out/gpt2-large/summary.json" ]; then  # too big for the card without recomputation
  run gpt2-large-full-recompute --model gpt2-large --bf16 --mock-data --micro-batch-size 32 --global-batch-size 32 --train-iters ${GPT2_ITERS:-15} --log-interval 5 --recompute-granularity full
fi
# 4. Host overhead: a model so small the GPU finishes each kernel at once, so the step time is the host's.
run host-overhead --num-layers 2 --hidden-size 64 --num-attention-heads 4 --seq-length 64 --vocab-size 512 --mock-data --micro-batch-size 1 --train-iters 200 --log-interval 50 --bf16

python3 - "$out" <<'PY' | tee "$out/results.md"
import json, os, sys
out = sys.argv[1]
print("| run | device | step ms (median) | tokens/s/GPU | model TFLOP/s/GPU | MFU | memory peak GiB | host gap ms | enqueue ms | final loss |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for name in sorted(os.listdir(out)):
    p = os.path.join(out, name, "summary.json")
    if not os.path.exists(p): continue
    s = json.load(open(p))
    mfu = "" if s["Mfu"] is None else f'{100*s["Mfu"]:.1f}%'
    print(f'| {name} | {s["Device"]} | {s["MedianStepMs"]:.1f} | {s["TokensPerSecondPerGpu"]:.0f} | {s["ModelTflopsPerGpu"]:.1f} | {mfu} | '
          f'{s["PeakMemoryBytes"]/2**30:.1f} | {s["MedianHostGapMs"]:.2f} | {s["MedianEnqueueMs"]:.1f} | {s["FinalLoss"]:.3f} |')
PY
