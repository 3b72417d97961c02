"""The ways of running the network that are timed: precision, memory format, execution mode."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Variant:
    """One way of running the network: precision, memory format, execution mode."""

    precision: str  # fp32 (strict) | tf32 | fp16 | bf16
    channels_last: bool = False
    mode: str = "eager"  # eager | autocast | cudagraph | compile | compile-cudagraphs

    @property
    def name(self) -> str:
        """The variant's name in the report, e.g. ``bf16-cl-cudagraph``."""
        parts = [self.precision] + (["cl"] if self.channels_last else [])
        return "-".join(parts + ([self.mode] if self.mode != "eager" else []))

    @property
    def half(self) -> bool:
        """Whether it computes in fp16 or bf16 (and must then pass the parity floor)."""
        return self.precision in ("fp16", "bf16")

    @property
    def weight_dtype(self) -> torch.dtype:
        """The dtype of the weights and of the input (fp32 under autocast)."""
        if self.mode == "autocast" or not self.half:
            return torch.float32
        return torch.float16 if self.precision == "fp16" else torch.bfloat16

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype it computes in (autocast's target)."""
        return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision, torch.float32)

    @property
    def memory_format(self) -> torch.memory_format:
        """channels_last or the contiguous (NCHW) format."""
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def unsupported_on(self, device: torch.device) -> str | None:
        """Why the variant cannot run on ``device``, or None when it can."""
        if device.type != "cuda" and self.precision == "tf32":
            return "TF32 needs CUDA"
        if device.type != "cuda" and self.mode in ("cudagraph", "compile-cudagraphs"):
            return "CUDA graphs need CUDA"
        return None


REFERENCE = Variant("fp32")
EAGER_VARIANTS = (
    Variant("fp32"), Variant("fp32", True), Variant("tf32"), Variant("tf32", True),
    Variant("fp16"), Variant("fp16", True), Variant("bf16"), Variant("bf16", True),
    Variant("fp16", True, "autocast"), Variant("bf16", True, "autocast"),
)
GRAPH_VARIANTS = (
    Variant("fp16", True, "cudagraph"), Variant("bf16", True, "cudagraph"), Variant("tf32", True, "cudagraph"),
)
COMPILE_VARIANTS = (
    Variant("bf16", True, "compile"), Variant("bf16", True, "compile-cudagraphs"),
    Variant("fp16", True, "compile"), Variant("fp16", True, "compile-cudagraphs"),
)
SWEEP_VARIANTS = (Variant("bf16", True), Variant("fp16", True), Variant("bf16", True, "cudagraph"),
                  Variant("fp16", True, "cudagraph"))
QUICK_EAGER_VARIANTS = (
    Variant("fp32"), Variant("fp32", True), Variant("bf16", True), Variant("fp16", True, "autocast"),
)
"""--quick: one variant per code path (cast, channels_last, autocast); half precision is slow on a CPU."""
