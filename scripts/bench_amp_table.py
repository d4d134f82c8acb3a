#!/usr/bin/env python3
"""The bf16 table: `examples/bench` runs (Rust, fp32 and --amp) and `scripts/bench_reference.py`
runs (PyTorch, fp32 and torch.autocast("cpu", torch.bfloat16), plain and channels_last),
interleaved over rounds by `scripts/bench --amp`. The timed repetitions of all rounds are pooled
per variant; the table gives their medians, the model compute they reach, and the two ratios
the bf16 work aims at: Rust bf16 against PyTorch's fastest bf16 (goal >= 1.0) and against Rust's
own fp32 (stretch goal >= 2.5).

    bench_amp_table.py --out bench-results/bench-cpu-amp RUN.json...
"""

import argparse
import json

from bench_resnet18_table import median
from bench_table import FORWARD_GFLOP, TRAIN_GFLOP, cpu_name


def label(run):
    precision = "bf16" if run["amp"] else "fp32"
    if run["implementation"].startswith("pytorch"):
        layout = "channels_last" if run.get("channels_last") else "contiguous (the recipe's code)"
        return f"PyTorch {precision}, {layout}"
    return f"Rust {precision}, {run['memory_format']}"


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", required=True, help="path without extension for the .md and .json")
    p.add_argument("runs", nargs="+")
    a = p.parse_args()
    pooled = {}
    for path in a.runs:
        run = json.load(open(path))
        row = pooled.setdefault(label(run), {"train": [], "eval": [], "rust": not run["implementation"].startswith("pytorch"),
                                            "bf16": bool(run["amp"])})
        row["train"] += run["train_runs"]
        row["eval"] += run["eval_runs"]
    rows = {name: {"train": median(r["train"]), "eval": median(r["eval"]), "rust": r["rust"], "bf16": r["bf16"],
                   "samples": len(r["train"])} for name, r in pooled.items()}

    lines = [f"AlexNet-BN, batch 64 at 227x227, 2 threads, {cpu_name()}; medians of {len(a.runs)} interleaved runs' "
             "repetitions", "",
             "| variant | training (images/s) | evaluation (images/s) | training TFLOP/s | evaluation TFLOP/s |",
             "|---|---:|---:|---:|---:|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['train']:.1f} | {r['eval']:.1f} | {r['train'] * TRAIN_GFLOP / 1e3:.2f} | "
                     f"{r['eval'] * FORWARD_GFLOP / 1e3:.2f} |")
    pick = lambda rust, bf16: max((r for r in rows.values() if r["rust"] == rust and r["bf16"] == bf16),
                                  key=lambda r: r["train"], default=None)
    ours_bf16, ours_fp32, torch_bf16 = pick(True, True), pick(True, False), pick(False, True)
    ratios = {}
    if ours_bf16 and torch_bf16:
        ratios["bf16_vs_pytorch_bf16"] = {k: ours_bf16[k] / torch_bf16[k] for k in ("train", "eval")}
    if ours_bf16 and ours_fp32:
        ratios["bf16_vs_rust_fp32"] = {k: ours_bf16[k] / ours_fp32[k] for k in ("train", "eval")}
    lines += ["", "| ratio | training | evaluation | goal |", "|---|---:|---:|---|"]
    names = {"bf16_vs_pytorch_bf16": ("Rust bf16 / PyTorch's fastest bf16", ">= 1.0"),
             "bf16_vs_rust_fp32": ("Rust bf16 / Rust fp32", ">= 2.5 (stretch)")}
    for k, r in ratios.items():
        lines.append(f"| {names[k][0]} | {r['train']:.2f} | {r['eval']:.2f} | {names[k][1]} |")
    text = "\n".join(lines) + "\n"
    open(a.out + ".md", "w").write(text)
    json.dump({"cpu": cpu_name(), "rows": rows, "ratios": ratios}, open(a.out + ".json", "w"), indent=2)
    print(text)


if __name__ == "__main__":
    main()
