"""Stage 1: the network's FLOPs per frame (as served: no bicubic skip), counted on the meta device, and the floor."""

from __future__ import annotations

from typing import Any

from build.gpu_check.config import FULL_SIZES
from gpgmnet.flops import count_flops


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
