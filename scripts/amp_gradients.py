#!/usr/bin/env python3
"""How far bf16 autocast moves each parameter's gradient, against the minibatch noise SGD
already lives with: the evidence behind the README's "bf16 on the CPU" accuracy paragraph.

    .venv/bin/python scripts/amp_gradients.py --data-dir DIR [--checkpoint W.safetensors] [--batches 4]

On the recipe's AlexNet-BN (train mode, dropout off so that both passes see the same network),
for each of the first --batches batches of 64 training images (the evaluation transforms:
Resize 227 and Normalize), the gradients in fp32 and under `torch.autocast("cpu",
torch.bfloat16)` from the same weights: a randomly initialised network (torch.manual_seed(1)),
or --checkpoint (a state dict in safetensors, e.g. a run's last.safetensors). Per parameter
tensor it prints:

- bf16 error: |g_bf16 - g_fp32| / |g_fp32|, the mean over the batches;
- error vs error: the mean cosine between the errors of two different batches (near 0: the
  errors do not add up from step to step, they average out like noise);
- error vs gradient: the mean cosine between a batch's error and its fp32 gradient (negative:
  bf16 shortens the step a little);
- batch vs batch: the mean cosine between the fp32 gradients of two different batches, the
  minibatch noise (near 0: one batch's gradient is mostly noise already).

The steps are PyTorch's, which this crate's `--amp` matches bit for bit (tests/amp_tests.rs), so
the figures hold for both. The conv biases, whose gradients BatchNorm makes zero up to rounding,
are left out.
"""

import argparse
import itertools
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference import CIFAR_MEAN, CIFAR_STD, AlexNet  # noqa: E402

BATCH = 64


def batches(data_dir, count):
    """The first `count` batches of data_batch_1.bin, transformed as for evaluation."""
    raw = np.fromfile(os.path.join(data_dir, "data_batch_1.bin"), dtype=np.uint8).reshape(-1, 3073)
    mean, std = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1), torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    for i in range(count):
        rows = raw[BATCH * i:BATCH * (i + 1)]
        images = torch.from_numpy(rows[:, 1:].reshape(-1, 3, 32, 32)).float() / 255
        images = F.interpolate(images, size=227, mode="bilinear", align_corners=False)
        yield ((images - mean) / std).contiguous(memory_format=torch.channels_last), torch.from_numpy(rows[:, 0].astype(np.int64))


def gradients(model, state, images, labels, amp):
    model.load_state_dict(state)
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        loss = F.cross_entropy(model(images).float(), labels)
    loss.backward()
    return {n: p.grad.detach().double().flatten() for n, p in model.named_parameters()}


def cosine(a, b):
    return float(torch.dot(a, b) / (a.norm() * b.norm()))


def mean(xs):
    return sum(xs) / len(xs)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="the folder with data_batch_1.bin")
    parser.add_argument("--checkpoint", help="weights to start from (safetensors); default: a fresh network, seed 1")
    parser.add_argument("--batches", type=int, default=4, help="batches of 64 to average over (at least 2)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.batches < 2:
        parser.error("--batches must be at least 2 (the cosines compare two batches)")
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    model = AlexNet(dropout=0.0).to(memory_format=torch.channels_last).train()
    if args.checkpoint:
        from safetensors.torch import load_file
        model.load_state_dict(load_file(args.checkpoint), strict=True)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    fp32, errors = [], []
    for images, labels in batches(args.data_dir, args.batches):
        exact = gradients(model, state, images, labels, amp=False)
        bf16 = gradients(model, state, images, labels, amp=True)
        fp32.append(exact)
        errors.append({n: bf16[n] - exact[n] for n in exact})
    pairs = list(itertools.combinations(range(args.batches), 2))
    print(f"weights: {args.checkpoint or 'fresh (seed 1)'}; {args.batches} batches of {BATCH}")
    print("| parameter | bf16 error | error vs error | error vs gradient | batch vs batch |")
    print("|---|---:|---:|---:|---:|")
    for name in fp32[0]:
        if name.endswith(".0.bias") and name.startswith("conv"):
            continue
        err = mean([float(e[name].norm() / g[name].norm()) for e, g in zip(errors, fp32)])
        err_err = mean([cosine(errors[i][name], errors[j][name]) for i, j in pairs])
        err_grad = mean([cosine(e[name], g[name]) for e, g in zip(errors, fp32)])
        grad_grad = mean([cosine(fp32[i][name], fp32[j][name]) for i, j in pairs])
        print(f"| {name} | {100 * err:.1f}% | {err_err:+.3f} | {err_grad:+.3f} | {grad_grad:+.3f} |")


if __name__ == "__main__":
    main()
