"""The numpy halves of the served pipeline, shared by the Triton models and the tests' reference.

``network_input_from_i420`` is the pre-processor's work and
``i420_from_network_output`` the post-processor's. Numpy and OpenCV only: the
Python-backend models import this without torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from gpgmnet import colour
from gpgmnet.contract import (
    NETWORK_INPUT_NAME,
    PREPROCESS_MODEL,
    FrameLayoutError,
    FrameLimits,
    check_network_input_shape,
    frame_limits_from_parameters,
)

SDR_CODE_SCALE = 255.0
"""GPGMNet's input is 8-bit codes / 255 (the convention of Kim et al.'s dataset)."""
HDR_CODE_SCALE = 1023.0
"""GPGMNet's output is 10-bit codes / 1023."""


def network_input_from_i420(i420: NDArray[np.uint8], dtype: type = np.float32) -> NDArray[np.floating[Any]]:
    """An 8-bit I420 frame (3H/2 × W) as the network's N×3×H×W YUV 4:4:4 input, codes / 255."""
    yuv444 = colour.i420_to_yuv444(i420)
    return np.ascontiguousarray((yuv444 / SDR_CODE_SCALE).transpose(2, 0, 1)[np.newaxis], dtype=dtype)


def bicubic_upsample(network_input: NDArray[np.float32], scale: int) -> NDArray[np.float32]:
    """Eq. 1's Bic(I_L) on a 1×3×h×w array: the same result as ``gpgmnet.arch.bicubic_upsample``.

    OpenCV's INTER_CUBIC uses the same kernel (a = −0.75), half-pixel centres
    and clamped borders as ``torch.nn.functional.interpolate(mode="bicubic",
    align_corners=False)``; the two agree to ~4e-7 (tests/test_serving.py).
    """
    _, channels, height, width = network_input.shape
    planar = np.ascontiguousarray(network_input[0].transpose(1, 2, 0), dtype=np.float32)
    upsampled = cv2.resize(planar, (width * scale, height * scale), interpolation=cv2.INTER_CUBIC)
    return np.ascontiguousarray(upsampled.reshape(height * scale, width * scale, channels).transpose(2, 0, 1)[np.newaxis])


def i420_from_network_output(network_output: NDArray[np.floating[Any]]) -> NDArray[np.uint16]:
    """The network's 1×3×H×W output (10-bit codes / 1023, skip included) as a 10-bit I420 frame.

    Chroma is averaged to 4:2:0 in floating point first, so each stored code is
    rounded once; every code is then clamped to the narrow (legal) range, which
    keeps the PQ signal inside what HDR10 displays accept.
    """
    codes = network_output[0].transpose(1, 2, 0).astype(np.float64) * HDR_CODE_SCALE
    return colour.quantize_i420(codes, 10).astype(np.uint16, copy=False)


NETWORK_RUNTIMES = ("openvino", "onnxruntime")
"""How the CPU repository runs the exported graph; OpenVINO (f32) is the default: 1.21–1.25× ONNX Runtime's
throughput on the development CPU, same outputs within 4e-7 (``make bench``)."""


def make_network_runner(onnx_path: Path, runtime: str = "openvino", threads: int = 0) -> Any:
    """A function network_input (1×3×h×w float32) → residual, running ``onnx_path`` on the CPU.

    ``threads=0`` lets the runtime use every core. OpenVINO is asked for f32
    inference: its bf16 default on CPUs with AVX512-BF16 is ~2× faster again but
    moves outputs by about 2 of 1023 codes.
    """
    if runtime == "onnxruntime":
        from gpgmnet.contract import NETWORK_INPUT_NAME, NETWORK_OUTPUT_NAME

        session = make_onnx_session(onnx_path, threads)
        return lambda network_input: session.run([NETWORK_OUTPUT_NAME], {NETWORK_INPUT_NAME: network_input})[0]
    if runtime == "openvino":
        import openvino as ov

        core = ov.Core()
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        request = core.compile_model(core.read_model(str(onnx_path)), "CPU", config).create_infer_request()

        def run(network_input: NDArray[np.float32]) -> NDArray[np.float32]:
            request.infer({0: network_input})
            # The output tensor is the request's buffer, reused by the next call: copy it out.
            return np.array(request.get_output_tensor(0).data)

        return run
    raise ValueError(f"runtime must be one of {NETWORK_RUNTIMES}, not {runtime!r}")


