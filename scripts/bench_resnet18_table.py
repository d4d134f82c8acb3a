#!/usr/bin/env python3
"""The ResNet-18 recipe's table: `bench --only-resnet18-step` runs (Rust, one per memory format
and oneDNN setting per round) and `scripts/bench_resnet18.py` runs (PyTorch), interleaved over
rounds by scripts/bench. The timed repetitions of all rounds are pooled per implementation and
variant; the table gives their medians, the ratio Rust / PyTorch, the load average while they
ran and, where measured (--phases), the seconds per step of each part.

    bench_resnet18_table.py --out bench-results/bench-resnet18-cpu RUN.json...
"""

import argparse
import json
import statistics

from bench_table import cpu_name

DEFAULT = ("channels-last", True)  # the trainer's default layout and oneDNN setting


def median(xs):
    return sorted(xs)[len(xs) // 2] if xs else float("nan")


def key(run):
    """('pytorch', None) or ('rust', (memory format, oneDNN on))."""
    if run["implementation"].startswith("pytorch"):
        return ("pytorch", None)
    return ("rust", (run["memory_format"], bool(run["onednn"])))


def label(k):
    if k[0] == "pytorch":
        return "PyTorch (kuangliu main.py)"
    fmt, onednn = k[1]
    return f"Rust, {fmt}{'' if onednn else ', oneDNN off'}{' (trainer default)' if k[1] == DEFAULT else ''}"


def pooled(runs):
    """Pooled medians of one implementation and variant over its rounds."""
    loads = [x for r in runs for x in r.get("load_average", []) if x is not None]
    phases = [r["phases_seconds"] for r in runs if r.get("phases_seconds")]
    return {
        "rounds": len(runs),
        "train_images_per_sec": median([x for r in runs for x in r["train_runs"]]),
        "train_runs": [x for r in runs for x in r["train_runs"]],
        "eval_images_per_sec": median([x for r in runs for x in r["eval_runs"]]),
        "eval_runs": [x for r in runs for x in r["eval_runs"]],
        "load_average": [min(loads), statistics.median(loads), max(loads)] if loads else None,
        "phases_seconds": {p: median([ph[p] for ph in phases]) for p in phases[0]} if phases else None,
        "peak_rss_mb": max(r.get("peak_rss_mb") or 0 for r in runs),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+")
    p.add_argument("--out", required=True, help="output path without extension")
    a = p.parse_args()
    groups = {}
    for path in a.runs:
        run = json.load(open(path))
        groups.setdefault(key(run), []).append(run)
    results = {k: pooled(v) for k, v in groups.items()}
    torch_ = results[("pytorch", None)]
    first = groups[("pytorch", None)][0]
    machine = f"{cpu_name()}, {first['threads']} threads" if first["device"] == "cpu" else first["device"]
    load = lambda r: "{:.1f} ({:.1f}–{:.1f})".format(r["load_average"][1], *r["load_average"][::2]) \
        if r["load_average"] else "–"
    rust_keys = sorted((k for k in results if k[0] == "rust"), key=lambda k: (k[1] != DEFAULT, k[1]))
    lines = [
        f"Machine: {machine}; device {first['device']}; ResNet-18 (kuangliu/pytorch-cifar), batch 128 "
        f"(test 100), 32×32 with RandomCrop(32, padding=4) + flip; {torch_['rounds']} interleaved rounds, "
        f"{first['train_steps']} steps per timed repetition; medians of all repetitions. PyTorch: "
        "its main.py loop as written (DataLoader, num_workers=2, per-image PIL transforms, NCHW).",
        "",
        "| training step (images/s) | Rust | PyTorch | Rust / PyTorch | test forward, batch 100 (images/s) "
        "| Rust / PyTorch | load average, median (min–max) |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    ratios = {}
    for k in rust_keys:
        r = results[k]
        train, evaluation = (r[m] / torch_[m] for m in ("train_images_per_sec", "eval_images_per_sec"))
        ratios[label(k)] = {"train": train, "eval": evaluation}
        lines.append(f"| {label(k)} | {r['train_images_per_sec']:.1f} | {torch_['train_images_per_sec']:.1f} "
                     f"| {train:.2f} | {r['eval_images_per_sec']:.1f} vs {torch_['eval_images_per_sec']:.1f} "
                     f"| {evaluation:.2f} | {load(r)} |")
    lines.append(f"| {label(('pytorch', None))} | – | {torch_['train_images_per_sec']:.1f} | – "
                 f"| {torch_['eval_images_per_sec']:.1f} | – | {load(torch_)} |")
    with_phases = [k for k in [("pytorch", None)] + rust_keys if results[k]["phases_seconds"]]
    if with_phases:
        lines += ["", "| seconds per step (median) | batch | forward + loss | zero_grad + backward | optimizer step |",
                  "|---|---:|---:|---:|---:|"]
        for k in with_phases:
            ph = results[k]["phases_seconds"]
            lines.append(f"| {label(k)} | {ph['data']:.3f} | {ph['forward']:.3f} | {ph['backward']:.3f} "
                         f"| {ph['optimizer']:.3f} |")
        lines += ["", "The batch phase is Rust's own transform (the fused crop kernel, on the step's "
                  "threads) but PyTorch's wait for a batch its two workers prepared meanwhile."]
    md = "\n".join(lines) + "\n"
    with open(a.out + ".md", "w") as f:
        f.write(md)
    with open(a.out + ".json", "w") as f:
        json.dump({"machine": machine, "results": {label(k): v for k, v in results.items()}, "ratios": ratios,
                   "runs": a.runs}, f, indent=2)
    print(md)


if __name__ == "__main__":
    main()
