#!/usr/bin/env bash
# Megatron-Kwai's activation offload on CPU ranks (issue 13): interleaved 1F1B over 4 pipeline ranks, two one-layer model
# chunks each, on a Llama whose layer tensors are whole MiBs (s 512, micro-batch 2, h 256: s·b·h·4 B = 1 MiB; per layer
# 16 MiB of saved tensors of 1 MiB or more, the model of tests/Harness.Tests/Parallel/ActivationOffloadTests.cs), for
# alpha (--offload-ratio) 0, 0.25, 0.5, 0.75 and 1, two iterations each. Every run writes its offload bookkeeping of the
# last step (offload.csv, and summary.json's OffloadPerRank); `harness validate --offload` sets each rank's recorded,
# offloaded and resident saved bytes beside the simulator's count of the same description (validate.csv), and this
# script turns that into table.md. About a minute on 2 cores.
# Usage: scripts/cpu/kwai-offload-alpha.sh [OUT_DIR]   (default results/executor/cpu/kwai-offload-alpha; HARNESS: the
# harness command, default dotnet on the Release build)
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-$repo/results/executor/cpu/kwai-offload-alpha}
read -r -a harness <<<"${HARNESS:-dotnet $repo/src/Cli/bin/Release/net10.0/harness.dll}"
model=(--num-layers 8 --hidden-size 256 --num-attention-heads 4 --ffn-hidden-size 512 --seq-length 512 --vocab-size 64
  --swiglu --normalization RMSNorm --position-embedding-type rope --untie-embeddings-and-output-weights
  --hidden-dropout 0 --attention-dropout 0)
layout=(--nproc-per-node 4 --pipeline-model-parallel-size 4 --num-layers-per-virtual-pipeline-stage 1
  --micro-batch-size 2 --global-batch-size 8)
mkdir -p "$out/runs"
{
  echo "commit: $(git -C "$repo" rev-parse HEAD)$(git -C "$repo" status --porcelain -- src | grep -q . && echo ' (with uncommitted changes under src/)')"
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "machine: $(nproc) cores, $(uname -sm)"
  echo "runs: ${harness[*]//$repo\//} run ${model[*]} ${layout[*]} --device cpu --mock-data --train-iters 2 --offload-ratio ALPHA --out runs/alpha-ALPHA"
  echo "comparison: ${harness[*]//$repo\//} validate runs --offload --csv validate.csv"
} >"$out/provenance.txt"
for alpha in 0 0.25 0.5 0.75 1; do
  run="$out/runs/alpha-$alpha"
  "${harness[@]}" run "${model[@]}" "${layout[@]}" --device cpu --mock-data --train-iters 2 --log-interval 1 \
    --offload-ratio "$alpha" --overwrite --out "$run" >"$run.log" 2>&1 || { echo "alpha $alpha failed:"; tail -3 "$run.log"; exit 1; }
  rm -f "$run"/*.png   # two iterations' loss and throughput say nothing; the records are the CSVs and summary.json
done
"${harness[@]}" validate "$out/runs" --offload --csv "$out/validate.csv" | tee "$out/validate.txt"
# validate.csv as a markdown table: bytes whole, the saved bytes in MiB for reading.
awk -F, 'NR == 1 { print "| alpha | rank (pipeline stage) | chunk forwards run / sim | saved MiB run / sim | offloaded bytes run / sim | resident saved bytes run / sim | equal |"
                   print "|---:|---:|---:|---:|---:|---:|:---|"; next }
         { printf "| %s | %s (%s) | %s / %s | %.0f / %.0f | %s / %s | %s / %s | %s |\n", $3, $4, $5, $6, $7, $8 / 1048576, $9 / 1048576, $10, $11, $12, $13,
           $14 == "True" ? "to the byte" : "NO" }' "$out/validate.csv" >"$out/table.md"
cat "$out/table.md"
! grep -q ',False$' "$out/validate.csv"
