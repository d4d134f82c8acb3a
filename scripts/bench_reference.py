#!/usr/bin/env python3
"""The recipe's PyTorch pipeline, timed the same way as examples/bench (medians of --reps).

Per-image torchvision transforms on PIL images (RandomHorizontalFlip, Resize(227), ToTensor,
Normalize), a DataLoader with num_workers=0 and SubsetRandomSampler, plain fp32 (or --amp on
CUDA), SGD(lr 0.005, momentum 0.9, weight_decay 0.005): as the tutorial writes it. The images
come from the CIFAR binary files, held as uint8 HWC arrays like torchvision's CIFAR10 holds them.
"""

import argparse
import json
import os
import resource
import sys
import time

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.sampler import SubsetRandomSampler
from torchvision import transforms

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference import CIFAR_MEAN, CIFAR_STD, LR, MOMENTUM, WEIGHT_DECAY, AlexNet  # noqa: E402

TRAIN_FILES = [f"data_batch_{i}.bin" for i in range(1, 6)]


def load_cifar(folder):
    """The binary files as torchvision's CIFAR10 keeps them: uint8 [N, 32, 32, 3] and labels."""
    def read(name):
        raw = np.fromfile(os.path.join(folder, name), dtype=np.uint8).reshape(-1, 3073)
        return raw[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), raw[:, 0].astype(np.int64)
    train = [read(f) for f in TRAIN_FILES]
    test = read("test_batch.bin")
    return (np.concatenate([t[0] for t in train]), np.concatenate([t[1] for t in train])), test


class Cifar(Dataset):
    def __init__(self, images, labels, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def median(xs):
    return sorted(xs)[len(xs) // 2]


def recipe_transforms():
    """The tutorial's per-image transforms: (training, evaluation)."""
    normalize = transforms.Normalize(CIFAR_MEAN, CIFAR_STD)
    train = transforms.Compose([transforms.RandomHorizontalFlip(), transforms.Resize(227), transforms.ToTensor(), normalize])
    test = transforms.Compose([transforms.Resize(227), transforms.ToTensor(), normalize])
    return train, test


def recipe_split(n):
    """The tutorial's split: a NumPy permutation (seed 1), the first 10% held out for validation."""
    np.random.seed(1)
    indices = np.random.permutation(n)
    return indices[n // 10:], indices[:n // 10]


class Recipe:
    """The tutorial's model, loss and optimizer on `device`, and its training step."""

    def __init__(self, device, amp, channels_last=False):
        torch.manual_seed(1)
        self.device, self.amp = device, amp
        # channels_last: the model and every batch in NHWC strides, as PyTorch's performance
        # guide recommends for convolutions on the CPU (oneDNN) and on tensor cores.
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = AlexNet().to(device, memory_format=self.memory_format)
        self.cost = nn.CrossEntropyLoss()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY, momentum=MOMENTUM)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    def step(self, images, labels):
        images, labels = images.to(self.device, memory_format=self.memory_format), labels.to(self.device)
        with self.autocast():
            loss = self.cost(self.model(images), labels)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()

    def predict(self, images):
        """Class indices, on the device (call under torch.no_grad() in eval mode)."""
        with self.autocast():
            return self.model(images.to(self.device, memory_format=self.memory_format)).argmax(-1)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data-dir", required=True, help="folder with the CIFAR-10 .bin files")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--train-steps", type=int, default=2)
    p.add_argument("--eval-batches", type=int, default=3)
    p.add_argument("--data-batches", type=int, default=5)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--amp", action="store_true",
                   help="torch.autocast(device, dtype=torch.bfloat16) around forward and loss")
    p.add_argument("--channels-last", action="store_true", help="model and batches in channels_last")
    p.add_argument("--epoch", action="store_true",
                   help="time one whole epoch of the recipe instead (training, then validation), end to end")
    p.add_argument("--limit-train", type=int, help="with --epoch: the first N training images of the split")
    p.add_argument("--limit-val", type=int, help="with --epoch: the first N validation images")
    p.add_argument("--json")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    sync = (lambda: torch.cuda.synchronize()) if device.type == "cuda" else (lambda: None)

    if a.epoch:
        return write_report(a, time_epoch(a, device, sync))
    loads = []
    for _ in range(a.reps):
        t = time.perf_counter()
        (train_x, train_y), (test_x, test_y) = load_cifar(a.data_dir)
        loads.append(time.perf_counter() - t)

    train_tf, test_tf = recipe_transforms()
    train_idx, _ = recipe_split(len(train_y))
    bs = a.batch_size

    def loader():
        return iter(DataLoader(Cifar(train_x, train_y, train_tf), batch_size=bs, sampler=SubsetRandomSampler(train_idx)))

    # 3. Data pipeline alone.
    data_rates = []
    it = loader()
    next(it)
    for _ in range(a.reps):
        t = time.perf_counter()
        for _ in range(a.data_batches):
            images, labels = next(it)
            images.to(device), labels.to(device)
        sync()
        data_rates.append(a.data_batches * bs / (time.perf_counter() - t))
    print(f"data pipeline: {median(data_rates):.0f} images/s", file=sys.stderr)

    # 1. Training step: data -> forward -> loss -> backward -> SGD.
    recipe = Recipe(device, a.amp, a.channels_last)
    recipe.model.train()
    it = loader()
    recipe.step(*next(it))
    train_rates = []
    for _ in range(a.reps):
        sync()
        t = time.perf_counter()
        for _ in range(a.train_steps):
            recipe.step(*next(it))
        sync()
        train_rates.append(a.train_steps * bs / (time.perf_counter() - t))
    print(f"training step: {median(train_rates):.1f} images/s", file=sys.stderr)

    # 2. Evaluation.
    recipe.model.eval()
    test_loader = DataLoader(Cifar(test_x, test_y, test_tf), batch_size=bs, shuffle=False)
    eval_rates = []
    with torch.no_grad():
        for _ in range(a.reps):
            it = iter(test_loader)
            next(it)
            sync()
            t = time.perf_counter()
            for _ in range(a.eval_batches):
                images, _ = next(it)
                recipe.predict(images)
            sync()
            eval_rates.append(a.eval_batches * bs / (time.perf_counter() - t))
    print(f"evaluation: {median(eval_rates):.1f} images/s", file=sys.stderr)

    report = {
        "implementation": f"pytorch {torch.__version__} (recipe: per-image torchvision, DataLoader num_workers=0)",
        "device": str(device), "threads": a.threads, "batch_size": bs, "amp": a.amp,
        "channels_last": a.channels_last,
        "train_images_per_sec": median(train_rates), "train_runs": train_rates,
        "eval_images_per_sec": median(eval_rates), "eval_runs": eval_rates,
        "data_images_per_sec": median(data_rates), "data_runs": data_rates,
        "load_seconds": median(loads),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }
    write_report(a, report)


