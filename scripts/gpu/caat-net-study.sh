#!/usr/bin/env bash
# The CAAT-Net study on one GPU (arXiv 2506.19645: partial synchronization of the tensor-parallel activations, factor p):
# caat-130m as the CAAT-Net fork trains it (12 layers, h 768, ffn 2048, 16 heads, s 1024, RMSNorm, SwiGLU, rotary, untied
# embeddings, no dropout, Adam betas 0.9/0.95, weight decay 0.1, clip 1.0, cosine decay from 6e-4 to 6e-5, the distributed
# optimizer) at TP 8 with p in {1, 0.5, 0.25, 0}, a second seed at p = 1 (the run-to-run spread), and the TP 1 baseline,
# on a prepared corpus (scripts/data/prepare-corpus.sh; GPT-2 BPE, so the vocabulary is 50257 rather than the fork's
# SentencePiece 32000), 98/2 train/validation split, validation every EVAL_INTERVAL iterations.
# The 8 tensor-parallel ranks run as threads on the one GPU (--ranks-on-one-device): the arithmetic of TP 8 on one GPU's
# kernels, not a cluster's timing. The vocabulary is padded to 51200 in both (TP 8: 128 x 8; TP 1: 1024).
# Global batch GBS (default 32) x 1024 tokens per iteration (the fork's is 256: scaled to the GPU time at hand),
# ITERS iterations (default 300), warmup WARMUP (default 30).
# Usage: scripts/gpu/caat-net-study.sh HARNESS_BINARY OUT_DIR DATA_PREFIX [GPU_PRESET]
set -uo pipefail
harness=$1
out=$2
data=$3
gpu=${4:-h100-sxm}
iters=${ITERS:-300}
gbs=${GBS:-32}
warmup=${WARMUP:-30}
eval_interval=${EVAL_INTERVAL:-50}
mkdir -p "$out"
log="$out/study.log"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$log"
common=(--device cuda --gpu "$gpu" --bf16 --model caat-130m --vocab-size 50257 --data-path "$data" --split 98,2,0
        --train-iters "$iters" --global-batch-size "$gbs" --micro-batch-size 16 --lr 6e-4 --min-lr 6e-5 --lr-decay-style cosine
        --lr-warmup-iters "$warmup" --adam-beta1 0.9 --adam-beta2 0.95 --weight-decay 0.1 --clip-grad 1.0
        --use-distributed-optimizer --eval-interval "$eval_interval" --eval-iters 4 --log-interval 25)
tp8=(--nproc-per-node 8 --ranks-on-one-device --tensor-model-parallel-size 8 --make-vocab-size-divisible-by 128)
failed=0
run() { # name, then harness run flags
  local name=$1; shift
  echo "== $name: $*" | tee -a "$log"
  local start=$SECONDS
  if ! "$harness" run "${common[@]}" --out "$out/$name" "$@" >"$out/$name.log" 2>&1; then
    failed=$((failed + 1))
    echo "   FAILED: $(tail -2 "$out/$name.log")" | tee -a "$log"
  fi
  echo "   $((SECONDS - start)) s" | tee -a "$log"
}
run tp1-p1 --seed 1234 --make-vocab-size-divisible-by 1024
for p in 1 0.5 0.25 0; do
  run "tp8-p$p" --seed 1234 "${tp8[@]}" --sync-factor "$p"
done
run tp8-p1-seed2 --seed 4321 "${tp8[@]}" --sync-factor 1
python3 - "$out" <<'PY' | tee "$out/study.md"
import json, os, sys
out = sys.argv[1]
runs = {n: json.load(open(os.path.join(out, n, "summary.json"))) for n in sorted(os.listdir(out)) if os.path.exists(os.path.join(out, n, "summary.json"))}
ref = runs.get("tp8-p1", {}).get("FinalValidationLoss")
seed2 = runs.get("tp8-p1-seed2", {}).get("FinalValidationLoss")
print("| run | p | final validation loss | vs TP 8, p = 1 | final train loss | iterations | tokens | median step ms |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for n, s in runs.items():
    d = s["Description"]; v = s.get("FinalValidationLoss")
    tokens = s["Iterations"] * d["GlobalBatch"] * s["Model"]["SeqLength"]
    diff = f"{v - ref:+.4f}" if v is not None and ref is not None else ""
    print(f'| {n} | {d.get("SyncFactor", 1)} | {v if v is None else f"{v:.4f}"} | {diff} | {s["FinalLoss"]:.4f} | {s["Iterations"]} | {tokens:,} | {s["MedianStepMs"]:.0f} |')
if ref is not None and seed2 is not None:
    print(f"\nrun-to-run spread at p = 1 (two seeds): {abs(ref - seed2):.4f}")
PY
tar -C "$out" -czf "$out/runs.tgz" --exclude='*.png' $(cd "$out" && ls -d */) 2>/dev/null
if [ "$failed" -gt 0 ]; then
  echo "caat-net-study.sh: $failed run(s) failed; see $log." >&2
  exit 1
fi
