#!/usr/bin/env python3
"""PyTorch reference for the parity tests: the recipe's AlexNet, written again here.

Run with the Python that scripts/setup installed (it has torch, torchvision, safetensors):

    .venv/bin/python scripts/reference.py roundtrip IN.safetensors OUT.safetensors
    .venv/bin/python scripts/reference.py init-stats OUT.json
    .venv/bin/python scripts/reference.py transform-fixtures CIFAR_BIN OUT_DIR
    .venv/bin/python scripts/reference.py train-step STATE.safetensors BATCH.safetensors OUT_DIR

The Rust tests call these subcommands and compare with allclose.
"""

import argparse
import json
import os
import sys

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

# The same numbers as the Rust crate: the recipe's normalization and SGD settings.
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
LR, MOMENTUM, WEIGHT_DECAY = 0.005, 0.9, 0.005


class AlexNet(nn.Module):
    """The recipe's network: five Conv-BN-ReLU blocks, one shared max pool, three FC layers."""

    def __init__(self, num_classes=10, dropout=0.5):
        super().__init__()

        def block(c_in, c_out, k, s, p):
            return nn.Sequential(nn.Conv2d(c_in, c_out, k, s, p), nn.BatchNorm2d(c_out), nn.ReLU())

        self.conv_block1 = block(3, 96, 11, 4, 0)
        self.conv_block2 = block(96, 256, 5, 1, 2)
        self.conv_block3 = block(256, 384, 3, 1, 1)
        self.conv_block4 = block(384, 384, 3, 1, 1)
        self.conv_block5 = block(384, 256, 3, 1, 1)
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2)
        self.fc1 = nn.Sequential(nn.Dropout(dropout), nn.Linear(9216, 4096), nn.ReLU())
        self.fc2 = nn.Sequential(nn.Dropout(dropout), nn.Linear(4096, 4096), nn.ReLU())
        self.fc3 = nn.Sequential(nn.Linear(4096, num_classes))

    def forward(self, x):
        x = self.pool(self.conv_block1(x))
        x = self.pool(self.conv_block2(x))
        x = self.conv_block5(self.conv_block4(self.conv_block3(x)))
        x = self.pool(x)
        x = x.reshape(x.size(0), -1)
        return self.fc3(self.fc2(self.fc1(x)))


def num_classes_of(state):
    return state["fc3.0.weight"].shape[0]


def load_model(path, dropout=0.5):
    state = load_file(path)
    model = AlexNet(num_classes_of(state), dropout)
    model.load_state_dict(state, strict=True)
    return model


def save_model(model, path):
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)


def cmd_roundtrip(args):
    """Loads a Rust checkpoint strictly and saves it back from PyTorch's own state_dict."""
    save_model(load_model(args.input), args.output)


def cmd_train_step(args):
    """From the weights and batch in the inputs: eval logits, then `--steps` SGD steps in
    train mode with dropout off, saving the state_dict, momentum buffers and eval logits
    after them."""
    torch.use_deterministic_algorithms(True)
    model = load_model(args.state, dropout=0.0)
    batch = load_file(args.batch)
    x, y = batch["images"], batch["labels"]
    if args.channels_last:
        # The layout the Rust side trains in: the same convolution kernels on both sides.
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    os.makedirs(args.out_dir, exist_ok=True)
    model.eval()
    with torch.no_grad():
        save_file({"logits": model(x).contiguous()}, os.path.join(args.out_dir, "eval_logits.safetensors"))
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    losses = []
    for _ in range(args.steps):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    save_model(model, os.path.join(args.out_dir, "after_steps.safetensors"))
    # Eval logits again, now with the running statistics the steps left in the BatchNorms.
    model.eval()
    with torch.no_grad():
        save_file({"logits": model(x).contiguous()}, os.path.join(args.out_dir, "eval_logits_after.safetensors"))
    names = {id(p): n for n, p in model.named_parameters()}
    buffers = {names[id(p)]: s["momentum_buffer"].contiguous() for p, s in opt.state.items()}
    save_file(buffers, os.path.join(args.out_dir, "momentum.safetensors"))
    with open(os.path.join(args.out_dir, "losses.json"), "w") as f:
        json.dump(losses, f)


def cmd_init_stats(args):
    """Per-tensor statistics of a freshly initialised PyTorch model (many draws averaged)."""
    torch.manual_seed(0)
    stats = {}
    model = AlexNet()
    for name, t in model.state_dict().items():
        t = t.double()
        stats[name] = {"min": t.min().item(), "max": t.max().item(), "mean": t.mean().item(),
                       "std": t.std().item() if t.numel() > 1 else 0.0}
    with open(args.output, "w") as f:
        json.dump(stats, f, indent=1, sort_keys=True)


def read_cifar_bin(path, count):
    import numpy as np
    raw = np.fromfile(path, dtype=np.uint8, count=count * 3073).reshape(count, 3073)
    return raw[:, 1:].reshape(count, 3, 32, 32), raw[:, 0].astype(np.int64)


def cmd_transform_fixtures(args):
    """torchvision's recipe transforms (Resize(227) + ToTensor + Normalize, on PIL images) for
    the first `--count` images of a CIFAR binary file; saves before and after Normalize."""
    from PIL import Image
    from torchvision import transforms
    images, _ = read_cifar_bin(args.cifar_bin, args.count)
    resize = transforms.Compose([transforms.Resize(227), transforms.ToTensor()])
    normalize = transforms.Normalize(CIFAR_MEAN, CIFAR_STD)
    resized = torch.stack([resize(Image.fromarray(img.transpose(1, 2, 0))) for img in images])
    os.makedirs(args.out_dir, exist_ok=True)
    save_file({"resized": resized.contiguous(), "normalized": normalize(resized).contiguous()},
              os.path.join(args.out_dir, "transforms.safetensors"))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("roundtrip"); p.add_argument("input"); p.add_argument("output")
    p.set_defaults(fn=cmd_roundtrip)
    p = sub.add_parser("train-step"); p.add_argument("state"); p.add_argument("batch"); p.add_argument("out_dir")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--steps", type=int, default=2); p.set_defaults(fn=cmd_train_step)
    p = sub.add_parser("init-stats"); p.add_argument("output"); p.set_defaults(fn=cmd_init_stats)
    p = sub.add_parser("transform-fixtures"); p.add_argument("cifar_bin"); p.add_argument("out_dir")
    p.add_argument("--count", type=int, default=16); p.set_defaults(fn=cmd_transform_fixtures)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("REFERENCE_THREADS", "2")))
    args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
