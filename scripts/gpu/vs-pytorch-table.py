#!/usr/bin/env python3
# The vs-pytorch table from rows.csv (one row per system and model, as vs-pytorch.sh appends them): the CSV with each row's
# tokens/s over torch.compile's for the same model, and a Markdown table on stdout. Runs on partial rows too (a lease that
# ended mid-phase).
# Usage: vs-pytorch-table.py ROWS_CSV OUT_CSV > table.md
import csv, sys
header = ["system", "model", "micro_batch", "seq", "step_ms", "tokens_per_s", "peak_allocated_gib", "device", "version"]
rows = [dict(zip(header, r)) for r in csv.reader(open(sys.argv[1])) if len(r) == len(header)]
compiled = {r["model"]: float(r["tokens_per_s"]) for r in rows if r["system"] == "pytorch-compile"}
with open(sys.argv[2], "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(header + ["vs_torch_compile"])
    for r in rows:
        ratio = float(r["tokens_per_s"]) / compiled[r["model"]] if r["model"] in compiled else float("nan")
        w.writerow([r[k] for k in header] + [f"{ratio:.3f}"])
print("| model | system | step ms | tokens/s | peak allocated GiB | vs torch.compile | device |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for r in rows:
    ratio = float(r["tokens_per_s"]) / compiled[r["model"]] if r["model"] in compiled else float("nan")
    print(f'| {r["model"]} (mbs {r["micro_batch"]}, s {r["seq"]}) | {r["system"]} | {r["step_ms"]} | {r["tokens_per_s"]} | '
          f'{r["peak_allocated_gib"]} | {ratio:.2f}x | {r["device"]} |')
