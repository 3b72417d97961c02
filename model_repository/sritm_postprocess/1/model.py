"""Post-processor: Eq. 1's bicubic skip, PQ clamping to the legal range, 10-bit 4:2:0 output.

The network step returns its residual only (it is exported with
``bicubic_skip=False``); the skip is added here, from the pre-processed input,
with :func:`gpgmnet.serving.bicubic_upsample`, which matches the training-time
bicubic to ~4e-7.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from gpgmnet.contract import NETWORK_INPUT_NAME, NETWORK_OUTPUT_NAME, OUTPUT_NAME, SCALES
from gpgmnet.serving import bicubic_upsample, i420_from_network_output


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        output_config = pb_utils.get_output_config_by_name(config, OUTPUT_NAME)
        self.output_dtype = pb_utils.triton_string_to_numpy(output_config["data_type"])

    def execute(self, requests: list[Any]) -> list[Any]:
        return [self._process(request) for request in requests]

    def _process(self, request: Any) -> Any:
        network_input = pb_utils.get_input_tensor_by_name(request, NETWORK_INPUT_NAME).as_numpy()
        residual = pb_utils.get_input_tensor_by_name(request, NETWORK_OUTPUT_NAME).as_numpy()
        low_height, low_width = network_input.shape[2:]
        high_height, high_width = residual.shape[2:]
        scale = high_height // low_height
        if scale not in SCALES or (high_height, high_width) != (scale * low_height, scale * low_width):
            message = (
                f"the network returned {high_height}×{high_width} for a {low_height}×{low_width} input, "
                f"not a ×{'/×'.join(map(str, SCALES))} frame"
            )
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, pb_utils.TritonError.INTERNAL))
        hdr = i420_from_network_output(residual + bicubic_upsample(network_input, scale))
        return pb_utils.InferenceResponse(
            output_tensors=[pb_utils.Tensor(OUTPUT_NAME, hdr.astype(self.output_dtype, copy=False))]
        )

    def finalize(self) -> None:
        pass
