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
# The lent GPU machines have no fonts, so plots made there had no text: the bundle carries DejaVu Sans (its license,
# which permits redistribution, beside it) from this machine's fonts-dejavu-core, and the harness draws with it (PlotFonts).
fonts=/usr/share/fonts/truetype/dejavu
if [ -f "$fonts/DejaVuSans.ttf" ]; then
  mkdir -p "$out/harness/fonts"
  cp "$fonts/DejaVuSans.ttf" "$fonts/DejaVuSans-Bold.ttf" "$out/harness/fonts/" 2>/dev/null || cp "$fonts/DejaVuSans.ttf" "$out/harness/fonts/"
  cp /usr/share/doc/fonts-dejavu-core/copyright "$out/harness/fonts/COPYRIGHT" 2>/dev/null || true
else
  echo "bundle.sh: no DejaVu Sans in $fonts (Debian's fonts-dejavu-core): plots made with this bundle on a machine without fonts have no text" >&2
fi
tar -C "$out" -cJf "$out/harness-linux-x64.tar.xz" harness
du -sh "$out/harness" "$out/harness-linux-x64.tar.xz"