def write_report(a, report):
    text = json.dumps(report, indent=2) + "\n"
    if a.json:
        with open(a.json, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)


def time_epoch(a, device, sync):
    """One epoch as the tutorial runs it: the training loop over the split, then validation."""
    (train_x, train_y), _ = load_cifar(a.data_dir)
    train_tf, valid_tf = recipe_transforms()
    train_idx, valid_idx = recipe_split(len(train_y))
    train_idx, valid_idx = train_idx[:a.limit_train], valid_idx[:a.limit_val]
    recipe = Recipe(device, a.amp)
    train_loader = DataLoader(Cifar(train_x, train_y, train_tf), batch_size=a.batch_size,
                              sampler=SubsetRandomSampler(train_idx))
    valid_loader = DataLoader(Cifar(train_x, train_y, valid_tf), batch_size=a.batch_size,
                              sampler=SubsetRandomSampler(valid_idx))
    sync()
    started = time.perf_counter()
    recipe.model.train()
    for images, labels in train_loader:
        recipe.step(images, labels)
    sync()
    train_seconds = time.perf_counter() - started
    recipe.model.eval()
    correct = 0
    with torch.no_grad():
        for images, labels in valid_loader:
            correct += (recipe.predict(images) == labels.to(device)).sum().item()
    sync()
    seconds = time.perf_counter() - started
    print(f"epoch: {seconds:.1f} s ({train_seconds:.1f} s training), val acc {correct / max(len(valid_idx), 1):.4f}",
          file=sys.stderr)
    return {
        "implementation": f"pytorch {torch.__version__} (recipe: per-image torchvision, DataLoader num_workers=0)",
        "device": str(device), "threads": a.threads, "batch_size": a.batch_size, "amp": a.amp,
        "epoch_seconds": seconds, "epoch_train_seconds": train_seconds,
        "train_images": len(train_idx), "val_images": len(valid_idx),
        "val_acc": correct / max(len(valid_idx), 1),
    }


if __name__ == "__main__":
    main()
