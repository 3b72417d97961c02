"""Stage 4: post-processing (and pre-processing) in torch on the device, against the CPU server's numpy path."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.utils.dlpack

from build.gpu_check.frames import synthetic_frames
from build.gpu_check.parity import psnr_10bit
from build.gpu_check.report import Report
from build.gpu_check.runners import build_runner, precision_flags
from build.gpu_check.timing import time_callable
from build.gpu_check.variants import REFERENCE
from sritm_serving import processing_torch

if TYPE_CHECKING:
    from build.gpu_check.session import Session


def check_postprocessing(session: Session) -> None:
    """Per scale, while the budget allows: time and compare the torch and numpy pre- and post-processing."""
    for scale in session.scales:
        if not session.report.enough_time(f"post-processing x{scale}", 20):
            continue
        with session.report.stage(f"post-processing x{scale}"):
            compare_postprocessing(session, scale)


def compare_postprocessing(session: Session, scale: int) -> None:
    """Post-process the fp32 reference's residual of a parity frame (else a random input) both ways; record it."""
    parity = session.parities.get(scale)
    x = parity.inputs[0] if parity else session.examples[scale]
    frame = session.frames[scale][0] if scale in session.frames else synthetic_frames(session.sizes[scale], 1)[0]
    runner = session.runners.get((scale, REFERENCE.name)) or build_runner(session.networks[scale], REFERENCE, x,
                                                                           session.args.compile_backend)
    with torch.no_grad(), precision_flags(REFERENCE):
        residual = runner.run(runner.prepare(x)).float().clone()
    post = postprocess_figures(session.device, scale, x, residual, frame, session.args, session.report)
    session.data["postprocess"][f"x{scale}"] = post
    session.report.log(f"x{scale} post-processing: torch {post['torch']['post_float64_ms']:.2f} ms vs numpy "
                       f"{post['cpu_numpy']['post_ms']:.1f} ms; pre {post['torch']['pre_ms']:.2f} vs "
                       f"{post['cpu_numpy']['pre_ms']:.1f} ms; max code difference "
                       f"{post['equality']['post_float64_vs_numpy']['max_code_difference']}")


