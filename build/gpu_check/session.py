"""What the stages share: the device, the sizes, each scale's network and FLOPs, the frames, the runners, the parity.

:func:`open_session` also runs the first stage: the environment, the weights and the FLOPs of each scale.
"""

from __future__ import annotations

import argparse
import platform
from dataclasses import dataclass, field
from typing import Any

import torch

from build.gpu_check.config import FULL_SIZES, QUICK_SIZES
from build.gpu_check.environment import environment, peak_tflops
from build.gpu_check.flops import flops_entry
from build.gpu_check.frames import Frames, Sizes
from build.gpu_check.parity import Parity
from build.gpu_check.report import Report
from build.gpu_check.runners import Networks, Runner
from gpgmnet.checkpoint import load_network


@dataclass
class Session:
    """The state of one run, filled in stage by stage.

    Args:
        args: the parsed command line.
        report: where every figure, skip and error goes.
        device: where the network runs.
        scales: the scales checked, in order.
        sizes: the low-resolution input size timed at each scale.
        peak: the GPU's dense bf16 TFLOP/s (None: unknown, no FLOP floor).
        networks: each scale's network and its per-variant copies.
        flops: each scale's FLOPs per frame at its size.
        frames: the parity frames (8-bit I420) by scale; empty when none could be made.
        examples: a random fp32 input per scale, for timing without parity frames.
        parities: each scale's fp32 reference outputs, where there are frames.
        runners: the batch-1 runners built so far, by (scale, variant name).
    """

    args: argparse.Namespace
    report: Report
    device: torch.device
    scales: tuple[int, ...]
    sizes: Sizes
    peak: float | None = None
    networks: dict[int, Networks] = field(default_factory=dict)
    flops: dict[int, float] = field(default_factory=dict)
    frames: Frames = field(default_factory=dict)
    examples: dict[int, torch.Tensor] = field(default_factory=dict)
    parities: dict[int, Parity] = field(default_factory=dict)
    runners: dict[tuple[int, str], Runner] = field(default_factory=dict)

    @property
    def data(self) -> dict[str, Any]:
        """The report's data."""
        return self.report.data

    @property
    def quick(self) -> bool:
        """Whether this is a ``--quick`` (or ``--dry-run``) run."""
        return bool(self.args.quick)

    def free_cached_memory(self) -> None:
        """Return the CUDA caching allocator's unused blocks (nothing to do on the CPU)."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def open_session(args: argparse.Namespace, report: Report) -> Session:
    """Set up the device, record the environment and the FLOP rate, load each scale's network and count its FLOPs."""
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    elif args.quick:
        torch.set_num_threads(1)  # the figures mean nothing here; one thread stays quick on a shared machine
    scales = tuple(args.scale or (4, 2))
    sizes = {s: args.size or (QUICK_SIZES if args.quick else FULL_SIZES)[s] for s in scales}
    session = Session(args, report, device, scales, sizes)
    data = report.data
    data["environment"] = environment(device)
    report.log(f"device {device}: {data['environment'].get('gpu', platform.processor() or 'cpu')}, "
               f"torch {torch.__version__}")
    session.peak = data["peak_tflops"] = peak_tflops(args.peak_tflops, data["environment"].get("gpu") or "")
    if session.peak is None:
        report.skip("ratio to the FLOP floor", "unknown dense bf16 rate for this device: pass --peak-tflops")
    for scale in scales:
        load_scale(session, scale)
    return session


def load_scale(session: Session, scale: int) -> None:
    """Load ``scale``'s network (the shipped weights, else the seeded untrained one) and count its FLOPs."""
    network, metadata = load_network(None, scale, random_weights=True)
    session.data["weights"][f"x{scale}"] = {k: v for k, v in metadata.items() if isinstance(v, (str, int, float))}
    session.networks[scale] = Networks(network, session.device)
    with session.report.stage(f"FLOPs x{scale}"):
        session.flops[scale], entry = flops_entry(network, scale, session.sizes[scale], session.peak)
        session.data["flops"][f"x{scale}"] = entry
        session.report.log(f"x{scale}: {entry['tflop_per_frame']:.4f} TFLOP per frame at {session.sizes[scale]}; "
                           f"{entry['tflop_per_frame_full_size']:.3f} at {FULL_SIZES[scale]}")
