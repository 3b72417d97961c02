"""Stage 5: ONNX Runtime. Whether its CUDA provider is here; if so, the exported graph timed and checked on it."""

from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from build.gpu_check.parity import Parity, psnr_10bit
from build.gpu_check.timing import time_callable
from sritm_core.contract import NETWORK_CONDITION_NAME, NETWORK_INPUT_NAME, NETWORK_OUTPUT_NAME, Rendering
from sritm_serving import processing_torch

if TYPE_CHECKING:
    from build.gpu_check.session import Session


def check_onnxruntime(session: Session) -> None:
    """The report's ``onnxruntime``, for ×4 (else the first scale), while the budget allows."""
    scale = 4 if 4 in session.scales else session.scales[0]
    if session.report.enough_time("onnxruntime", 30):
        with session.report.stage("onnxruntime"):
            session.data["onnxruntime"] = onnxruntime_figures(session, scale)
            provider = "present" if session.data["onnxruntime"].get("cuda_provider") else "absent"
            session.report.log(f"onnxruntime: CUDA provider {provider}")


def onnxruntime_figures(session: Session, scale: int) -> dict[str, Any]:
    """ONNX Runtime's version and providers; on a GPU with its CUDA provider, the timing and parity of ``scale``."""
    network, flops_per_frame = session.networks[scale].network, session.flops[scale]
    parity = session.parities.get(scale)
    try:
        import onnxruntime as ort  # optional: only the onnxruntime-gpu build has the CUDA provider
    except ImportError:
        return {"installed": False, "cuda_provider": False}
    providers = ort.get_available_providers()
    result: dict[str, Any] = {
        "installed": True,
        "version": ort.__version__,
        "available_providers": providers,
        "cuda_provider": "CUDAExecutionProvider" in providers,
        "tensorrt_provider": "TensorrtExecutionProvider" in providers,
    }
    if not result["cuda_provider"] or session.device.type != "cuda":
        result["note"] = "no CUDAExecutionProvider here (the onnxruntime-gpu build provides it): not timed"
        return result
    with tempfile.TemporaryDirectory() as work:
        inference = _cuda_session(ort, network, Path(work) / "gpgmnet.onnx", session.device)
        result["session_providers"] = inference.get_providers()
        if inference.get_providers()[0] != "CUDAExecutionProvider":
            result["note"] = "the CUDA provider did not load (missing CUDA/cuDNN libraries?): not timed"
            return result
        result.update(_time_on_cuda(inference, network.scale, parity, session.sizes[scale], session.device,
                                    session.args, flops_per_frame, session.peak))
    return result


def _cuda_session(ort: Any, network: Any, path: Path, device: torch.device) -> Any:
    """Export ``network`` to ``path`` and open it on the CUDA provider (falling back to the CPU one)."""
    from build.export_onnx import export_onnx  # here: it needs onnx, which only this stage does

    export_onnx(copy.deepcopy(network).cpu().float(), path)
    return ort.InferenceSession(
        str(path),
        providers=[("CUDAExecutionProvider", {"device_id": device.index or 0, "cudnn_conv_algo_search": "EXHAUSTIVE"}),
                   "CPUExecutionProvider"],
    )


def _time_on_cuda(inference: Any, scale: int, parity: Parity | None, size: tuple[int, int], device: torch.device,
                  args: argparse.Namespace, flops_per_frame: float, peak_tflops: float | None) -> dict[str, Any]:
    """``timing`` (device tensors bound in and out) and, with a parity reference, ``parity_vs_fp32``."""
    from sritm_serving.processing import condition_one_hot

    index = device.index or 0
    x = parity.inputs[0] if parity is not None else torch.rand(1, 3, *size, device=device)
    output = torch.empty(1, 3, scale * x.shape[2], scale * x.shape[3], device=device)
    binding = inference.io_binding()  # device tensors in and out: no host copies in the timing
    binding.bind_input(NETWORK_INPUT_NAME, "cuda", index, np.float32, tuple(x.shape), x.data_ptr())
    condition = torch.from_numpy(condition_one_hot(Rendering())).to(device)
    binding.bind_input(NETWORK_CONDITION_NAME, "cuda", index, np.float32, tuple(condition.shape), condition.data_ptr())
    binding.bind_output(NETWORK_OUTPUT_NAME, "cuda", index, np.float32, tuple(output.shape), output.data_ptr())

    def run() -> None:
        inference.run_with_iobinding(binding)

    stats = time_callable(device, run, args.warmup, args.runs, args.target_s)
    ms = stats["median_ms"]
    result: dict[str, Any] = {"timing": {
        **stats,
        "size": list(x.shape[2:]),
        "fps": 1000 / ms,
        "ratio_to_floor": ms / (1000 * flops_per_frame / (peak_tflops * 1e12)) if peak_tflops else None,
    }}
    if parity is not None:
        run()
        torch.cuda.synchronize(device)
        codes = processing_torch.postprocess(x, output, scale)
        result["parity_vs_fp32"] = psnr_10bit(codes, parity.reference[0])
    return result
