"""What the figures were measured on: Python, torch, numpy, OpenCV, the GPU and its driver, the commit."""

from __future__ import annotations

import os
import platform
import subprocess
from typing import Any

import numpy as np
import torch

from build.gpu_check.config import MEASURED_BF16_TFLOPS, ROOT


def environment(device: torch.device) -> dict[str, Any]:
    """The report's ``environment``: versions, the device, and on a GPU its properties and ``nvidia-smi``'s view."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "numpy": np.__version__,
        "device": str(device),
        "cpu_count": os.cpu_count(),
    }
    try:
        import cv2

        info["opencv"] = cv2.__version__
    except ImportError:
        info["opencv"] = None
    if device.type == "cuda":
        info.update(_gpu(device))
    try:
        info["git_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["git_commit"] = None
    return info


def _gpu(device: torch.device) -> dict[str, Any]:
    """The GPU's name, compute capability, size, cuDNN version, and driver, clock and power limit."""
    properties = torch.cuda.get_device_properties(device)
    info: dict[str, Any] = {
        "gpu": properties.name,
        "compute_capability": f"{properties.major}.{properties.minor}",
        "multiprocessors": properties.multi_processor_count,
        "gpu_memory_gib": round(properties.total_memory / 2**30, 1),
        "cudnn": torch.backends.cudnn.version(),
    }
    try:
        query = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm,power.limit", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10,
        )
        info["nvidia_smi"] = query.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["nvidia_smi"] = None
    return info


def peak_tflops(given: float | None, gpu_name: str) -> float | None:
    """The GPU's dense bf16 TFLOP/s: ``--peak-tflops``, else the rate measured for its kind, else None."""
    return given or next((v for k, v in MEASURED_BF16_TFLOPS.items() if k in gpu_name), None)
