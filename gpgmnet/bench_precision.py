"""Does bf16 autocast train like fp32 here, and how much faster? Both runs on the same batches, same start.

``python -m gpgmnet.bench_precision [--steps 200] [--batch-size 16] [--init weights/gpgmnet_x4.pt]``

From one initial state (the shipped checkpoint, or a seeded network), trains
``--steps`` steps in fp32 and again in bf16 autocast (channels_last, as
``sritm train`` does) on identical batches, then prints per-window mean
losses of both, their relative difference, the validation PSNR each reaches,
and the time ratio measured in this same run. bf16 needs a CPU with AMX or
AVX512-BF16 (``gpgmnet.train.cpu_has_bf16``); elsewhere the run still works
but is slow, and says so.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gpgmnet import data
from gpgmnet.arch import GPGMNet
from gpgmnet.train import REPO_ROOT, cpu_has_bf16, initialise_from, validation_psnr
from sritm_core.contract import SCALES


def main(argv: Sequence[str] | None = None) -> int:
    """Train in fp32 and in bf16 from one start and print the comparison; returns 0, or 2 on unreadable scenes."""
    parser = argparse.ArgumentParser(prog="python -m gpgmnet.bench_precision", description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "hdr-scenes")
    parser.add_argument("--scale", type=int, choices=SCALES, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--hr-patch", type=int, default=160)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--window", type=int, default=25, help="steps per printed loss mean")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--init", type=Path, help="start from this checkpoint (default: a seeded network)")
    parser.add_argument("--cache-dir", type=Path)
    args = parser.parse_args(argv)
    try:
        batches = data.scene_training_batches(args.scenes, args.scale, args.batch_size, args.hr_patch, seed=0,
                                              variants=2, cache_dir=args.cache_dir)
        val_paths = data.split_files(args.scenes, "val")
        samples = data.render_validation_set(val_paths, args.scale, 240, args.cache_dir)
    except data.DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    start = GPGMNet(scale=args.scale)
    if args.init:
        initialise_from(start, args.init)
    print(f"x{args.scale}, batch {args.batch_size}, HR patch {args.hr_patch}, {args.steps} steps, "
          f"torch threads {torch.get_num_threads()}, CPU bf16: {cpu_has_bf16()}")

    def run(dtype: torch.dtype | None) -> tuple[list[float], float, float]:
        network = copy.deepcopy(start).train().to(memory_format=torch.channels_last)
        optimizer = torch.optim.Adam(network.parameters(), lr=args.lr)
        losses, seconds = [], 0.0
        for step in range(args.steps):
            lr, hr, _ = batches[step]
            t = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
                prediction = network(lr.contiguous(memory_format=torch.channels_last))
            loss = F.mse_loss(prediction.float(), hr)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if step:  # the first step warms up oneDNN's kernels
                seconds += time.perf_counter() - t
            losses.append(float(loss))
        validation = lambda: ((s.lr, s.hr, "bt2446a", 0) for s in samples)  # noqa: E731
        return losses, seconds / max(args.steps - 1, 1), validation_psnr(network, validation, torch.device("cpu"))

    fp32, fp32_time, fp32_psnr = run(None)
    bf16, bf16_time, bf16_psnr = run(torch.bfloat16)
    print(f"{'steps':>12} {'fp32 loss':>12} {'bf16 loss':>12} {'bf16/fp32':>10}")
    for first in range(0, args.steps, args.window):
        a, b = np.mean(fp32[first : first + args.window]), np.mean(bf16[first : first + args.window])
        print(f"{first + 1:>5}-{min(first + args.window, args.steps):<6} {a:12.4e} {b:12.4e} {b / a:10.3f}")
    print(f"validation PSNR after {args.steps} steps: fp32 {fp32_psnr:.2f} dB, bf16 {bf16_psnr:.2f} dB "
          f"({bf16_psnr - fp32_psnr:+.2f} dB)")
    print(f"seconds per step: fp32 {fp32_time:.3f}, bf16 {bf16_time:.3f}; fp32 / bf16 = {fp32_time / bf16_time:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
