"""Is data loading off the critical path? Time per batch vs time per training step.

``python -m gpgmnet.bench_data [--scenes DIR] [--batch-size 16] [--scale 4] [--hr-patch 160]``

Measures, with the training configuration's data path (:mod:`gpgmnet.data`):

* the one-off cost of forming (or loading from the cache) the training pairs;
* ``load``: the time to make one batch (random aligned crops, flips, tensors),
  i.e. the work a DataLoader worker does per step;
* ``step``: the time of one training step (forward, L2 loss, backward, Adam)
  of GPGMNet on that batch, on ``--device``;
* ``wait``: with a DataLoader of ``--workers`` workers running during
  training, the time the training loop actually waits for each batch;

and prints ``load / step`` and ``wait / step``. Keep ``--steps`` small on CPU:
a x4 step at batch 16 takes seconds there.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from gpgmnet import data
from gpgmnet.arch import GPGMNet
from gpgmnet.train import REPO_ROOT
from sritm_core.contract import SCALES


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its timings; returns 0, or 2 when the scenes cannot be read."""
    parser = argparse.ArgumentParser(prog="python -m gpgmnet.bench_data", description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "hdr-scenes")
    parser.add_argument("--split-file", type=Path, default=data.SPLIT_FILE)
    parser.add_argument("--scale", type=int, choices=SCALES, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--hr-patch", type=int, default=160)
    parser.add_argument("--variants", type=int, default=4, help="exposure variants per scene")
    parser.add_argument("--batches", type=int, default=50, help="batches timed for the load cost")
    parser.add_argument("--steps", type=int, default=5, help="training steps timed (after one warm-up)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cache-dir", type=Path, help="cache root (default ~/.cache/sritm)")
    args = parser.parse_args(argv)

    try:
        started = time.perf_counter()
        batches = data.scene_training_batches(
            args.scenes, args.scale, args.batch_size, args.hr_patch, seed=0, variants=args.variants,
            split_file=args.split_file, cache_dir=args.cache_dir,
        )
        prepare = time.perf_counter() - started
    except data.DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    lr_side = args.hr_patch // args.scale
    print(f"x{args.scale}, batch {args.batch_size}, LR {lr_side}x{lr_side} / HR {args.hr_patch}x{args.hr_patch}, "
          f"{len(batches.names)} training scenes x {args.variants} exposures, torch threads {torch.get_num_threads()}")
    print(f"pairs formed or loaded from the cache: {prepare:.2f} s (once per run)")

    load_times = []
    for step in range(args.batches):
        t = time.perf_counter()
        batches[step]
        load_times.append(time.perf_counter() - t)
    load = statistics.median(load_times)

    device = torch.device(args.device)
    torch.manual_seed(0)
    network = GPGMNet(scale=args.scale).to(device).train()
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-4)

    def train_step(lr: torch.Tensor, hr: torch.Tensor) -> None:
        loss = F.mse_loss(network(lr.to(device)), hr.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    loader = torch.utils.data.DataLoader(
        batches, batch_size=None, sampler=range(args.steps + 1), num_workers=args.workers,
        prefetch_factor=4 if args.workers else None, generator=torch.Generator().manual_seed(0),
    )
    step_times: list[float] = []
    wait_times: list[float] = []
    iterator = iter(loader)
    for index in range(args.steps + 1):
        t = time.perf_counter()
        lr, hr, _ = next(iterator)
        waited = time.perf_counter() - t
        t = time.perf_counter()
        train_step(lr, hr)
        if index:  # the first step warms up allocators and worker start-up
            step_times.append(time.perf_counter() - t)
            wait_times.append(waited)
    step_time = statistics.median(step_times)
    wait = statistics.mean(wait_times)
    print(f"load  {1000 * load:8.2f} ms per batch (median of {args.batches}, in one process)")
    print(f"step  {1000 * step_time:8.2f} ms per training step on {device} (median of {args.steps})")
    print(f"wait  {1000 * wait:8.2f} ms per step waiting for the DataLoader ({args.workers} workers, mean)")
    print(f"load / step = {load / step_time:.4f}   wait / step = {wait / step_time:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
