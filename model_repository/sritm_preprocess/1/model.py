"""Pre-processor: an I420 8-bit BT.709 frame to GPGMNet's YUV 4:4:4 input tensor.

The conversion is :func:`gpgmnet.serving.network_input_from_i420`, whose chroma
up-sampling (:func:`gpgmnet.colour.i420_to_yuv444`) is the one the training data
goes through, so the network sees served frames as it saw training frames.
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
    FrameLimits,
    i420_frame_size,
)
from gpgmnet.serving import network_input_from_i420


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        parameters = config.get("parameters", {})
        defaults = FrameLimits()

        def limit(key: str) -> int:
            entry = parameters.get(key)
            return int(entry["string_value"]) if entry else int(getattr(defaults, key))

        self.limits = FrameLimits(
            min_height=limit("min_height"),
            min_width=limit("min_width"),
            max_height=limit("max_height"),
            max_width=limit("max_width"),
        )
        output_config = pb_utils.get_output_config_by_name(config, NETWORK_INPUT_NAME)
        self.output_dtype = pb_utils.triton_string_to_numpy(output_config["data_type"])

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
        i420 = frame.as_numpy()
        if i420.dtype != np.uint8:
            return _invalid(f"{INPUT_NAME} must be UINT8, not {i420.dtype}")
        network_input = network_input_from_i420(i420, dtype=self.output_dtype)
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(NETWORK_INPUT_NAME, network_input)])

    def finalize(self) -> None:
        pass


def _invalid(message: str) -> Any:
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG))
