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
# ITERS iterations (default 300), warmup WARMUP (default 30), micro-batch MBS (default 16; smaller on a GPU that holds fewer
# runs at once). JOBS runs at once (default 1; above 1 they share the GPU,
# so their step times say nothing, while their losses are unchanged). EXTRA: more harness run flags for every run (e.g.
# --exit-duration-in-mins 4, so a run that cannot finish in the time at hand stops with its records).
# RANKS= (empty) runs the TP 8 ranks on 8 GPUs with NCCL instead of as threads on one.
# Usage: scripts/gpu/caat-net-study.sh HARNESS_BINARY OUT_DIR DATA_PREFIX [GPU_PRESET]
set -uo pipefail
source "$(dirname "$0")/preamble.sh" "$1" "$2" study.log 300
data=$3
gpu=${4:-h100-sxm}
gbs=${GBS:-32}
warmup=${WARMUP:-30}
eval_interval=${EVAL_INTERVAL:-50}
common=(--device cuda --gpu "$gpu" --bf16 --model caat-130m --vocab-size 50257 --data-path "$data" --split 98,2,0
        --train-iters "$iters" --global-batch-size "$gbs" --micro-batch-size ${MBS:-16} --lr 6e-4 --min-lr 6e-5 --lr-decay-style cosine
        --lr-warmup-iters "$warmup" --adam-beta1 0.9 --adam-beta2 0.95 --weight-decay 0.1 --clip-grad 1.0
        --use-distributed-optimizer --eval-interval "$eval_interval" --eval-iters 4 --log-interval 25 ${EXTRA:-})
tp8=(--nproc-per-node 8 ${RANKS---ranks-on-one-device} --tensor-model-parallel-size 8 --make-vocab-size-divisible-by 128)
source "$(dirname "$0")/jobs.sh"
run() { # name, then harness run flags
  # ONLY (names separated by spaces) runs some of the study's runs (the rest of a study a lease cut short).
  if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $1 "* ]]; then return; fi
  local name=$1; shift
  echo "== $name: $*" | tee -a "$log"
  started+=("$name")
  throttle
  (start=$SECONDS
   "$harness" run "${common[@]}" --out "$out/$name" "$@" >"$out/$name.log" 2>&1 || echo "   $name FAILED: $(tail -2 "$out/$name.log")" | tee -a "$log"
   echo "   $name: $((SECONDS - start)) s" | tee -a "$log") &
}
run tp1-p1 --seed 1234 --make-vocab-size-divisible-by 1024
for p in 1 0.5 0.25 0; do
  run "tp8-p$p" --seed 1234 "${tp8[@]}" --sync-factor "$p"
done
run tp8-p1-seed2 --seed 4321 "${tp8[@]}" --sync-factor 1
wait
failures=$(unfinished "$out" "${started[@]}")
"$harness" compare "$out/tp8-p1" "$out/tp8-p0.5" "$out/tp8-p0.25" "$out/tp8-p0" "$out/tp8-p1-seed2" "$out/tp1-p1" \
  --plot "$out/losses.png" --csv "$out/compare.csv" --title "caat-130m, TP 8 on one GPU: CAAT-Net's p" 2>&1 | tee -a "$log"
tar -C "$out" -czf "$out/runs.tgz" --exclude='*.png' $(cd "$out" && ls -d */) 2>/dev/null
if [ "$failures" -gt 0 ]; then
  echo "caat-net-study.sh: $failures run(s) failed; see $log." >&2
  exit 1
fi
