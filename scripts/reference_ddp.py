#!/usr/bin/env python3
"""PyTorch DistributedDataParallel reference for the data-parallel parity test.

    .venv/bin/python scripts/reference_ddp.py INIT.safetensors BATCHES.safetensors OUT_DIR \
        --world-size 2 --steps 3 --port PORT

Starts `--world-size` processes on 127.0.0.1 (gloo), each wrapping the recipe's AlexNet
(scripts/reference.py, dropout 0) from the same initial weights in DistributedDataParallel
(default settings: broadcast_buffers=True, 25 MB buckets) with the recipe's SGD, and takes
`--steps` steps, rank r using batch `r{r}_s{s}_images` / `r{r}_s{s}_labels` at step s. Each
rank saves its state_dict (`rank{r}_state.safetensors`) and momentum buffers by parameter name
(`rank{r}_momentum.safetensors`).
"""

import argparse
import os
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference import LR, MOMENTUM, WEIGHT_DECAY, load_model, save_model  # noqa: E402


def rank_main(rank, args):
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{args.port}", rank=rank, world_size=args.world_size)
    model = load_model(args.init, dropout=0.0)
    if args.double:
        model = model.double()
    ddp = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    batches = load_file(args.batches)
    ddp.train()
    for step in range(args.steps):
        x, y = batches[f"r{rank}_s{step}_images"], batches[f"r{rank}_s{step}_labels"]
        if args.double:
            x = x.double()
        opt.zero_grad()
        nn.functional.cross_entropy(ddp(x), y).backward()
        opt.step()
    save_model(model, os.path.join(args.out_dir, f"rank{rank}_state.safetensors"))
    names = {id(p): n for n, p in model.named_parameters()}
    momentum = {names[id(p)]: s["momentum_buffer"].contiguous() for p, s in opt.state.items()}
    save_file(momentum, os.path.join(args.out_dir, f"rank{rank}_momentum.safetensors"))
    dist.destroy_process_group()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("init")
    parser.add_argument("batches")
    parser.add_argument("out_dir")
    parser.add_argument("--world-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--double", action="store_true", help="model and batches in float64")
    args = parser.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    mp.spawn(rank_main, args=(args,), nprocs=args.world_size, join=True)


if __name__ == "__main__":
    main()
