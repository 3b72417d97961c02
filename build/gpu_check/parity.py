"""Stage 3: parity. Each variant's output through the served post-processing, against the fp32 reference's."""

from __future__ import annotations

import math
import statistics
from typing import TYPE_CHECKING, Any

import torch

from build.gpu_check.config import PARITY_FLOOR_DB
from build.gpu_check.runners import Networks, Runner, build_runner, precision_flags
from build.gpu_check.variants import REFERENCE
from sritm_serving import processing_torch

if TYPE_CHECKING:
    from build.gpu_check.session import Session


def _as_float64(codes: torch.Tensor) -> torch.Tensor:
    """10-bit codes as float64 (uint16 has few kernels in torch; 10-bit codes are the same bits as int16)."""
    return (codes.view(torch.int16) if codes.dtype == torch.uint16 else codes).to(torch.float64)


def psnr_10bit(a: torch.Tensor, b: torch.Tensor) -> dict[str, Any]:
    """PSNR (dB, peak 1023) between two arrays of 10-bit codes, their largest difference, the fraction that differ."""
    difference = _as_float64(a) - _as_float64(b)
    mse = float((difference * difference).mean())
    return {
        "psnr_db": 10 * math.log10(1023.0**2 / mse) if mse > 0 else math.inf,
        "max_code_difference": int(difference.abs().max()),
        "fraction_differing": float((difference != 0).to(torch.float64).mean()),
    }


class Parity:
    """Per scale: the frames' network inputs and the fp32 reference's 10-bit output, then each variant's PSNR.

    Args:
        device: where the network runs.
        scale: the scale.
        frames: the parity frames, 8-bit I420.
        networks: the scale's network copies.
    """

    def __init__(self, device: torch.device, scale: int, frames: list[Any], networks: Networks) -> None:
        self.device, self.scale = device, scale
        self.inputs = [processing_torch.network_input_from_i420(torch.from_numpy(f).to(device)) for f in frames]
        reference = build_runner(networks, REFERENCE, self.inputs[0])
        self.reference = [self.codes(reference, x) for x in self.inputs]
        self.results: dict[str, Any] = {}

    def codes(self, runner: Runner, x: torch.Tensor) -> torch.Tensor:
        """The 10-bit I420 output of ``runner`` for the input ``x``, post-processed as served."""
        with torch.no_grad(), precision_flags(runner.variant):
            residual = runner.run(runner.prepare(x)).to(torch.float32).clone()
        return processing_torch.postprocess(x, residual, self.scale)

    def check(self, runner: Runner) -> dict[str, Any]:
        """``runner``'s PSNR against the reference over the frames; a half-precision one must pass the floor."""
        per_frame = [psnr_10bit(self.codes(runner, x), ref) for x, ref in zip(self.inputs, self.reference)]
        psnrs = [p["psnr_db"] for p in per_frame]
        result = {
            "min_psnr_db": min(psnrs),
            "mean_psnr_db": statistics.fmean(psnrs) if all(math.isfinite(p) for p in psnrs) else math.inf,
            "max_code_difference": max(p["max_code_difference"] for p in per_frame),
            "fraction_differing": statistics.fmean(p["fraction_differing"] for p in per_frame),
            "identical": all(p["max_code_difference"] == 0 for p in per_frame),
            "frames": len(per_frame),
        }
        if runner.variant.half:
            result["passes_50db"] = min(psnrs) > PARITY_FLOOR_DB
        self.results[runner.variant.name] = result
        return result


def start_parity(session: Session, scale: int) -> None:
    """Compute ``scale``'s fp32 reference outputs, where there are parity frames for it."""
    if scale not in session.frames:
        return
    with session.report.stage(f"parity reference x{scale}"):
        session.parities[scale] = Parity(session.device, scale, session.frames[scale], session.networks[scale])
        session.data["parity"][f"x{scale}"] = {"reference": REFERENCE.name, "floor_db": PARITY_FLOOR_DB}


def check_parity(session: Session, scale: int, runner: Runner) -> None:
    """Record ``runner``'s parity at ``scale`` (if it has a reference); under the floor fails a full run."""
    if scale not in session.parities:
        return
    with session.report.stage(f"parity x{scale} {runner.variant.name}"):
        result = session.parities[scale].check(runner)
        session.data["parity"].setdefault(f"x{scale}", {})[runner.variant.name] = result
        if result.get("passes_50db") is False and not session.quick:
            session.data["ok"] = False
