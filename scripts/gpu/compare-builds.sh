#!/usr/bin/env bash
# Two builds of the harness side by side on one GPU (each an unpacked bundle from scripts/gpu/bundle.sh): the same
# single-device step, the builds alternating round by round so that clock drift and neighbours' load fall on both.
# Writes OUT_DIR/<build>-<round>/ (metrics.csv, summary.json, plots), OUT_DIR/compare.csv (build, round, median step ms,
# tokens/s per GPU, MFU) and prints the candidate's median step time over the baseline's; then `harness validate` of the
# candidate's runs (the simulator beside the measurement, read from the record the candidate wrote).
# Usage: scripts/gpu/compare-builds.sh BASELINE_HARNESS CANDIDATE_HARNESS OUT_DIR [GPU_PRESET] [ROUNDS]
# Exits 1 when any run left no summary.
set -euo pipefail
baseline=$1
candidate=$2
source "$(dirname "$0")/preamble.sh" "$baseline" "$3" compare.log 40
gpu=${4:-h100-sxm}
rounds=${5:-2}
# caat-1b (L22 h2048 ffn5632 a32, 8 KV groups, s 2048), bf16, one micro-batch of 8 per step, synthetic tokens.
common=(--device cuda --gpu "$gpu" --model caat-1b --bf16 --mock-data --micro-batch-size 8 --global-batch-size 8
        --train-iters "$iters" --log-interval 20)
for round in $(seq 1 "$rounds"); do
  harness=$baseline run "baseline-$round"
  harness=$candidate run "candidate-$round"
done
status=0
python3 - "$out" "$rounds" <<'PY' || status=$?
import json, os, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
rows, missing = [], []
for build in ("baseline", "candidate"):
    for r in range(1, rounds + 1):
        p = os.path.join(out, f"{build}-{r}", "summary.json")
        if not os.path.exists(p):
            missing.append(f"{build}-{r}"); continue
        s = json.load(open(p))
        rows.append((build, r, s["MedianStepMs"], s["TokensPerSecondPerGpu"], s["Mfu"]))
with open(os.path.join(out, "compare.csv"), "w") as f:
    f.write("build,round,median_step_ms,tokens_per_s_per_gpu,mfu\n")
    for b, r, ms, tok, mfu in rows:
        f.write(f"{b},{r},{ms:.3f},{tok:.1f},{'' if mfu is None else f'{mfu:.4f}'}\n")
        print(f"{b:9} round {r}: {ms:8.1f} ms  {tok:9.0f} tokens/s  MFU {'' if mfu is None else f'{100*mfu:.1f}%'}")
if missing:
    sys.exit(f"compare-builds.sh: {len(missing)} run(s) left no summary ({', '.join(missing)}), so the builds are not compared; their output is in {out}/compare.log.")
med = {b: statistics.median(ms for bb, _, ms, _, _ in rows if bb == b) for b in ("baseline", "candidate")}
print(f"candidate / baseline median step time: {med['candidate'] / med['baseline']:.3f}")
PY
"$candidate" validate "$out"/candidate-* --gpu "$gpu" --csv "$out/validate.csv" 2>&1 | tee -a "$log" || true
exit $status
