#!/usr/bin/env bash
# The simulator's kernel constants measured on this machine's GPU (harness calibrate), from an unpacked bundle
# (scripts/gpu/bundle.sh): the reproduced models' layer GEMMs and attention by default, or one model's with
# --model X [--micro-batch-size B --seq-length S --tensor-model-parallel-size T], on a GPU held at load first.
# Writes OUT_DIR/cluster.json (the preset with the measured constants, for `simulate/search/validate --cluster`)
# and OUT_DIR/calibrate.log.
# Usage: scripts/gpu/calibrate.sh HARNESS_BINARY OUT_DIR [harness calibrate options...]
set -uo pipefail
harness=$1
out=$2
shift 2
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv,noheader | tee "$out/calibrate.log"
python3 -c 'import torch; print("PyTorch", torch.__version__, "CUDA", torch.version.cuda)' | tee -a "$out/calibrate.log"
"$harness" calibrate --hold-seconds ${HOLD_SECONDS:-15} --out "$out/cluster.json" "$@" 2>&1 | tee -a "$out/calibrate.log"
