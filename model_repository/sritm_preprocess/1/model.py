"""Pre-processor: an I420 8-bit BT.709 frame to GPGMNet's YUV 4:4:4 input tensor.

The conversion is :func:`gpgmnet.serving.network_input_from_i420`, whose chroma
up-sampling (:func:`gpgmnet.colour.i420_to_yuv444`) is the one the training data
goes through, so the network sees served frames as it saw training frames.

On the GPU the same step is :func:`gpgmnet.serving_torch.network_input_from_i420`
(bit-identical), with the frame in and the tensor out passed through DLPack, so
the network input is made where the network runs. That torch path is taken when
the ``torch_device`` parameter is set, the instance is ``KIND_GPU``, or a frame
arrives in GPU memory (:func:`gpgmnet.serving.processing_device`); otherwise
this model never imports torch.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from gpgmnet.contract import (
    INPUT_NAME,
    NETWORK_INPUT_NAME,
    FrameLayoutError,
    RenderingError,
    frame_limits_from_parameters,
    i420_frame_size,
)
from gpgmnet.serving import network_input_from_i420, processing_device, rendering_from_request, rendering_tensors


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        parameters = config.get("parameters", {})
        self.limits = frame_limits_from_parameters(
            {key: value.get("string_value", "") for key, value in parameters.items()}
        )
        output_config = pb_utils.get_output_config_by_name(config, NETWORK_INPUT_NAME)
        self.output_dtype = pb_utils.triton_string_to_numpy(output_config["data_type"])
        self.torch_device = processing_device(
            {key: value.get("string_value", "") for key, value in parameters.items()}, args
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        return [self._process(request) for request in requests]

    def _process(self, request: Any) -> Any:
        frame = pb_utils.get_input_tensor_by_name(request, INPUT_NAME)
        if frame is None:
            return _invalid(f"the request has no {INPUT_NAME} input")
        try:
            # From the shape alone, before the buffer is touched or anything allocated.
            i420_frame_size(tuple(frame.shape()), self.limits)
        except FrameLayoutError as error:
            return _invalid(f"{INPUT_NAME}: {error}")
        try:
            rendering = rendering_tensors(pb_utils, rendering_from_request(pb_utils, request))
        except RenderingError as error:
            return _invalid(str(error))
        if self.torch_device is not None or not frame.is_cpu():
            return self._process_torch(frame, rendering)
        i420 = frame.as_numpy()
        if i420.dtype != np.uint8:
            return _invalid(f"{INPUT_NAME} must be UINT8, not {i420.dtype}")
        network_input = network_input_from_i420(i420, dtype=self.output_dtype)
        return pb_utils.InferenceResponse(
            output_tensors=[pb_utils.Tensor(NETWORK_INPUT_NAME, network_input), *rendering]
        )

    def _process_torch(self, frame: Any, rendering: list[Any]) -> Any:
        """The same conversion with torch, on ``torch_device`` or on the GPU the frame is in."""
        import torch  # only here: the CPU path must not need torch

        from gpgmnet import serving_torch

        i420 = serving_torch.from_triton(frame)
        if i420.dtype != torch.uint8:
            return _invalid(f"{INPUT_NAME} must be UINT8, not {i420.dtype}")
        if self.torch_device is not None:
            i420 = i420.to(self.torch_device)
        network_input = serving_torch.network_input_from_i420(i420, serving_torch.torch_dtype(self.output_dtype))
        return pb_utils.InferenceResponse(
            output_tensors=[serving_torch.to_triton(pb_utils, NETWORK_INPUT_NAME, network_input), *rendering]
        )

    def finalize(self) -> None:
        pass


def _invalid(message: str) -> Any:
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG))
