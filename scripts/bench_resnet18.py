#!/usr/bin/env python3
"""PyTorch's side of `bench --only-resnet18-step`: kuangliu/pytorch-cifar's main.py (commit
49b7aa9, MIT License, Copyright (c) 2017 liukuang) with `net = ResNet18()`, its training loop
and test loop as written, timed: images per second over --train-steps steps (test: over
--eval-batches batches), --reps times, after one untimed step; the median is reported.

What differs from main.py, and why:
- The data: torchvision.datasets.CIFAR10 reads the Python pickles and downloads them; here a
  Dataset over the binary .bin files gives the same items (a PIL image made with
  Image.fromarray from the uint8 HWC array, then the transform; the label as an int).
- `device` is --device; on CUDA, DataParallel and cudnn.benchmark as main.py does.
- torch.set_num_threads(--threads), as the Rust side; torch.manual_seed(1) before the model.
- progress_bar is left out (utils.py runs `stty size` when imported, which fails without a
  terminal); each loop stops after the batches it times, instead of running the epoch.
- The scheduler and the checkpoint are left out: neither runs inside the timed loops.

    .venv/bin/python scripts/bench_resnet18.py --data-dir DIR [--device cpu] [--threads 2]
        [--reps 3] [--train-steps 2] [--eval-batches 3] [--phases] [--json OUT]
"""

import argparse
import json
import os
import resource
import sys
import time

import torch
import torch.backends.cudnn as cudnn
import torch.nn as nn
import torch.optim as optim
import torchvision.transforms as transforms

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
sys.path.insert(0, os.path.join(here, "..", "tests", "fixtures"))
from bench_reference import Cifar, load_cifar, median  # noqa: E402
from resnet_reference import ResNet18  # noqa: E402


def rates(marks, images):
    """Images per second between consecutive time marks."""
    return [images / (b - a) for a, b in zip(marks, marks[1:])]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True, help="folder with the CIFAR-10 .bin files")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--train-steps", type=int, default=2)
    p.add_argument("--eval-batches", type=int, default=3)
    p.add_argument("--phases", action="store_true",
                   help="then time the parts of a step one by one (waiting for the batch, forward, backward, step)")
    p.add_argument("--json")
    a = p.parse_args()
    load_before = os.getloadavg()[0]
    torch.set_num_threads(a.threads)
    device = a.device
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    # Data
    transform_train = transforms.Compose([
        transforms.RandomCrop(32, padding=4),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    ])
    transform_test = transforms.Compose([
        transforms.ToTensor(),
        transforms.Normalize((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    ])
    (train_x, train_y), (test_x, test_y) = load_cifar(a.data_dir)
    trainset = Cifar(train_x, train_y, transform_train)
    trainloader = torch.utils.data.DataLoader(trainset, batch_size=128, shuffle=True, num_workers=2)
    testset = Cifar(test_x, test_y, transform_test)
    testloader = torch.utils.data.DataLoader(testset, batch_size=100, shuffle=False, num_workers=2)

    # Model
    torch.manual_seed(1)
    net = ResNet18()
    net = net.to(device)
    if device.startswith("cuda"):
        net = torch.nn.DataParallel(net)
        cudnn.benchmark = True
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)

    # Training: main.py's train(epoch), with a time mark after the warm-up step and after every
    # --train-steps steps.
    last = a.reps * a.train_steps
    marks = []
    net.train()
    train_loss = 0
    correct = 0
    total = 0
    for batch_idx, (inputs, targets) in enumerate(trainloader):
        inputs, targets = inputs.to(device), targets.to(device)
        optimizer.zero_grad()
        outputs = net(inputs)
        loss = criterion(outputs, targets)
        loss.backward()
        optimizer.step()

        train_loss += loss.item()
        _, predicted = outputs.max(1)
        total += targets.size(0)
        correct += predicted.eq(targets).sum().item()

        if batch_idx % a.train_steps == 0:
            sync()
            marks.append(time.perf_counter())
        if batch_idx == last:
            break
    train_rates = rates(marks, a.train_steps * 128)
    print(f"resnet18 training step: {median(train_rates):.1f} images/s", file=sys.stderr)

    phases = time_phases(net, criterion, optimizer, trainloader, device, sync, last) if a.phases else None
    if phases:
        print(f"phases (s per step): {phases}", file=sys.stderr)

    # Test: main.py's test(epoch), marked the same way.
    marks = []
    net.eval()
    test_loss = 0
    correct = 0
    total = 0
    with torch.no_grad():
        for batch_idx, (inputs, targets) in enumerate(testloader):
            inputs, targets = inputs.to(device), targets.to(device)
            outputs = net(inputs)
            loss = criterion(outputs, targets)

            test_loss += loss.item()
            _, predicted = outputs.max(1)
            total += targets.size(0)
            correct += predicted.eq(targets).sum().item()

            if batch_idx % a.eval_batches == 0:
                sync()
                marks.append(time.perf_counter())
            if batch_idx == a.reps * a.eval_batches:
                break
    eval_rates = rates(marks, a.eval_batches * 100)
    print(f"resnet18 evaluation (batch 100): {median(eval_rates):.1f} images/s", file=sys.stderr)

    report = {
        "implementation": f"pytorch {torch.__version__} (kuangliu/pytorch-cifar main.py, "
                          "DataLoader num_workers=2, per-image torchvision transforms)",
        "measure": "resnet18-cifar recipe", "device": device, "threads": a.threads,
        "batch_size": 128, "eval_batch_size": 100, "memory_format": "contiguous",
        "onednn": torch.backends.mkldnn.enabled,
        "train_steps": a.train_steps, "eval_batches": a.eval_batches,
        "train_images_per_sec": median(train_rates), "train_runs": train_rates,
        "eval_images_per_sec": median(eval_rates), "eval_runs": eval_rates,
        "phases_seconds": phases,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "load_average": [load_before, os.getloadavg()[0]],
    }
    text = json.dumps(report, indent=2) + "\n"
    if a.json:
        with open(a.json, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)


def time_phases(net, criterion, optimizer, trainloader, device, sync, steps):
    """Median seconds per step of each part, over `steps` steps of a new epoch after one untimed
    step: waiting for the batch (the workers transform it meanwhile), forward and loss, zero_grad
    and backward, the optimizer step."""
    runs = {"data": [], "forward": [], "backward": [], "optimizer": []}
    it = iter(trainloader)
    for i in range(steps + 1):
        t0 = time.perf_counter()
        inputs, targets = next(it)
        inputs, targets = inputs.to(device), targets.to(device)
        sync()
        t1 = time.perf_counter()
        loss = criterion(net(inputs), targets)
        sync()
        t2 = time.perf_counter()
        optimizer.zero_grad()
        loss.backward()
        sync()
        t3 = time.perf_counter()
        optimizer.step()
        sync()
        t4 = time.perf_counter()
        if i > 0:
            for key, secs in zip(runs, [t1 - t0, t2 - t1, t3 - t2, t4 - t3]):
                runs[key].append(secs)
    return {key: median(xs) for key, xs in runs.items()}


if __name__ == "__main__":
    main()
