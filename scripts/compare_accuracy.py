#!/usr/bin/env python3
"""Accuracy of the tutorial's PyTorch loop against this crate's trainer, on the same real images.

Two subcommands, run by scripts/compare-accuracy:

    compare_accuracy.py pytorch --data-dir DIR --seed S [--split-seed 1] --out RESULT.json [limits]
        The tutorial's loop (SGD 0.005/0.9/5e-3, batch 64, per-image PIL transforms, a
        SubsetRandomSampler over the NumPy split), on the first N images of each split as
        `train --limit-*` takes them, then test accuracy. Writes {"seed", "test_acc", ...}.

    compare_accuracy.py table RESULTS_DIR --out TABLE.md [--sides BASE,OTHER,...] [--paired]
        Reads every run JSON in RESULTS_DIR and writes the table: each run's test accuracy, the
        means, their spread, and the smallest difference of means that this many runs can detect
        (two-sided t-test, alpha 0.05, power 0.8), each side against the first. With --paired
        (runs of one seed share their initial weights, order and flips: this crate against
        itself) also the per-seed differences and their paired t-test.

Evaluation runs in eval mode and the test set uses the training normalisation, as this crate
does (the tutorial does neither: see the README's deliberate differences); `--as-written`
restores both of the tutorial's quirks for the PyTorch side.
"""

import argparse
import glob
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader
from torch.utils.data.sampler import SubsetRandomSampler
from torchvision import transforms

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_reference import Cifar, load_cifar, recipe_transforms  # noqa: E402
from reference import LR, MOMENTUM, WEIGHT_DECAY, AlexNet  # noqa: E402

BATCH = 64


def split(n, valid_size, seed):
    """The tutorial's split: np.random.seed(seed), shuffle(list(range(n))), valid first."""
    indices = list(range(n))
    np.random.seed(seed)
    np.random.shuffle(indices)
    cut = int(np.floor(valid_size * n))
    return indices[cut:], indices[:cut]


def accuracy(model, loader, eval_mode):
    model.train(not eval_mode)
    correct = total = 0
    with torch.no_grad():
        for images, labels in loader:
            predicted = model(images).argmax(1)
            total += labels.size(0)
            correct += (predicted == labels).sum().item()
    return correct / total


