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
    CONVENTION_NAME,
    CONVENTIONS,
    NETWORK_CONDITION_NAME,
    NETWORK_INPUT_NAME,
    NETWORK_PEAK_NITS,
    PEAK_NITS_NAME,
    PREPROCESS_MODEL,
    TARGET_PEAK_NAME,
    Rendering,
    RenderingError,
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


def i420_from_network_output(
    network_output: NDArray[np.floating[Any]], target_peak: float = NETWORK_PEAK_NITS
) -> NDArray[np.uint16]:
    """The network's 1×3×H×W output (10-bit codes / 1023, skip included) as a 10-bit I420 frame.

    Chroma is averaged to 4:2:0 in floating point first, so each stored code is
    rounded once; every code is then clamped to the narrow (legal) range, which
    keeps the PQ signal inside what HDR10 displays accept. A ``target_peak``
    below the network's 1000 cd/m^2 applies :func:`display_peak_codes` first.
    """
    codes = network_output[0].transpose(1, 2, 0).astype(np.float64) * HDR_CODE_SCALE
    if target_peak < NETWORK_PEAK_NITS:
        codes = display_peak_codes(codes, target_peak)
    return colour.quantize_i420(codes, 10).astype(np.uint16, copy=False)


def display_peak_codes(codes: NDArray[np.float64], target_peak: float) -> NDArray[np.float64]:
    """10-bit BT.2020 PQ Y'CbCr 4:4:4 codes of a 1000 cd/m^2 grade, re-mapped for a ``target_peak`` display.

    The ITU-R BT.2390 EETF (:func:`gpgmnet.colour.bt2390_eetf`) per R'G'B'
    channel, from the grade's 1000 cd/m^2 to ``target_peak``; mid-tones stay,
    highlights roll off. At or above 1000 cd/m^2 the grade already fits the
    display and is left as it is (the EETF only ever compresses).
    """
    if target_peak >= NETWORK_PEAK_NITS:
        return codes
    rgb = np.clip(colour.codes_to_rgb(codes, colour.BT2020, 10), 0.0, 1.0)
    mapped = colour.bt2390_eetf(rgb, source_peak=NETWORK_PEAK_NITS, target_peak=target_peak)
    return colour.rgb_to_codes(mapped, colour.BT2020, 10)


def condition_one_hot(rendering: Rendering, dtype: type = np.float32) -> NDArray[Any]:
    """The network's ``CONDITION`` input for a rendering: 1 × K one-hot of its convention."""
    one_hot = np.zeros((1, len(CONVENTIONS)), dtype=dtype)
    one_hot[0, rendering.convention_index] = 1
    return one_hot


def rendering_from_request(pb_utils: Any, request: Any) -> Rendering:
    """The request's optional ``CONVENTION`` and ``PEAK_NITS`` inputs as a :class:`Rendering` (defaults when absent).

    Raises:
        RenderingError: a value the service does not offer, or a tensor of the wrong shape or type.
    """
    convention = pb_utils.get_input_tensor_by_name(request, CONVENTION_NAME)
    peak = pb_utils.get_input_tensor_by_name(request, PEAK_NITS_NAME)
    fields: dict[str, Any] = {}
    if convention is not None:
        values = convention.as_numpy().reshape(-1)
        if values.size != 1:
            raise RenderingError(f"{CONVENTION_NAME} must hold one string, not {values.size}")
        value = values[0]
        try:
            fields["convention"] = value.decode("utf-8") if isinstance(value, bytes) else str(value)
        except UnicodeDecodeError:
            raise RenderingError(f"{CONVENTION_NAME} is not UTF-8 text; allowed: {', '.join(CONVENTIONS)}") from None
    if peak is not None:
        values = peak.as_numpy().reshape(-1)
        if values.size != 1 or values.dtype.kind != "f":
            raise RenderingError(f"{PEAK_NITS_NAME} must be one FP32 value, not {values.size} of {values.dtype}")
        fields["peak_nits"] = float(values[0])
    return Rendering(**fields)


def rendering_tensors(pb_utils: Any, rendering: Rendering) -> list[Any]:
    """The pre-processor's ``CONDITION`` and ``TARGET_PEAK`` outputs for a rendering."""
    return [
        pb_utils.Tensor(NETWORK_CONDITION_NAME, condition_one_hot(rendering)),
        pb_utils.Tensor(TARGET_PEAK_NAME, np.array([rendering.peak_nits], dtype=np.float32)),
    ]