def make_onnx_session(onnx_path: Path, intra_op_threads: int = 0) -> Any:
    """The ONNX Runtime session the CPU repository serves with; benchmarks use the same settings.

    ``intra_op_threads=0`` lets ONNX Runtime use every core.
    """
    import onnxruntime as ort  # only the CPU network step and benchmarks need it

    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])


TORCH_DEVICE_PARAMETER = "torch_device"
"""Config parameter of the pre/post-processors that forces their torch path onto a device ("cuda", "cuda:1", "cpu")."""


def processing_device(parameters: dict[str, str], args: dict[str, Any]) -> str | None:
    """Where a Python-backend pre/post-processor runs its torch path (:mod:`gpgmnet.serving_torch`).

    * the ``torch_device`` parameter of its config when set;
    * else ``cuda:N`` for a ``KIND_GPU`` instance on GPU N;
    * else ``None``: the numpy path on the host, switching to torch (on the
      tensor's GPU, through DLPack) only for a request whose tensors arrive in
      GPU memory, which Triton does only with ``FORCE_CPU_ONLY_INPUT_TENSORS``
      set to ``no`` and a producer on the GPU. A CPU server never imports torch.

    Args:
        parameters: the config's parameters as ``{key: string_value}``.
        args: the ``args`` of ``TritonPythonModel.initialize``.
    """
    device = parameters.get(TORCH_DEVICE_PARAMETER, "").strip()
    if device:
        return device
    if str(args.get("model_instance_kind", "")).upper() == "GPU":
        return f"cuda:{int(args.get('model_instance_device_id', 0))}"
    return None


def deployed_frame_limits(model_dir: Path) -> FrameLimits:
    """The frame limits of the repository ``model_dir`` sits in: the pre-processor's config, the one place they are set.

    The steps after the pre-processor (network, post-processor) check their
    inputs against the same limits, read from ``sritm_preprocess/config.pbtxt``
    beside them; a repository without it gets the defaults.
    """
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    config_path = Path(model_dir).resolve().parent / PREPROCESS_MODEL / "config.pbtxt"
    if not config_path.is_file():
        return FrameLimits()
    config = text_format.Parse(config_path.read_text(), model_config_pb2.ModelConfig())
    return frame_limits_from_parameters({key: value.string_value for key, value in config.parameters.items()})


def rejected_network_input(pb_utils: Any, tensor: Any, limits: FrameLimits) -> Any | None:
    """An INVALID_ARGUMENT response when a step's ``LR_YUV`` tensor breaks the frame limits, else None.

    Shared by the steps after the pre-processor (network models, post-processor);
    ``pb_utils`` is the Python backend's module, passed in so this file imports without Triton.
    """
    try:
        check_network_input_shape(tuple(tensor.shape()), limits)
    except FrameLayoutError as error:
        return pb_utils.InferenceResponse(
            error=pb_utils.TritonError(f"{NETWORK_INPUT_NAME}: {error}", pb_utils.TritonError.INVALID_ARG)
        )
    return None


def network_responses(pb_utils: Any, requests: list[Any], limits: FrameLimits, residual_tensor: Any) -> list[Any]:
    """The network models' ``execute``: per request, the frame-limit rejection, else the residual.

    ``residual_tensor`` maps the request's input tensor to the output ``pb_utils.Tensor``
    (how differs between the ONNX/OpenVINO and PyTorch models).
    """
    responses = []
    for request in requests:
        tensor = pb_utils.get_input_tensor_by_name(request, NETWORK_INPUT_NAME)
        rejection = rejected_network_input(pb_utils, tensor, limits)
        responses.append(
            rejection if rejection is not None else pb_utils.InferenceResponse(output_tensors=[residual_tensor(tensor)])
        )
    return responses
