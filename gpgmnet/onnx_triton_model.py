"""The network step of the CPU repository: GPGMNet's ONNX graph in the Python backend, run by OpenVINO or ONNX Runtime.

The ``runtime`` parameter picks the engine (:func:`gpgmnet.serving.make_network_runner`;
default OpenVINO f32, measured 1.2× faster than ONNX Runtime here, same outputs
within 4e-7). The wheel's Triton has neither backend, so ``build/assemble_repository.py
--target cpu`` writes a ``1/model.py`` that re-exports :class:`TritonPythonModel`
from here, beside ``1/model.onnx``. The GPU repository serves the same graph as
a TensorRT plan instead; the tensor names and shapes are identical.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import triton_python_backend_utils as pb_utils

from gpgmnet.contract import NETWORK_OUTPUT_NAME
from gpgmnet.serving import deployed_frame_limits, make_network_runner, network_responses


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        version_dir = Path(args["model_repository"]) / args["model_version"]
        self.limits = deployed_frame_limits(Path(args["model_repository"]))
        self.run_network = make_network_runner(
            version_dir / parameters.get("onnx_file", "model.onnx"),
            parameters.get("runtime", "openvino"),
            int(parameters.get("intra_op_threads", "0")),
        )
        output_config = pb_utils.get_output_config_by_name(config, NETWORK_OUTPUT_NAME)
        self.output_dtype = pb_utils.triton_string_to_numpy(output_config["data_type"])

    def execute(self, requests: list[Any]) -> list[Any]:
        return network_responses(pb_utils, requests, self.limits, self._residual)

    def _residual(self, tensor: Any, condition: Any) -> Any:
        residual = self.run_network(tensor.as_numpy(), condition)
        return pb_utils.Tensor(NETWORK_OUTPUT_NAME, residual.astype(self.output_dtype, copy=False))

    def finalize(self) -> None:
        self.run_network = None
