#!/usr/bin/env bash
# Builds a portable harness for GPU machines that have PyTorch but no .NET: a self-contained linux-x64 publish of
# the CLI WITHOUT the CPU libtorch of TorchSharp-cpu (HarnessGpuBundle=true); at run time the harness loads the
# libtorch of the machine's PyTorch (python3 -c 'import torch'), or the one --libtorch DIR names.
# Usage: scripts/gpu/bundle.sh [OUT_DIR]   -> OUT_DIR/harness-linux-x64.tar.xz (default OUT_DIR: artifacts/gpu)
# On the GPU machine: tar xJf harness-linux-x64.tar.xz && harness/harness run --device cuda --bf16 ...
set -euo pipefail
cd "$(dirname "$0")/../.."
out=$(realpath -m "${1:-artifacts/gpu}")
rm -rf "$out/harness" "$out/harness-linux-x64.tar.xz"
mkdir -p "$out"
# A separate artifacts path keeps this restore (another package graph) away from the normal build's obj/.
dotnet publish src/Cli -c Release -r linux-x64 --self-contained -p:HarnessGpuBundle=true \
  --artifacts-path "$out/build" -o "$out/harness" -nologo -v quiet
if ls "$out/harness" | grep -q '^libtorch_cpu'; then
  echo "bundle.sh: the CPU libtorch slipped into the bundle; it must come from the GPU machine's PyTorch" >&2
  exit 1
fi
tar -C "$out" -cJf "$out/harness-linux-x64.tar.xz" harness
du -sh "$out/harness" "$out/harness-linux-x64.tar.xz"
