"""The network step of the ``gpu-torch`` repository: GPGMNet in PyTorch, in the Python backend, on a GPU.

For GPU servers without the TensorRT backend (where it is present, the
``tensorrt_plan`` repository of ``--target gpu`` is the one to serve).
``build/assemble_repository.py --target gpu-torch`` writes a two-line ``1/model.py`` that
re-exports :class:`TritonPythonModel` from here and a ``KIND_GPU`` config with
the same tensors as the other targets: ``LR_YUV`` FP32 [1, 3, h, w] in,
``RESIDUAL`` FP32 [1, 3, sh, sw] out (the network without its bicubic skip,
which the post-processor adds).

Tensors come in and go out through DLPack, so a tensor already on the GPU is
never copied through the host. Config parameters (all strings):

``scale``
    2 or 4 (default: from the model name ``gpgmnet_x{s}``).
``checkpoint``
    a GPGMNet checkpoint (:mod:`gpgmnet.checkpoint`); a relative path is taken
    from the model's folder. Empty (default): the shipped ``weights/gpgmnet_x{s}.pt``.
    Without weights the model refuses to load, unless ``random_weights`` is ``yes``.
``random_weights``
    ``yes``: serve the seeded untrained network when no checkpoint is found
    (tests and pipeline plumbing only; the outputs are meaningless). Default ``no``.
``precision``
    ``fp16`` (default, as the TensorRT engine), ``bf16``, ``tf32`` or ``fp32``
    (strict: TF32 off). The network's weights and activations are cast; the
    residual goes out as FP32.
``channels_last``
    ``yes`` (default) or ``no``: NHWC activations, which cuDNN's tensor-core
    convolutions prefer.
``cudnn_benchmark``
    ``yes`` (default): cuDNN picks its fastest kernels for each new frame size
    (the first frame of a size pays for it; a stream keeps its size).

The device is the instance's GPU (``KIND_GPU``); a ``KIND_CPU`` instance runs
on the CPU, which only tests and debugging want.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
import triton_python_backend_utils as pb_utils

from gpgmnet.checkpoint import load_network
from sritm_core.contract import NETWORK_OUTPUT_NAME, check_scale
from sritm_serving import processing_torch, triton_util

PRECISIONS = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _flag(value: str, name: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("yes", "true", "1", "on"):
        return True
    if lowered in ("no", "false", "0", "off"):
        return False
    raise ValueError(f"parameter {name} must be yes or no, not {value!r}")


class TritonPythonModel:
    """The PyTorch network step: the residual of each request's ``LR_YUV`` and ``CONDITION``, on the instance's GPU."""

    def initialize(self, args: dict[str, Any]) -> None:
        """Reads the config's parameters, picks the device and loads the checkpoint at the configured precision."""
        config = triton_util.model_config(args)
        parameters = triton_util.config_parameters(config)
        model_dir = Path(args["model_repository"])
        self.limits = triton_util.frame_limits(parameters)

        match = re.fullmatch(r"gpgmnet_x(\d+)", args.get("model_name", config.get("name", "")))
        scale = int(parameters.get("scale") or (match.group(1) if match else 0))
        check_scale(scale)
        precision = parameters.get("precision", "fp16").strip().lower()
        if precision not in PRECISIONS:
            raise ValueError(f"parameter precision must be one of {sorted(PRECISIONS)}, not {precision!r}")
        self.dtype = PRECISIONS[precision]
        channels_last = _flag(parameters.get("channels_last", "yes"), "channels_last")
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

        if str(args.get("model_instance_kind", "")).upper() == "GPU":
            if not torch.cuda.is_available():
                raise RuntimeError(
                    f"{config.get('name')}: KIND_GPU instance but torch {torch.__version__} sees no CUDA device"
                )
            self.device = torch.device("cuda", int(args.get("model_instance_device_id", 0)))
            torch.cuda.set_device(self.device)
            torch.backends.cudnn.benchmark = _flag(parameters.get("cudnn_benchmark", "yes"), "cudnn_benchmark")
            torch.backends.cudnn.allow_tf32 = precision != "fp32"
            torch.backends.cuda.matmul.allow_tf32 = precision != "fp32"
        else:
            self.device = torch.device("cpu")

        checkpoint = parameters.get("checkpoint", "").strip()
        path = None
        if checkpoint:
            path = Path(checkpoint)
            if not path.is_absolute():
                path = model_dir / path
        random_weights = _flag(parameters.get("random_weights") or "no", "random_weights")
        network, self.metadata = load_network(path, scale, random_weights=random_weights)
        network.bicubic_skip = False
        network = network.to(self.device, self.dtype)
        # Module.to takes memory_format (converting 4-D weights); torch's stubs do not list it.
        self.network = network.to(memory_format=self.memory_format).eval()  # type: ignore[call-overload]
        self.scale = scale

    def execute(self, requests: list[Any]) -> list[Any]:
        """Answers each request with its ``RESIDUAL``, or with ``INVALID_ARGUMENT`` for an input out of bounds."""
        return triton_util.network_responses(pb_utils, requests, self.limits, self._residual)

    def _residual(self, tensor: Any, condition: Any) -> Any:
        network_input = processing_torch.from_triton(tensor)
        x = network_input.to(self.device, self.dtype).contiguous(memory_format=self.memory_format)
        with torch.inference_mode():
            convention = torch.from_numpy(condition).to(self.device, self.dtype) if self.network.conventions else None
            residual = self.network(x, convention).to(torch.float32)
        return processing_torch.to_triton(pb_utils, NETWORK_OUTPUT_NAME, residual)

    def finalize(self) -> None:
        """Drops the network and returns the GPU memory PyTorch cached for it."""
        self.network = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
