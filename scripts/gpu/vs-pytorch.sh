#!/usr/bin/env bash
# The executor beside plain PyTorch on one GPU (issue "executor speed"): for caat-1b (micro-batch 8, s 2048), gpt2-large
# (micro-batch 16, s 1024) and a Llama-7B-shaped model cut to 4 layers (micro-batch 2, s 4096), one micro-batch per
# optimizer step, bf16 compute with fp32 master weights, no dropout, synthetic tokens (and gpt2-large-dropout: gpt2-large
# with hidden dropout 0.1, which times the fused bias-dropout-add against the unfused path and torch.compile's): `harness run`, then
# pytorch-reference.py (the same shape in plain PyTorch, fused AdamW) eager and under torch.compile, one after the other
# in one lease. Writes OUT_DIR/vs-pytorch.csv (model, system, step ms, tokens/s, peak allocated GiB, device, versions,
# and tokens/s over torch.compile's), OUT_DIR/vs-pytorch.md, and each harness run's records under OUT_DIR/<model>/.
# Usage: scripts/gpu/vs-pytorch.sh HARNESS_BINARY OUT_DIR [GPU_PRESET]   (ITERS: timed steps per system, default 20;
#        MODELS: a subset, e.g. "caat-1b gpt2-large"; PYTORCH_MODES: "compile" alone when the lease is short)
set -uo pipefail
source "$(dirname "$0")/preamble.sh" "$1" "$2" vs-pytorch.log 20
gpu=${3:-h100-sxm}
here=$(dirname "$0")
common=(--device cuda --gpu "$gpu" --bf16 --mock-data --attention-dropout 0 --attention-backend auto
        --train-iters $((iters + 5)) --log-interval 5)
# Each model's shape, and its micro-batch (one per optimizer step), which both systems take.
declare -A shape=([caat-1b]="--model caat-1b" [gpt2-large]="--model gpt2-large" [gpt2-large-dropout]="--model gpt2-large"
                  [llama-7b-4l]="--model llama-7b --num-layers 4 --seq-length 4096")
declare -A dropout=([gpt2-large-dropout]=0.1)
# gpt2-large at micro-batch 16: at 32 the PyTorch reference's float32 logits (6.1 GiB a copy) ran out of an H100's 80 GB.
declare -A micro=([caat-1b]=8 [gpt2-large]=16 [gpt2-large-dropout]=16 [llama-7b-4l]=2)
rows="$out/rows.csv"
: >"$rows"
device=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr ',' ' ')
# One CSV row of a harness run's summary: harness_row RUN SYSTEM (the model is RUN without a -suffix).
harness_row() {
  local run=$1 system=$2 model=${1%-unfused}
  [ -s "$out/$run/summary.json" ] || return
  python3 - "$out/$run/summary.json" "$model" "${micro[$model]}" "$device" "$system" >>"$rows" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
seq = s["Model"]["SeqLength"]
print(f'{sys.argv[5]},{sys.argv[2]},{sys.argv[3]},{seq},{s["MedianStepMs"]:.2f},{s["TokensPerSecondPerGpu"]:.0f},'
      f'{(s.get("PeakAllocatedBytes") or 0) / 2**30:.2f},{sys.argv[4]},harness')
PY
}
# The largest relative difference between two runs' losses, iteration by iteration (bf16: about 1e-2 is noise; with dropout
# the fused and unfused runs draw different masks, so they agree in distribution only).
same_losses() {
  [ -s "$out/$1/metrics.csv" ] && [ -s "$out/$2/metrics.csv" ] || return
  python3 - "$out/$1/metrics.csv" "$out/$2/metrics.csv" <<'PY' | tee -a "$log"
import csv, sys
a, b = ({int(r["iteration"]): float(r["loss"]) for r in csv.DictReader(open(p)) if r.get("loss")} for p in sys.argv[1:3])
common = sorted(set(a) & set(b))
worst = max((abs(a[i] - b[i]) / abs(b[i]), i) for i in common)
print(f"losses of {sys.argv[1]} vs {sys.argv[2]}: {len(common)} iterations, max relative difference {worst[0]:.2e} at iteration {worst[1]}")
PY
}
for model in ${MODELS:-caat-1b gpt2-large llama-7b-4l}; do
  # shellcheck disable=SC2086 # the flags are words
  run "$model" ${shape[$model]} --micro-batch-size "${micro[$model]}" --global-batch-size "${micro[$model]}" \
    --hidden-dropout "${dropout[$model]:-0}"
  harness_row "$model" harness
  if [[ $model == gpt2-large* ]]; then
    # What the GPT path's fused kernels buy, and their numerics: the same run on libtorch's operators.
    run "$model-unfused" ${shape[$model]} --micro-batch-size "${micro[$model]}" --global-batch-size "${micro[$model]}" \
      --hidden-dropout "${dropout[$model]:-0}" --no-fused-gpt-kernels
    harness_row "$model-unfused" harness-unfused-gpt
    same_losses "$model" "$model-unfused"
  fi
  for mode in ${PYTORCH_MODES:-eager compile}; do
    echo "== pytorch $mode $model" | tee -a "$log"
    python3 "$here/pytorch-reference.py" "$model" "${micro[$model]}" "$mode" "$iters" 5 2>>"$log" | tee -a "$log" >>"$rows" \
      || echo "== pytorch $mode $model failed; its output is in $log" | tee -a "$log"
  done
done
python3 "$here/vs-pytorch-table.py" "$rows" "$out/vs-pytorch.csv" | tee "$out/vs-pytorch.md"
finish executor
