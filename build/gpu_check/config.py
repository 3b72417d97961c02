"""What the check measures: sizes, batches, the GPUs' bf16 rates, the parity floor (no torch here)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""The repository root."""
DEFAULT_SAMPLE = ROOT / "client" / "samples" / "sdr_sample.mp4"
FULL_SIZES = {4: (540, 960), 2: (1080, 1920)}
"""Low-resolution input sizes timed: both give a 2160×3840 frame."""
QUICK_SIZES = {4: (16, 16), 2: (16, 16)}
FULL_BATCHES = {4: (2, 4, 8), 2: (2, 4)}
QUICK_BATCHES = {4: (2,), 2: (2,)}
MEASURED_BF16_TFLOPS = {"H200": 790.0, "H100": 790.0}
"""Dense bf16 rate by device name: an 8192³ bf16 matrix product measured on this workplace's H200 (spec: 989)."""
PARITY_FLOOR_DB = 50.0
