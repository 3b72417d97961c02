"""Stage 1: the network's FLOPs per frame (as served: no bicubic skip), counted on the meta device, and the floor."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from build.gpu_check.config import FULL_SIZES


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


def flops_entry(network: Any, scale: int, size: tuple[int, int], peak: float | None) -> tuple[float, dict[str, Any]]:
    """FLOPs per frame at ``size``, and the report's ``flops`` entry (with the full size's count and floor)."""
    counted = count_flops(network, size)
    full = counted if size == FULL_SIZES[scale] else count_flops(network, FULL_SIZES[scale])
    return counted["total"], {
        "size": list(size),
        "tflop_per_frame": counted["total"] / 1e12,
        "blocks_gflop": {k: v / 1e9 for k, v in counted["blocks"].items()},
        "full_size": list(FULL_SIZES[scale]),
        "tflop_per_frame_full_size": full["total"] / 1e12,
        "floor_ms_full_size": 1000 * full["total"] / (peak * 1e12) if peak else None,
    }
