#!/usr/bin/env bash
# One GPU: caat-1b (micro-batch 8, one micro-batch per step, synthetic tokens) in bf16 and in fp16 with Megatron's dynamic
# loss scaling (--fp16 --accumulate-allreduce-grads-in-fp32: fp16 weights and activations, fp32 main gradients and master
# weights), bf16 under PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True (--expandable-segments), and gpt2-large (36 layers,
# h 1280, s 1024) in fp16 at micro-batch 8. Each run's metrics.csv and summary.json, then `harness validate` of all of
# them on the GPU preset (the simulator beside each measurement: step time and peak memory) into validate.csv, and a
# summary line per run (median step ms, tokens/s, MFU, peak allocated GiB, skipped iterations, final loss scale).
# Usage: scripts/gpu/precision-and-memory.sh HARNESS_BINARY OUT_DIR [GPU_PRESET]
set -uo pipefail
harness=$1
out=$2
gpu=${3:-h100-sxm}
iters=${ITERS:-40}
mkdir -p "$out"
log="$out/precision.log"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$log"
run() { # name, then harness run flags
  local name=$1; shift
  echo "== $name: $*" | tee -a "$log"
  "$harness" run --device cuda --gpu "$gpu" --mock-data --train-iters "$iters" --log-interval 10 --out "$out/$name" "$@" 2>&1 \
    | tee -a "$log" | grep -vE '^iter +[0-9]+/' || true
}
caat=(--model caat-1b --micro-batch-size 8 --global-batch-size 8)
run caat-1b-bf16 "${caat[@]}" --bf16
run caat-1b-fp16 "${caat[@]}" --fp16 --accumulate-allreduce-grads-in-fp32
run caat-1b-bf16-expandable "${caat[@]}" --bf16 --expandable-segments
run gpt2-large-fp16 --model gpt2-large --micro-batch-size 8 --global-batch-size 8 --fp16 --accumulate-allreduce-grads-in-fp32
"$harness" validate "$out" --csv "$out/validate.csv" 2>&1 | tee -a "$log"
python3 - "$out" <<'PY' | tee "$out/summary.txt"
import json, os, sys
out = sys.argv[1]
for name in sorted(os.listdir(out)):
    path = os.path.join(out, name, "summary.json")
    if not os.path.exists(path):
        continue
    s = json.load(open(path))
    print(f"{name}: median step {s.get('MedianStepMs', 0):.1f} ms, MFU {s.get('Mfu') or 0:.3f}, "
          f"peak {s.get('PeakMemoryBytes', 0) / 2**30:.2f} GiB, skipped {s.get('SkippedIterations', 0)}, "
          f"loss scale {s.get('FinalLossScale')}, final loss {s.get('FinalLoss')}")
PY
# Every run's record in one archive (plots left out), for transfers that keep only a few files.
tar -C "$out" -czf "$out/runs.tgz" --exclude='*.png' $(cd "$out" && ls -d */)
