"""Pre-processor: an I420 8-bit BT.709 frame to GPGMNet's YUV 4:4:4 input tensor.

The conversion is :func:`sritm_serving.processing.network_input_from_i420`, whose chroma
up-sampling (:func:`sritm_core.colour.i420_to_yuv444`) is the one the training data
goes through, so the network sees served frames as it saw training frames.

On the GPU the same step is :func:`sritm_serving.processing_torch.network_input_from_i420`
(bit-identical), with the frame in and the tensor out passed through DLPack, so
the network input is made where the network runs. That torch path is taken when
the ``torch_device`` parameter is set, the instance is ``KIND_GPU``, or a frame
arrives in GPU memory (:func:`sritm_serving.triton_util.processing_device`); otherwise
this model never imports torch. The ``1/model.py`` that ``build/assemble_repository.py``
writes for ``sritm_preprocess`` re-exports :class:`TritonPythonModel` from here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from sritm_core.contract import INPUT_NAME, NETWORK_INPUT_NAME, RenderingError
from sritm_serving import triton_util
from sritm_serving.processing import network_input_from_i420


class TritonPythonModel:
    """The pre-processor: each request's ``SDR_I420`` frame to ``LR_YUV``, and its rendering to the network's inputs."""

    def initialize(self, args: dict[str, Any]) -> None:
        """Reads the frame limits, the ``LR_YUV`` dtype and the torch device, if any, from the config."""
        config = triton_util.model_config(args)
        parameters = triton_util.config_parameters(config)
        self.limits = triton_util.frame_limits(parameters)
        self.output_dtype = triton_util.output_dtype(pb_utils, config, NETWORK_INPUT_NAME)
        self.torch_device = triton_util.processing_device(parameters, args)

    def execute(self, requests: list[Any]) -> list[Any]:
        """Answers each request with ``LR_YUV``, ``CONDITION`` and ``TARGET_PEAK``, or with ``INVALID_ARGUMENT``."""
        return [self._process(request) for request in requests]

    def _process(self, request: Any) -> Any:
        frame = pb_utils.get_input_tensor_by_name(request, INPUT_NAME)
        rejection = triton_util.rejected_frame(pb_utils, INPUT_NAME, frame, self.limits)
        if rejection is not None:
            return rejection
        try:
            rendering = triton_util.rendering_tensors(pb_utils, triton_util.rendering_from_request(pb_utils, request))
        except RenderingError as error:
            return triton_util.invalid_argument(pb_utils, str(error))
        if self.torch_device is not None or not frame.is_cpu():
            return self._process_torch(frame, rendering)
        i420 = frame.as_numpy()
        if i420.dtype != np.uint8:
            return triton_util.invalid_argument(pb_utils, f"{INPUT_NAME} must be UINT8, not {i420.dtype}")
        network_input = network_input_from_i420(i420, dtype=self.output_dtype)
        return pb_utils.InferenceResponse(
            output_tensors=[pb_utils.Tensor(NETWORK_INPUT_NAME, network_input), *rendering]
        )

    def _process_torch(self, frame: Any, rendering: list[Any]) -> Any:
        """The same conversion with torch, on ``torch_device`` or on the GPU the frame is in."""
        import torch  # only here: the CPU path must not need torch

        from sritm_serving import processing_torch

        i420 = processing_torch.from_triton(frame)
        if i420.dtype != torch.uint8:
            return triton_util.invalid_argument(pb_utils, f"{INPUT_NAME} must be UINT8, not {i420.dtype}")
        if self.torch_device is not None:
            i420 = i420.to(self.torch_device)
        network_input = processing_torch.network_input_from_i420(i420, processing_torch.torch_dtype(self.output_dtype))
        return pb_utils.InferenceResponse(
            output_tensors=[processing_torch.to_triton(pb_utils, NETWORK_INPUT_NAME, network_input), *rendering]
        )

    def finalize(self) -> None:
        """Nothing to release."""
        pass
