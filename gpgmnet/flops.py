"""GPGMNet's floating-point operations per frame, counted by ``torch.utils.flop_counter`` on the meta device.

The meta device computes shapes only, so a 4K frame costs nothing to count.
Used by the GPU check (``build/gpu_check``) and ``make bench`` (``loadtest/bench.py``),
which divide measured times by it.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode


def count_flops(network: Any, size: tuple[int, int], batch: int = 1) -> dict[str, Any]:
    """FLOPs of one forward (the residual, as served) on the meta device: total and per top-level block."""
    meta = copy.deepcopy(network).to("meta")
    meta.bicubic_skip = False
    with torch.no_grad(), FlopCounterMode(display=False, depth=3) as counter:
        meta(torch.empty(batch, 3, *size, device="meta"))
    counts = {name: sum(per_op.values()) for name, per_op in counter.get_flop_counts().items()}
    blocks: dict[str, int] = {}
    for child, _ in network.named_children():
        name = f"GPGMNet.{child}"
        if name in counts:
            blocks[child] = counts[name]
        else:  # a ModuleList (the body) is never called itself: add up its members
            blocks[child] = sum(v for k, v in counts.items() if k.startswith(name + ".") and k.count(".") == 2)
    return {"total": counter.get_total_flops(), "blocks": blocks}