def cmd_pytorch(args):
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    (train_x, train_y), (test_x, test_y) = load_cifar(args.data_dir)
    train_idx, val_idx = split(len(train_y), 0.1, args.split_seed)
    train_idx, val_idx = train_idx[: args.limit_train], val_idx[: args.limit_val]
    train_tf, eval_tf = recipe_transforms()
    if args.as_written:  # the tutorial tests with ImageNet's statistics
        eval_test = transforms.Compose(
            [transforms.Resize(227), transforms.ToTensor(), transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))]
        )
    else:
        eval_test = eval_tf
    train_loader = DataLoader(Cifar(train_x, train_y, train_tf), batch_size=BATCH, sampler=SubsetRandomSampler(train_idx))
    val_loader = DataLoader(Cifar(train_x, train_y, eval_tf), batch_size=BATCH, sampler=SubsetRandomSampler(val_idx))
    n_test = args.limit_test
    test_loader = DataLoader(Cifar(test_x[:n_test], test_y[:n_test], eval_test), batch_size=BATCH, shuffle=False)

    model = AlexNet(10)
    cost = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY, momentum=MOMENTUM)
    started = time.time()
    val_accs = []
    for epoch in range(args.epochs):
        model.train()
        for images, labels in train_loader:
            loss = cost(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        val_accs.append(accuracy(model, val_loader, not args.as_written))
        print(f"pytorch seed {args.seed}: epoch {epoch + 1}/{args.epochs}, val acc {val_accs[-1]:.4f}", file=sys.stderr)
    test_acc = accuracy(model, test_loader, not args.as_written)
    result = {"side": "pytorch", "seed": args.seed, "split_seed": args.split_seed, "test_acc": test_acc, "val_acc": val_accs, "seconds": time.time() - started}
    with open(args.out, "w") as f:
        json.dump(result, f)


# Two-sided Student t quantiles, for the detectable difference with few runs (df 1..30).
def t_quantile(p, df):
    """Inverse CDF of Student's t by bisection on the regularised incomplete beta function."""

    def cdf(t):
        x = df / (df + t * t)
        tail = 0.5 * betainc(df / 2, 0.5, x)
        return 1 - tail if t > 0 else tail

    lo, hi = -50.0, 50.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
    return (lo + hi) / 2


def betainc(a, b, x):
    """Regularised incomplete beta I_x(a, b) (continued fraction, Numerical Recipes' betacf)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(1 - x))
    if x > (a + 1) / (a + b + 2):
        return 1 - betainc(b, a, 1 - x)
    c, d = 1.0, 1 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > 1e-300 else 1e-300)
    h = d
    for m in range(1, 300):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)), -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1 + num * d
            d = 1 / (d if abs(d) > 1e-300 else 1e-300)
            c = 1 + num / c
            c = c if abs(c) > 1e-300 else 1e-300
            h *= d * c
    return front * h / a


def stats(xs):
    mean = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else float("nan")
    return mean, sd


SIDE_NAMES = {"pytorch": "PyTorch (tutorial's loop)", "rust": "Rust (this crate)", "rust-fp32": "Rust, fp32",
              "rust-bf16": "Rust, bf16 (--amp)", "rust-fp32-nchw": "Rust, fp32 NCHW (control)"}
# Short names for the difference columns of a --paired table.
SHORT_NAMES = {"rust-fp32": "fp32", "rust-bf16": "bf16", "rust-fp32-nchw": "NCHW"}


def t_two_sided_p(t, df):
    """Two-sided p-value of Student's t with df degrees of freedom."""
    return betainc(df / 2, 0.5, df / (df + t * t)) if math.isfinite(t) else 0.0


def unpaired_lines(base, other, a, b):
    """Pooled-variance two-sample t-test of `b` against `a` (lists of accuracies)."""
    (ma, sa), (mb, sb) = stats(a), stats(b)
    text = f"Difference of means ({SIDE_NAMES.get(other, other)} − {SIDE_NAMES.get(base, base)}): {100 * (mb - ma):+.2f} points.\n"
    n1, n2 = len(a), len(b)
    df = n1 + n2 - 2
    if df >= 1:
        pooled = math.sqrt(((n1 - 1) * sa**2 + (n2 - 1) * sb**2) / df)
        se = pooled * math.sqrt(1 / n1 + 1 / n2)
        t_stat = (mb - ma) / se if se > 0 else float("inf")
        detectable = (t_quantile(0.975, df) + t_quantile(0.8, df)) * se
        text += (
            f"Pooled sd {100 * pooled:.2f} points; t = {t_stat:.2f} on {df} degrees of freedom "
            f"(|t| > {t_quantile(0.975, df):.2f} would be a significant difference at 5%).\n"
            f"Smallest difference of means these runs detect (alpha 0.05, power 0.8): {100 * detectable:.2f} points.\n"
        )
    return text


def paired_lines(base, other, diffs):
    """Paired t-test of the per-seed differences `diffs` (other − base) against 0."""
    n = len(diffs)
    if n < 2:
        return ""
    mean, sd = stats(diffs)
    t_stat = mean / (sd / math.sqrt(n)) if sd > 0 else float("inf")
    below = sum(d < 0 for d in diffs)
    return (
        f"Paired by seed ({SIDE_NAMES.get(other, other)} − {SIDE_NAMES.get(base, base)}): mean {100 * mean:+.2f} ± "
        f"{100 * sd:.2f} points over {n} seeds, {below} below and {n - below - sum(d == 0 for d in diffs)} above; "
        f"t = {t_stat:.2f} on {n - 1} degrees of freedom, p = {t_two_sided_p(t_stat, n - 1):.3f}.\n"
    )


def cmd_table(args):
    sides = args.sides.split(",")
    runs = {side: [] for side in sides}
    for path in sorted(glob.glob(os.path.join(args.results, "*.json"))):
        with open(path) as f:
            r = json.load(f)
        if r["side"] in runs:
            runs[r["side"]].append(r)
    base = sides[0]
    by_seed = {side: {r["seed"]: r["test_acc"] for r in rs} for side, rs in runs.items()}
    seeds = sorted({s for accs in by_seed.values() for s in accs})
    names = [SIDE_NAMES.get(side, side) for side in sides]
    # With --paired, the runs of one seed share initial weights, order and flips (the same
    # program): each other side's difference to the first is a column, and is tested paired.
    short = [SHORT_NAMES.get(side, side) for side in sides]
    diff_heads = [f"{n} − {short[0]}" for n in short[1:]] if args.paired else []
    lines = ["| seed | " + " | ".join(names + diff_heads) + " |", "|---:" * (1 + len(names) + len(diff_heads)) + "|"]
    for s in seeds:
        cells = [f"{100 * by_seed[side][s]:.2f}%" if s in by_seed[side] else "–" for side in sides]
        if args.paired:
            cells += [f"{100 * (by_seed[side][s] - by_seed[base][s]):+.1f}" if s in by_seed[side] and s in by_seed[base] else "–"
                      for side in sides[1:]]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    means = [stats([r["test_acc"] for r in runs[side]]) for side in sides]
    summary = [f"{100 * m:.2f}% ± {100 * sd:.2f}" for m, sd in means]
    if args.paired:
        for side in sides[1:]:
            d = [by_seed[side][s] - by_seed[base][s] for s in seeds if s in by_seed[side] and s in by_seed[base]]
            m, sd = stats(d)
            summary.append(f"{100 * m:+.1f} ± {100 * sd:.1f}")
    lines.append("| mean ± sd | " + " | ".join(summary) + " |")
    if all(runs[side] and "seconds" in runs[side][0] for side in sides):
        times = [f"{stats([r['seconds'] for r in runs[side]])[0]:.0f} s" for side in sides]
        lines.append("| mean run time | " + " | ".join(times + [""] * len(diff_heads)) + " |")
    text = "\n".join(lines) + "\n\n"
    for side in sides[1:]:
        text += unpaired_lines(base, side, [r["test_acc"] for r in runs[base]], [r["test_acc"] for r in runs[side]])
        if args.paired:
            d = [by_seed[side][s] - by_seed[base][s] for s in seeds if s in by_seed[side] and s in by_seed[base]]
            text += paired_lines(base, side, d)
    with open(args.out, "w") as f:
        f.write(text)
    print(text)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pytorch")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--seed", type=int, required=True, help="torch.manual_seed: initial weights, sampler order, flips, dropout")
    p.add_argument("--split-seed", type=int, default=1, help="np.random.seed of the split (the tutorial's: 1)")
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--limit-train", type=int, default=2000)
    p.add_argument("--limit-val", type=int, default=500)
    p.add_argument("--limit-test", type=int, default=1000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--as-written", action="store_true", help="train-mode evaluation and ImageNet test statistics, as the tutorial")
    t = sub.add_parser("table")
    t.add_argument("results")
    t.add_argument("--out", required=True)
    t.add_argument("--sides", default="pytorch,rust",
                   help="the sides to compare, as the runs' JSON names them; the first is the baseline")
    t.add_argument("--paired", action="store_true",
                   help="runs of one seed share initial weights, order and flips: also test the per-seed differences")
    args = parser.parse_args()
    {"pytorch": cmd_pytorch, "table": cmd_table}[args.cmd](args)


if __name__ == "__main__":
    main()
