#!/usr/bin/env python3
"""Tabulates the summary.json of every run folder under OUT (harness run --out) as markdown, one row per run with the
device named. TABLE is what the calling script measures:
  executor   one device: step time, tokens/s/GPU, model TFLOP/s, MFU, peak memory, the host's gap and enqueue time
  parallel   several ranks: GPUs and layout, step time and its ratio to BASELINE's, communication time, peak over ranks
  precision  one line per run: step time, MFU, peak memory, skipped iterations, final loss scale and loss
Runs that left no summary.json are not rows: the calling script names them (scripts/gpu/preamble.sh).
Usage: summary.py OUT TABLE [BASELINE_RUN]"""
import json, os, sys


def runs(out):
    """(name, summary) of every run folder under out that holds a summary.json, by name."""
    for name in sorted(os.listdir(out)):
        path = os.path.join(out, name, "summary.json")
        if os.path.exists(path):
            with open(path) as f:
                yield name, json.load(f)


def mfu(s):
    return "" if s.get("Mfu") is None else f'{100 * s["Mfu"]:.1f}%'


def executor(rows, _):
    print("| run | device | step ms (median) | tokens/s/GPU | model TFLOP/s/GPU | MFU | memory peak GiB | host gap ms | enqueue ms | final loss |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, s in rows:
        print(f'| {name} | {s["Device"]} | {s["MedianStepMs"]:.1f} | {s["TokensPerSecondPerGpu"]:.0f} | {s["ModelTflopsPerGpu"]:.1f} | {mfu(s)} | '
              f'{s["PeakMemoryBytes"] / 2**30:.1f} | {s["MedianHostGapMs"]:.2f} | {s["MedianEnqueueMs"]:.1f} | {s["FinalLoss"]:.3f} |')


def parallel(rows, baseline):
    base = dict(rows).get(baseline, {}).get("MedianStepMs") if baseline else None
    print("| run | device | GPUs | layout | step ms (median) | vs baseline | tokens/s/GPU | MFU | comm ms (rank 0) | peak GiB (max over ranks) | final loss |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, s in rows:
        # The run description as run ("Description"; summaries written before it held the layout in "Parallel").
        p = s.get("Description") or s.get("Parallel") or {}
        gpus = p.get("DataParallel", 1) * p.get("TensorParallel", 1) * p.get("PipelineParallel", 1) * p.get("ContextParallel", 1)
        layout = (f'tp{p.get("TensorParallel", 1)} pp{p.get("PipelineParallel", 1)} dp{p.get("DataParallel", 1)} cp{p.get("ContextParallel", 1)}'
                  + (" sp" if p.get("SequenceParallel") else "") + (" dist-opt" if p.get("ZeroStage", 0) >= 1 else "")
                  + (f' p{p.get("SyncFactor")}' if p.get("SyncFactor", 1) < 1 else "")
                  + (" overlap-grad-reduce" if (p.get("Overlap") or {}).get("GradientReduce") and p.get("DataParallel", 1) * p.get("ContextParallel", 1) > 1 else "")) if gpus > 1 else "single device"
        ratio = f'{s["MedianStepMs"] / base:.2f}x' if base else ""
        comm = "" if s.get("MedianCommunicationMs") is None else f'{s["MedianCommunicationMs"]:.1f}'
        print(f'| {name} | {s["Device"]} | {gpus} | {layout} | {s["MedianStepMs"]:.1f} | {ratio} | {s["TokensPerSecondPerGpu"]:.0f} | {mfu(s)} | {comm} | '
              f'{s["PeakMemoryBytes"] / 2**30:.1f} | {s["FinalLoss"]:.3f} |')


def precision(rows, _):
    for name, s in rows:
        print(f"{name}: median step {s.get('MedianStepMs', 0):.1f} ms, MFU {s.get('Mfu') or 0:.3f}, "
              f"peak {s.get('PeakMemoryBytes', 0) / 2**30:.2f} GiB, skipped {s.get('SkippedIterations', 0)}, "
              f"loss scale {s.get('FinalLossScale')}, final loss {s.get('FinalLoss')}")


TABLES = {"executor": executor, "parallel": parallel, "precision": precision}

if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[2] not in TABLES:
        sys.exit(f"usage: summary.py OUT {{{','.join(TABLES)}}} [BASELINE_RUN]")
    TABLES[sys.argv[2]](list(runs(sys.argv[1])), sys.argv[3] if len(sys.argv) > 3 else None)
