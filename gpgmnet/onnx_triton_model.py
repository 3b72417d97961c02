"""The network step of the CPU repository: GPGMNet's ONNX graph run by ONNX Runtime in the Python backend.

The wheel's Triton has no ONNX Runtime backend, so ``build/assemble_repository.py
--target cpu`` writes a ``1/model.py`` that re-exports :class:`TritonPythonModel`
from here, beside ``1/model.onnx``. The GPU repository serves the same graph as
a TensorRT plan instead; the tensor names and shapes are identical.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

from gpgmnet.contract import NETWORK_INPUT_NAME, NETWORK_OUTPUT_NAME


def make_session(onnx_path: Path, intra_op_threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        version_dir = Path(args["model_repository"]) / args["model_version"]
        threads = int(parameters.get("intra_op_threads", "0")) or (os.cpu_count() or 1)
        self.session = make_session(version_dir / parameters.get("onnx_file", "model.onnx"), threads)
        output_config = pb_utils.get_output_config_by_name(config, NETWORK_OUTPUT_NAME)
        self.output_dtype = pb_utils.triton_string_to_numpy(output_config["data_type"])

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            network_input = pb_utils.get_input_tensor_by_name(request, NETWORK_INPUT_NAME).as_numpy()
            (residual,) = self.session.run([NETWORK_OUTPUT_NAME], {NETWORK_INPUT_NAME: network_input})
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor(NETWORK_OUTPUT_NAME, residual.astype(self.output_dtype, copy=False))]
                )
            )
        return responses

    def finalize(self) -> None:
        self.session = None
