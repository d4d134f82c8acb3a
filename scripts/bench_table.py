#!/usr/bin/env python3
"""Combines the Rust and PyTorch benchmark JSON files into one JSON and a Markdown table."""

import argparse
import json
import platform

# Forward FLOPs per 227x227 image of this AlexNet (no grouped convolutions): about 1.13 GMAC.
FORWARD_GFLOP = 2.27
TRAIN_GFLOP = 3 * FORWARD_GFLOP


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def variant(run):
    """How a Rust run was configured: memory format, and oneDNN where it was switched off."""
    return run["memory_format"] + ("" if run.get("onednn", True) else ", oneDNN off")


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("rust")
    p.add_argument("pytorch")
    p.add_argument("--other", action="append", default=[],
                   help="a Rust run with another memory format or oneDNN setting (repeatable)")
    p.add_argument("--out", required=True, help="output path without extension")
    a = p.parse_args()
    rust, torch_ = json.load(open(a.rust)), json.load(open(a.pytorch))
    rows = [
        ("training step (images/s)", "train_images_per_sec", True),
        ("evaluation (images/s)", "eval_images_per_sec", True),
        ("data pipeline (images/s)", "data_images_per_sec", True),
        ("data set load (s)", "load_seconds", False),
        ("peak resident memory (MB)", "peak_rss_mb", False),
    ]
    machine = f"{cpu_name()}, {rust['threads']} threads" if rust["device"] == "cpu" else rust["device"]
    lines = [
        f"Machine: {machine}; device {rust['device']}; batch {rust['batch_size']}; amp {rust['amp']}; "
        f"Rust: {variant(rust)} (the trainer's default).",
        "",
        "| measure | Rust (tch) | PyTorch recipe | Rust / PyTorch |",
        "|---|---:|---:|---:|",
    ]
    ratios = {}
    for label, key, higher_better in rows:
        r, t = rust.get(key), torch_.get(key)
        ratio = r / t if r and t else float("nan")
        ratios[key] = ratio
        lines.append(f"| {label} | {r:.1f} | {t:.1f} | {ratio:.2f}{'' if higher_better else ' (lower is better)'} |")
    # Reading the model's weights: the same tensors from .pth and from .safetensors (Rust only).
    pth, st = rust.get("checkpoint_load_seconds_pth"), rust.get("checkpoint_load_seconds_safetensors")
    if pth and st:
        ratios["checkpoint_load_pth_over_safetensors"] = pth / st
        mb = rust.get("checkpoint_bytes_pth", 0) / 1e6
        lines.append(f"| checkpoint load, .pth vs .safetensors (s), {mb:.0f} MB | {pth:.3f} vs {st:.3f} | – "
                     f"| {pth / st:.2f} (.pth / .safetensors, lower is better) |")
    others = [json.load(open(path)) for path in a.other]
    for other in others:
        for label, key in [("training step", "train_images_per_sec"), ("evaluation", "eval_images_per_sec")]:
            lines.append(f"| {label}, Rust with {variant(other)} (images/s) | {other[key]:.1f} | {torch_[key]:.1f} "
                         f"| {other[key] / torch_[key]:.2f} |")
    gflops = rust["train_images_per_sec"] * TRAIN_GFLOP
    lines += ["", f"Rust training throughput: {gflops:.0f} GFLOP/s of model compute "
              f"({TRAIN_GFLOP:.1f} GFLOP per image per step); tch's load_dir takes "
              f"{rust.get('load_seconds_tch_load_dir', float('nan')):.2f} s for the same files."]
    md = "\n".join(lines) + "\n"
    with open(a.out + ".md", "w") as f:
        f.write(md)
    with open(a.out + ".json", "w") as f:
        json.dump({"machine": machine, "rust": rust, "rust_variants": others, "pytorch": torch_, "ratios": ratios,
                   "train_gflops_per_sec": gflops}, f, indent=2)
    print(md)


if __name__ == "__main__":
    main()
