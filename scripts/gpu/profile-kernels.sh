#!/usr/bin/env bash
# Where a harness run's GPU time goes, kernel by kernel: Nsight Compute times every kernel of the --profile range
# (cudaProfilerStart/Stop around steady-state iterations), and `harness validate --kernels` sets the GEMMs, attention,
# memory-bound kernels and optimizer beside the simulator's time for each, with the kernels that take the most.
# Usage: scripts/gpu/profile-kernels.sh HARNESS_BINARY OUT_DIR [harness run flags...]
#   e.g. ... harness/harness out --model caat-1b --bf16 --mock-data --micro-batch-size 8 --global-batch-size 8
# Profiles iterations 3 and 4 (after TorchScript's profiling runs and the allocator's growth); writes
# OUT_DIR/kernels.csv.gz (one row per kernel launch), OUT_DIR/kernels.md (the comparison) and OUT_DIR/kernels-validate.csv.
# Kernels run one at a time under ncu, so the sum is GPU busy time without overlap or launch gaps.
set -euo pipefail
harness=$1 out=$2
shift 2
mkdir -p "$out"
ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -n 1)
[ -n "$ncu" ] || { echo "profile-kernels.sh: Nsight Compute (ncu) not found" >&2; exit 1; }
"$ncu" --profile-from-start off --clock-control none --cache-control none --metrics gpu__time_duration.sum \
  --csv --page raw --print-units base --log-file "$out/kernels.csv" \
  "$harness" run --device cuda --train-iters 4 --profile --profile-step-start 2 --profile-step-end 4 --out "$out/run" "$@"
gzip -9f "$out/kernels.csv"
"$harness" validate "$out/run" --kernels "$out/kernels.csv.gz" --csv "$out/kernels-validate.csv" | tee "$out/kernels.md"
