"""Post-processor: Eq. 1's bicubic skip, PQ clamping to the legal range, 10-bit 4:2:0 output.

The network step returns its residual only (it is exported with
``bicubic_skip=False``); the skip is added here, from the pre-processed input,
with :func:`sritm_serving.processing.bicubic_upsample`, which matches the training-time
bicubic to ~4e-7.

Where the network runs on a GPU, its residual (FP32 at the output size, four
times the bytes of the finished 10-bit frame) stays there: with
``FORCE_CPU_ONLY_INPUT_TENSORS`` "no" Triton hands it over in GPU memory, this
model takes it through DLPack and finishes the frame with
:func:`sritm_serving.processing_torch.postprocess` on that GPU (the same steps, with the
training-time bicubic; within one code of the numpy path). The torch path is
taken when the ``torch_device`` parameter is set, the instance is ``KIND_GPU``,
or an input arrives in GPU memory (:func:`sritm_serving.triton_util.processing_device`);
otherwise this model never imports torch.

A conditioned network trained with the classical skip for some conventions
(``GPGMNet.classical_skip``) has them listed in the ``classical_skip_x{scale}``
parameter (names, comma-separated): for a request with such a ``CONDITION``
the skip is the bicubic of the classical conversion of ``LR_YUV``
(:func:`sritm_serving.processing.skip_input`, numpy, at the low resolution).

The ``1/model.py`` that ``build/assemble_repository.py``
writes for ``sritm_postprocess`` re-exports :class:`TritonPythonModel` from here.
"""

from __future__ import annotations

from typing import Any

import triton_python_backend_utils as pb_utils

from sritm_core.contract import (
    CONVENTIONS,
    NETWORK_CONDITION_NAME,
    NETWORK_INPUT_NAME,
    NETWORK_OUTPUT_NAME,
    NETWORK_PEAK_NITS,
    OUTPUT_NAME,
    SCALES,
    RenderingError,
)
from sritm_serving import processing, triton_util


class TritonPythonModel:
    """The post-processor: ``LR_YUV`` and the network's ``RESIDUAL`` to the finished ``HDR_I420`` frame."""

    def initialize(self, args: dict[str, Any]) -> None:
        """Reads the ``HDR_I420`` dtype, the torch device, if any, and the frame limits from the config."""
        config = triton_util.model_config(args)
        parameters = triton_util.config_parameters(config)
        self.output_dtype = triton_util.output_dtype(pb_utils, config, OUTPUT_NAME)
        self.torch_device = triton_util.processing_device(parameters, args)
        self.limits = triton_util.frame_limits(parameters)
        self.classical_skip = {scale: classical_skip_conventions(parameters, scale) for scale in SCALES}

    def execute(self, requests: list[Any]) -> list[Any]:
        """Answers each request with its ``HDR_I420`` frame for its ``TARGET_PEAK``, or with ``INVALID_ARGUMENT``."""
        return [self._process(request) for request in requests]

    def _process(self, request: Any) -> Any:
        network_input_tensor = pb_utils.get_input_tensor_by_name(request, NETWORK_INPUT_NAME)
        residual_tensor = pb_utils.get_input_tensor_by_name(request, NETWORK_OUTPUT_NAME)
        rejection = triton_util.rejected_network_input(pb_utils, network_input_tensor, self.limits)
        if rejection is not None:
            return rejection
        try:
            target_peak = triton_util.target_peak_from_request(pb_utils, request)
        except RenderingError as error:
            return triton_util.invalid_argument(pb_utils, str(error))
        condition_tensor = pb_utils.get_input_tensor_by_name(request, NETWORK_CONDITION_NAME)
        torch_path = self.torch_device is not None or not (network_input_tensor.is_cpu() and residual_tensor.is_cpu())
        # The BT.2390 EETF for a dimmer display exists once, in numpy: such requests finish on the host.
        scale = _scale(tuple(network_input_tensor.shape()), tuple(residual_tensor.shape()))
        if isinstance(scale, str):
            return triton_util.invalid_argument(pb_utils, scale)
        classical = self._uses_classical_skip(condition_tensor, scale)
        if torch_path and target_peak >= NETWORK_PEAK_NITS:
            return self._process_torch(network_input_tensor, residual_tensor, scale, classical)
        if torch_path:
            network_input_tensor, residual_tensor = _on_host(network_input_tensor), _on_host(residual_tensor)
        network_input = processing.skip_input(network_input_tensor.as_numpy(), classical)
        hdr = processing.postprocess(network_input, residual_tensor.as_numpy(), scale, target_peak)
        return pb_utils.InferenceResponse(
            output_tensors=[pb_utils.Tensor(OUTPUT_NAME, hdr.astype(self.output_dtype, copy=False))]
        )

    def _uses_classical_skip(self, condition_tensor: Any, scale: int) -> bool:
        """Whether the request's convention (the hot entry of ``CONDITION``) takes the classical skip."""
        conventions = self.classical_skip[scale]
        if not conventions or condition_tensor is None:
            return False
        host = condition_tensor if condition_tensor.is_cpu() else _on_host(condition_tensor)
        condition = host.as_numpy().reshape(-1)
        return CONVENTIONS[int(condition.argmax())] in conventions

    def _process_torch(self, network_input_tensor: Any, residual_tensor: Any, scale: int, classical: bool) -> Any:
        """The same step with torch, on ``torch_device`` or on the GPU the residual (else the input) is in."""
        from sritm_serving import processing_torch  # only here: the CPU path must not need torch

        network_input = processing_torch.from_triton(network_input_tensor)
        residual = processing_torch.from_triton(residual_tensor)
        if classical:
            network_input = processing_torch.classical_skip_source(network_input)
        device = self.torch_device or (residual.device if residual.is_cuda else network_input.device)
        hdr = processing_torch.postprocess(network_input.to(device), residual.to(device), scale)
        hdr = hdr.to(processing_torch.torch_dtype(self.output_dtype))
        return pb_utils.InferenceResponse(output_tensors=[processing_torch.to_triton(pb_utils, OUTPUT_NAME, hdr)])

    def finalize(self) -> None:
        """Nothing to release."""
        pass


def classical_skip_conventions(parameters: dict[str, str], scale: int) -> frozenset[str]:
    """The conventions listed in the ``classical_skip_x{scale}`` parameter (unknown names are a config error)."""
    listed = parameters.get(f"classical_skip_x{scale}", "").split(",")
    names = frozenset(name.strip() for name in listed if name.strip())
    unknown = names - set(CONVENTIONS)
    if unknown:
        raise ValueError(f"classical_skip_x{scale} names unknown conventions: {', '.join(sorted(unknown))}")
    return names


def _scale(low_shape: tuple[int, ...], high_shape: tuple[int, ...]) -> int | str:
    """The scale between the network's input and output shapes, or the error message when there is none."""
    low_height, low_width = low_shape[2:]
    high_height, high_width = high_shape[2:]
    scale = high_height // low_height
    if scale not in SCALES or (high_height, high_width) != (scale * low_height, scale * low_width):
        return (
            f"the network returned {high_height}×{high_width} for a {low_height}×{low_width} input, "
            f"not a ×{'/×'.join(map(str, SCALES))} frame"
        )
    return scale


class _HostTensor:
    """A tensor copied to host memory, with the two methods the numpy path uses."""

    def __init__(self, array: Any) -> None:
        self._array = array

    def as_numpy(self) -> Any:
        return self._array


def _on_host(tensor: Any) -> Any:
    from sritm_serving import processing_torch

    return _HostTensor(processing_torch.from_triton(tensor).cpu().numpy())
