#!/usr/bin/env python3
"""Summarizes an Nsight Compute CSV (ncu --csv --page raw --metrics gpu__time_duration.sum) of harness run's
--profile range: GPU time per kernel class and the kernels that take the most, so a step's time can be set
against the simulator's breakdown (GEMMs, attention, element-wise, optimizer).
Usage: kernel-summary.py NCU_CSV [ITERATIONS]"""
import csv, gzip, re, sys
from collections import defaultdict

CLASSES = [  # first match wins; kernel names of the harness, cuDNN/flash attention, cuBLAS, ATen and NNC on Hopper
    ("harness fused", r"^(swiglu_|cross_entropy_|adamw_step|qkv_rotary_)"),
    ("attention", r"flash|fmha|attention|sdpa|compute_dot_do_o|convert_dq"),
    ("gemm", r"gemm|nvjet|cutlass|xmma|sm90_|sm80_|ampere_|cublas"),
    ("cross-entropy", r"softmax|nll_loss|cross_entropy"),
    ("norm", r"rms_norm|layer_norm|RowwiseMoments|LayerNorm|RmsNorm"),
    ("fused (NNC)", r"^fused_|tensorexpr|nvfuser"),
    ("reduction", r"reduce_kernel|norm_kernel"),
    ("copy/cat", r"copy|cat_|CatArray"),
    ("index/embedding", r"index|embedding|scatter|gather"),
    ("element-wise", r"elementwise|foreach|unrolled"),
]

def classify(name):
    for label, pattern in CLASSES:
        if re.search(pattern, name, re.IGNORECASE):
            return label
    return "other"

def main():
    path = sys.argv[1]
    iterations = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    rows = []
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", newline="") as f:
        lines = [l for l in f if l.startswith('"')]  # ncu prefixes the CSV with its own log lines
    reader = csv.DictReader(lines)
    for r in reader:
        value = r.get("gpu__time_duration.sum", "")
        try:
            ns = float(value.replace(",", ""))
        except ValueError:
            continue  # the units row
        rows.append((r["Kernel Name"], ns))
    if not rows:
        sys.exit(f"kernel-summary.py: {path} holds no kernel times; did the --profile range run?")
    total = sum(ns for _, ns in rows)
    by_class, by_kernel = defaultdict(float), defaultdict(lambda: [0, 0.0])
    for name, ns in rows:
        by_class[classify(name)] += ns
        k = by_kernel[name[:110]]
        k[0] += 1
        k[1] += ns
    print(f"{len(rows)} kernels, {total / 1e6 / iterations:.1f} ms of kernel time per iteration ({iterations} profiled)")
    print("| class | ms per iteration | share |")
    print("| --- | --- | --- |")
    for label, ns in sorted(by_class.items(), key=lambda kv: -kv[1]):
        print(f"| {label} | {ns / 1e6 / iterations:.2f} | {100 * ns / total:.1f}% |")
    print()
    print("| kernel | class | calls per iteration | ms per iteration | mean us |")
    print("| --- | --- | --- | --- | --- |")
    for name, (n, ns) in sorted(by_kernel.items(), key=lambda kv: -kv[1][1])[:40]:
        print(f"| {name} | {classify(name)} | {n / iterations:.0f} | {ns / 1e6 / iterations:.2f} | {ns / n / 1e3:.1f} |")

if __name__ == "__main__":
    main()
