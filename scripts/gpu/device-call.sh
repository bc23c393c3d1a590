#!/usr/bin/env bash
# One call on a lent GPU machine that has PyTorch but no .NET: unpacks the bundle (scripts/gpu/bundle.sh, carried to the
# machine as artifacts/gpu/harness-linux-x64.tar.xz with data/prepared), names the GPU's simulator preset from
# nvidia-smi (h200, else h100-sxm), and runs lease.sh's PHASES for SECONDS into $OUT (the folder whose files come back).
# Usage: scripts/gpu/device-call.sh PHASES SECONDS [LAYOUT_ITERS]
#   e.g. PHASES 12 (layouts and the CAAT-Net study), then 34 (vs-pytorch, the offload sweep and validate) in a second call.
set -uo pipefail
phases=$1 seconds=$2 iters=${3:-20}
out=${OUT:?set OUT to the folder the results go to}
mkdir -p /tmp/h && tar -xJf artifacts/gpu/harness-linux-x64.tar.xz -C /tmp/h
name=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
gpu=h100-sxm; [[ $name == *H200* ]] && gpu=h200
echo "$name -> $gpu" | tee "$out/gpu.txt"
PHASES=$phases LAYOUT_ITERS=$iters bash "$(dirname "$0")/lease.sh" /tmp/h/harness/harness "$out" data/prepared/pd_english_text_document "$gpu" "$seconds"
ls -la "$out"