def postprocess_figures(
    device: torch.device, scale: int, x: torch.Tensor, residual: torch.Tensor, frame: Any, args: argparse.Namespace,
    report: Report,
) -> dict[str, Any]:
    """Times and equality of both paths for one frame (``x`` its network input); a mismatch fails the run."""
    from sritm_serving import processing  # here: it needs OpenCV, which only this stage does

    result: dict[str, Any] = {"scale": scale, "input_size": list(x.shape[2:]), "output_size": list(residual.shape[2:])}
    warmup, runs, target = args.warmup, max(args.runs // 2, 5), args.target_s / 2

    def timed(fn: Callable[[], Any]) -> float:
        return float(time_callable(device, fn, warmup, runs, target)["median_ms"])

    device_frame = torch.from_numpy(frame).to(device)
    result["device"] = str(device)
    result["torch"] = _torch_timings(timed, device, scale, x, residual, frame, device_frame)
    hdr64 = processing_torch.postprocess(x, residual, scale, torch.float64)
    hdr32 = processing_torch.postprocess(x, residual, scale, torch.float32)
    result["dlpack_round_trip_ok"] = _dlpack_round_trips_ok((device_frame, x, hdr64))
    if device.type == "cuda":
        result["torch"]["download_hdr_uint16_ms"] = timed(lambda: hdr64.cpu())
        result["torch"]["download_residual_fp32_ms"] = timed(lambda: residual.cpu())
        pinned = torch.empty(hdr64.shape, dtype=hdr64.dtype, pin_memory=True)
        result["torch"]["download_hdr_uint16_pinned_ms"] = timed(lambda: pinned.copy_(hdr64))
    result["bytes"] = {"residual_fp32": residual.numel() * 4, "hdr_uint16": hdr64.numel() * 2}

    x_np, residual_np = x.cpu().numpy(), residual.cpu().numpy()
    expected = processing.postprocess(x_np, residual_np, scale)
    result["cpu_numpy"] = _numpy_timings(scale, x_np, residual_np, frame, runs=2 if args.quick else 3)
    result["speedup_post"] = result["cpu_numpy"]["post_ms"] / result["torch"]["post_float64_ms"]
    result["speedup_pre"] = result["cpu_numpy"]["pre_ms"] / result["torch"]["pre_ms"]
    pre_equal = np.array_equal(processing_torch.network_input_from_i420(device_frame).cpu().numpy(),
                               processing.network_input_from_i420(frame))
    result["equality"] = {
        "pre_bit_exact": bool(pre_equal),
        "post_float64_vs_numpy": psnr_10bit(hdr64.cpu(), torch.from_numpy(expected.astype(np.int32))),
        "post_float32_vs_numpy": psnr_10bit(hdr32.cpu(), torch.from_numpy(expected.astype(np.int32))),
    }
    worst = max(result["equality"][k]["max_code_difference"]
                for k in ("post_float64_vs_numpy", "post_float32_vs_numpy"))
    result["equality"]["within_one_code"] = worst <= 1
    if not (pre_equal and worst <= 1 and result["dlpack_round_trip_ok"]):
        report.data["ok"] = False
    return result


def _torch_timings(timed: Callable[[Callable[[], Any]], float], device: torch.device, scale: int, x: torch.Tensor,
                   residual: torch.Tensor, frame: Any, device_frame: torch.Tensor) -> dict[str, float]:
    """Milliseconds of each step of the torch pre- and post-processing on the device."""
    return {
        "pre_ms": timed(lambda: processing_torch.network_input_from_i420(device_frame)),
        "pre_with_upload_ms": timed(
            lambda: processing_torch.network_input_from_i420(torch.from_numpy(frame).to(device))),
        "bicubic_skip_ms": timed(lambda: processing_torch.bicubic_upsample(x, scale) + residual),
        "quantise_420_pack_float64_ms": timed(
            lambda: processing_torch.i420_from_network_output(residual, torch.float64)),
        "post_float64_ms": timed(lambda: processing_torch.postprocess(x, residual, scale, torch.float64)),
        "post_float32_ms": timed(lambda: processing_torch.postprocess(x, residual, scale, torch.float32)),
        "post_float32_no_nan_check_ms": timed(
            lambda: processing_torch.postprocess(x, residual, scale, torch.float32, check_nan=False)),
    }


def _dlpack_round_trips_ok(tensors: tuple[torch.Tensor, ...]) -> bool:
    """What the Python backend does with the served tensors: DLPack out and in, no copy, the same bytes."""
    round_trips = []
    for tensor in tensors:
        back = torch.utils.dlpack.from_dlpack(torch.utils.dlpack.to_dlpack(tensor))
        round_trips.append(back.data_ptr() == tensor.data_ptr() and back.dtype == tensor.dtype
                           and bool((back.view(torch.uint8) == tensor.view(torch.uint8)).all()))
    return all(round_trips)


def _numpy_timings(scale: int, x_np: Any, residual_np: Any, frame: Any, runs: int) -> dict[str, float]:
    """Milliseconds (median of ``runs``) of each step of the CPU server's numpy pre- and post-processing."""
    from sritm_serving import processing

    def cpu_timed(fn: Callable[[], Any]) -> float:
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            fn()
            times.append(1000 * (time.perf_counter() - started))
        return statistics.median(times)

    return {
        "pre_ms": cpu_timed(lambda: processing.network_input_from_i420(frame)),
        "bicubic_skip_ms": cpu_timed(lambda: residual_np + processing.bicubic_upsample(x_np, scale)),
        "quantise_420_pack_ms": cpu_timed(lambda: processing.i420_from_network_output(residual_np)),
        "post_ms": cpu_timed(
            lambda: processing.postprocess(x_np, residual_np, scale)),
    }
