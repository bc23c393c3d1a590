#!/usr/bin/env python3
"""The offload sweep's table (issue "offload, Kwai recomputation, fp16"): for each run of `harness validate --csv` on the
calibrated constants, the measured and simulated step and allocated peak and their errors against the issue's targets (5%
step, 3% memory), with the preset's step error beside where its CSV is given. Rows in the sweep's order: no recomputation,
Megatron-Kwai's, full; N rising.
Usage: offload-table.py VALIDATE_CALIBRATED_CSV [VALIDATE_PRESET_CSV] > table.md"""
import csv
import os
import re
import sys

MODES = {"none": "none", "kwai": "kwai", "full": "full recomputation"}


def rows(path):
    return {r["run"]: r for r in csv.DictReader(open(path, newline=""))}


def order(run):
    m = re.fullmatch(r"(none|kwai|full)-n(\d+)", run)
    return (list(MODES).index(m.group(1)), int(m.group(2))) if m else (len(MODES), 0)


def label(run):
    m = re.fullmatch(r"(none|kwai|full)-n(\d+)", run)
    return f"{MODES[m.group(1)]}, N {m.group(2)}" if m else run


def main():
    calibrated = rows(sys.argv[1])
    preset = rows(sys.argv[2]) if len(sys.argv) > 2 and os.path.exists(sys.argv[2]) else {}
    gib = 2 ** 30
    print("| run | step ms | simulated, calibrated | error | on the preset | allocated peak GiB | simulated | error |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    misses = []
    for run in sorted(calibrated, key=order):
        r = calibrated[run]
        measured, simulated = float(r["measured_step_s"]), float(r["simulated_step_s"])
        step = measured / simulated - 1   # positive: the run was slower than the simulator expected
        on_preset = f"{float(preset[run]['measured_step_s']) / float(preset[run]['simulated_step_s']) - 1:+.1%}" if run in preset else "-"
        peak = float(r["measured_allocated_peak_bytes"] or 0)
        if peak > 0:
            memory = float(r["simulated_peak_bytes"]) / peak - 1
            peak_text, memory_text = f"{peak / gib:.2f}", f"{memory:+.1%}"
            if abs(memory) > 0.03: misses.append(f"{label(run)} memory {memory:+.1%}")
        else:
            peak_text, memory_text = "-", "-"
        if abs(step) > 0.05: misses.append(f"{label(run)} step {step:+.1%}")
        print(f"| {label(run)} | {measured * 1e3:.0f} | {simulated * 1e3:.0f} | {step:+.1%} | {on_preset} | {peak_text} | "
              f"{float(r['simulated_peak_bytes']) / gib:.2f} | {memory_text} |")
    print()
    print("Step error: measured over simulated, minus one (positive: slower than simulated); memory error: simulated over the "
          "allocator's peak, minus one.")
    print("Outside the targets (5% step on calibrated constants, 3% memory): " + ("; ".join(misses) if misses else "none") + ".")


if __name__ == "__main__":
    main()
