#!/usr/bin/env python3
"""Tabulates the summary.json of every run folder under OUT (harness run over several ranks) as markdown:
step time, its ratio to a baseline run, tokens/s/GPU, MFU, communication time and the maximum peak memory over
ranks, with the device named. Usage: parallel-summary.py OUT [BASELINE_RUN]"""
import json, os, sys

out = sys.argv[1]
baseline = sys.argv[2] if len(sys.argv) > 2 else None
rows = {}
for name in sorted(os.listdir(out)):
    path = os.path.join(out, name, "summary.json")
    if os.path.exists(path):
        rows[name] = json.load(open(path))
base = rows.get(baseline, {}).get("MedianStepMs") if baseline else None
print("| run | device | GPUs | layout | step ms (median) | vs baseline | tokens/s/GPU | MFU | comm ms (rank 0) | peak GiB (max over ranks) | final loss |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for name, s in rows.items():
    # The run description as run ("Description"; summaries written before it held the layout in "Parallel").
    p = s.get("Description") or s.get("Parallel") or {}
    gpus = p.get("DataParallel", 1) * p.get("TensorParallel", 1) * p.get("PipelineParallel", 1) * p.get("ContextParallel", 1)
    layout = (f'tp{p.get("TensorParallel", 1)} pp{p.get("PipelineParallel", 1)} dp{p.get("DataParallel", 1)} cp{p.get("ContextParallel", 1)}'
              + (" sp" if p.get("SequenceParallel") else "") + (" dist-opt" if p.get("ZeroStage", 0) >= 1 else "")
              + (f' p{p.get("SyncFactor")}' if p.get("SyncFactor", 1) < 1 else "")
              + (" overlap-grad-reduce" if (p.get("Overlap") or {}).get("GradientReduce") and p.get("DataParallel", 1) * p.get("ContextParallel", 1) > 1 else "")) if gpus > 1 else "single device"
    ratio = f'{s["MedianStepMs"] / base:.2f}x' if base else ""
    mfu = "" if s.get("Mfu") is None else f'{100 * s["Mfu"]:.1f}%'
    comm = "" if s.get("MedianCommunicationMs") is None else f'{s["MedianCommunicationMs"]:.1f}'
    print(f'| {name} | {s["Device"]} | {gpus} | {layout} | {s["MedianStepMs"]:.1f} | {ratio} | {s["TokensPerSecondPerGpu"]:.0f} | {mfu} | {comm} | '
          f'{s["PeakMemoryBytes"] / 2**30:.1f} | {s["FinalLoss"]:.3f} |')
