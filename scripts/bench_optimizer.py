#!/usr/bin/env python3
"""PyTorch's side of `bench --only-optimizer-step`: median seconds per step of torch.optim.SGD
(the recipe's settings), torch.optim.Adam on its CPU default (the single-tensor loop) and
Adam(fused=True) (PyTorch's fastest CPU Adam) on the recipe's AlexNet parameters, each with a
random gradient; one untimed step first (it creates the state). Prints JSON with the keys of
the Rust side.

    .venv/bin/python scripts/bench_optimizer.py [--device cpu] [--threads 2] [--reps 3] [--json OUT]
"""

import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference import AlexNet  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cases = {
        "sgd": lambda ps: torch.optim.SGD(ps, lr=0.005, momentum=0.9, weight_decay=0.005),
        "adam": lambda ps: torch.optim.Adam(ps, lr=1e-3),
        "adam_fused": lambda ps: torch.optim.Adam(ps, lr=1e-3, fused=True),
    }
    report = {"implementation": f"pytorch {torch.__version__}", "threads": args.threads}
    for name, make in cases.items():
        torch.manual_seed(1)
        model = AlexNet().to(device)
        for q in model.parameters():
            q.grad = torch.randn_like(q) * 1e-3
        opt = make(model.parameters())
        opt.step()
        runs = []
        for _ in range(args.reps):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            runs.append(time.perf_counter() - t)
        secs = statistics.median(runs)
        print(f"optimizer step, {name}: {secs:.3f} s", file=sys.stderr)
        report[f"optimizer_step_seconds_{name}"] = secs
        report[f"optimizer_step_{name}_runs"] = runs
        del model, opt
    text = json.dumps(report, indent=2) + "\n"
    if args.json:
        with open(args.json, "w") as f:
            f.write(text)
    else:
        print(text, end="")


if __name__ == "__main__":
    main()
