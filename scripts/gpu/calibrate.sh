#!/usr/bin/env bash
# The simulator's kernel constants measured on this machine's GPU (harness calibrate), from an unpacked bundle
# (scripts/gpu/bundle.sh): the reproduced models' layer GEMMs and attention by default, or one model's with
# --model X [--micro-batch-size B --seq-length S --tensor-model-parallel-size T], on a GPU held at load first.
# Writes OUT_DIR/cluster.json (the preset with the measured constants, for `simulate/search/validate --cluster`)
# and OUT_DIR/calibrate.log; exits with harness calibrate's code (its sentence last when it fails).
# Usage: scripts/gpu/calibrate.sh HARNESS_BINARY OUT_DIR [harness calibrate options...]
set -euo pipefail
source "$(dirname "$0")/preamble.sh" "$1" "$2" calibrate.log
shift 2
"$harness" calibrate --hold-seconds ${HOLD_SECONDS:-15} --out "$out/cluster.json" "$@" 2>&1 | tee -a "$log"
