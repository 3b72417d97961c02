"""The network step of the CPU repository: GPGMNet's ONNX graph in the Python backend, run by OpenVINO or ONNX Runtime.

The ``runtime`` parameter picks the engine (:func:`sritm_serving.runtimes.make_network_runner`;
default OpenVINO, measured 1.2× faster than ONNX Runtime in f32 here, same outputs
within 4e-7) and ``precision`` OpenVINO's inference precision (``f32``, or
``bf16`` when ``make repository CPU_PRECISION=auto|bf16`` chose it and its
precision gate passed, or ``int8``: the NNCF-quantised IR ``int8_file``); the
model logs both at load. The wheel's Triton has neither backend, so
``build/assemble_repository.py --target cpu`` writes a two-line ``1/model.py``
that re-exports :class:`TritonPythonModel` from here, beside ``1/model.onnx``.
The GPU repository serves the same graph as a TensorRT plan instead; the tensor names and shapes are identical.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import triton_python_backend_utils as pb_utils

from sritm_core.contract import NETWORK_OUTPUT_NAME
from sritm_serving import triton_util
from sritm_serving.runtimes import make_network_runner


class TritonPythonModel:
    """The CPU network step: the residual of each request's ``LR_YUV`` and ``CONDITION``, from the ONNX graph."""

    def initialize(self, args: dict[str, Any]) -> None:
        """Reads the frame limits from the config and loads the ONNX graph into the configured runtime."""
        config = triton_util.model_config(args)
        parameters = triton_util.config_parameters(config)
        version_dir = Path(args["model_repository"]) / args["model_version"]
        self.limits = triton_util.frame_limits(parameters)
        runtime = parameters.get("runtime") or "openvino"
        # The assembler writes the precision it chose (after the precision gate); older configs mean f32.
        precision = parameters.get("precision") or "f32"
        # int8 runs the NNCF-quantised IR that build/quantize_int8.py wrote beside the ONNX graph.
        graph = parameters.get("int8_file") if precision == "int8" else None
        self.run_network = make_network_runner(
            version_dir / (graph or parameters.get("onnx_file") or "model.onnx"),
            runtime,
            int(parameters.get("intra_op_threads") or "0"),
            precision,
        )
        pb_utils.Logger.log_info(f"{args.get('model_name', config.get('name'))}: {runtime}, precision {precision}")
        self.output_dtype = triton_util.output_dtype(pb_utils, config, NETWORK_OUTPUT_NAME)

    def execute(self, requests: list[Any]) -> list[Any]:
        """Answers each request with its ``RESIDUAL``, or with ``INVALID_ARGUMENT`` for an input out of bounds."""
        return triton_util.network_responses(pb_utils, requests, self.limits, self._residual)

    def _residual(self, tensor: Any, condition: Any) -> Any:
        residual = self.run_network(tensor.as_numpy(), condition)
        return pb_utils.Tensor(NETWORK_OUTPUT_NAME, residual.astype(self.output_dtype, copy=False))

    def finalize(self) -> None:
        """Drops the runtime, freeing the compiled network."""
        self.run_network = None