def target_peak_from_request(pb_utils: Any, request: Any) -> float:
    """The post-processor's ``TARGET_PEAK`` (absent: the network's 1000 cd/m^2), checked like ``PEAK_NITS``."""
    tensor = pb_utils.get_input_tensor_by_name(request, TARGET_PEAK_NAME)
    if tensor is None:
        return NETWORK_PEAK_NITS
    values = tensor.as_numpy().reshape(-1)
    if values.size != 1:
        raise RenderingError(f"{TARGET_PEAK_NAME} must hold one value, not {values.size}")
    return Rendering(peak_nits=float(values[0])).peak_nits


NETWORK_RUNTIMES = ("openvino", "onnxruntime")
"""How the CPU repository runs the exported graph; OpenVINO (f32) is the default: 1.21–1.25× ONNX Runtime's
throughput on the development CPU, same outputs within 4e-7 (``make bench``)."""


def make_network_runner(onnx_path: Path, runtime: str = "openvino", threads: int = 0) -> Any:
    """A function (network_input 1×3×h×w, condition 1×K float32) → residual, running ``onnx_path`` on the CPU.

    ``threads=0`` lets the runtime use every core. OpenVINO is asked for f32
    inference: its bf16 default on CPUs with AVX512-BF16 is ~2× faster again but
    moves outputs by about 2 of 1023 codes.
    """
    if runtime == "onnxruntime":
        from gpgmnet.contract import NETWORK_OUTPUT_NAME

        session = make_onnx_session(onnx_path, threads)
        return lambda network_input, condition: session.run(
            [NETWORK_OUTPUT_NAME], {NETWORK_INPUT_NAME: network_input, NETWORK_CONDITION_NAME: condition}
        )[0]
    if runtime == "openvino":
        import openvino as ov

        core = ov.Core()
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        request = core.compile_model(core.read_model(str(onnx_path)), "CPU", config).create_infer_request()

        def run(network_input: NDArray[np.float32], condition: NDArray[np.float32]) -> NDArray[np.float32]:
            request.infer({NETWORK_INPUT_NAME: network_input, NETWORK_CONDITION_NAME: condition})
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


def network_condition(pb_utils: Any, request: Any) -> NDArray[np.float32]:
    """The network step's ``CONDITION`` (1 × K); absent (a direct caller): the default convention's one-hot.

    Raises:
        RenderingError: not a 1 × K one-hot.
    """
    tensor = pb_utils.get_input_tensor_by_name(request, NETWORK_CONDITION_NAME)
    if tensor is None:
        return condition_one_hot(Rendering())
    condition = np.asarray(tensor.as_numpy(), dtype=np.float32)
    if condition.shape != (1, len(CONVENTIONS)) or not (np.sort(condition[0]) == np.eye(len(CONVENTIONS))[-1]).all():
        raise RenderingError(f"{NETWORK_CONDITION_NAME} must be a 1×{len(CONVENTIONS)} one-hot, not {condition.tolist()}")
    return condition


def network_responses(pb_utils: Any, requests: list[Any], limits: FrameLimits, residual_tensor: Any) -> list[Any]:
    """The network models' ``execute``: per request, the frame-limit rejection, else the residual.

    ``residual_tensor(input_tensor, condition)`` maps the request's input tensor and its
    1 × K condition to the output ``pb_utils.Tensor`` (how differs between the
    ONNX/OpenVINO and PyTorch models).
    """
    responses = []
    for request in requests:
        tensor = pb_utils.get_input_tensor_by_name(request, NETWORK_INPUT_NAME)
        rejection = rejected_network_input(pb_utils, tensor, limits)
        if rejection is None:
            try:
                condition = network_condition(pb_utils, request)
            except RenderingError as error:
                rejection = invalid_argument(pb_utils, str(error))
        responses.append(
            rejection if rejection is not None
            else pb_utils.InferenceResponse(output_tensors=[residual_tensor(tensor, condition)])
        )
    return responses


def invalid_argument(pb_utils: Any, message: str) -> Any:
    """An ``INVALID_ARGUMENT`` response with ``message``."""
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG))
