"""The engines that run the exported network on the CPU: OpenVINO (the default) and ONNX Runtime.

The CPU network model (:mod:`sritm_serving.network_cpu`) and the benchmarks
(``loadtest/bench.py``) build their engines here, so what is measured is what is served.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sritm_core.contract import NETWORK_CONDITION_NAME, NETWORK_INPUT_NAME, NETWORK_OUTPUT_NAME

NETWORK_RUNTIMES = ("openvino", "onnxruntime")
"""How the CPU repository runs the exported graph; OpenVINO (f32) is the default: 1.21–1.25× ONNX Runtime's
throughput on the development CPU, same outputs within 4e-7 (``make bench``)."""


CPU_PRECISIONS = ("auto", "f32", "bf16", "int8")
"""What ``make repository CPU_PRECISION=`` accepts. ``auto`` is int8 where it passes the precision gate and
its validation bar (``build/precision_gate.py``), else bf16 where the CPU runs it natively and it passes the
gate, else f32. ``int8`` is the NNCF-quantised graph (``build/quantize_int8.py``), its other layers in f32."""


def cpu_capabilities() -> tuple[str, ...]:
    """OpenVINO's CPU plugin's ``OPTIMIZATION_CAPABILITIES`` on this machine (``FP32``, ``BF16``, ``INT8``, ...).

    The plugin, not ``/proc/cpuinfo``, decides what runs in hardware, so the repository asks it.
    """
    import openvino as ov

    return tuple(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def cpu_runs_bf16_natively() -> bool:
    """Whether the CPU plugin reports native bf16 (AVX512-BF16 or AMX) on this machine."""
    return "BF16" in cpu_capabilities()


def cpu_runs_int8_natively() -> bool:
    """Whether the CPU plugin reports int8 arithmetic (VNNI or AMX-INT8) on this machine."""
    return "INT8" in cpu_capabilities()


def resolve_cpu_precision(requested: str) -> str:
    """``auto`` → ``bf16`` where :func:`cpu_runs_bf16_natively`, else ``f32``; an explicit precision stays.

    This is the float choice; whether ``auto`` is int8 instead is the precision gate's decision
    (:func:`build.precision_gate.choose_precision`), because it needs the quantised graph and the
    validation scenes.

    Raises:
        ValueError: not one of :data:`CPU_PRECISIONS`.
    """
    if requested not in CPU_PRECISIONS:
        raise ValueError(f"CPU precision must be one of {CPU_PRECISIONS}, not {requested!r}")
    if requested == "auto":
        return "bf16" if cpu_runs_bf16_natively() else "f32"
    return requested


def make_network_runner(onnx_path: Path, runtime: str = "openvino", threads: int = 0, precision: str = "f32") -> Any:
    """A function (network_input 1×3×h×w, condition 1×K float32) → residual, running ``onnx_path`` on the CPU.

    ``threads=0`` lets the runtime use every core. ``precision`` is OpenVINO's
    inference precision, ``f32`` or ``bf16`` (resolved: see
    :func:`resolve_cpu_precision`), or ``int8``, for which ``onnx_path`` is the
    quantised IR of ``build/quantize_int8.py``. bf16 measured 4.4–4.7× f32 on a
    Xeon with AMX and moves outputs by a few of 1023 codes, which is why the
    repository serves it only after ``build/precision_gate.py`` passes. ONNX Runtime runs f32 only.

    Raises:
        ValueError: an unknown runtime, or a precision other than f32 for ONNX Runtime.
    """
    if runtime == "onnxruntime":
        if precision != "f32":
            raise ValueError(f"the onnxruntime runtime runs f32 only, not {precision}")
        session = make_onnx_session(onnx_path, threads)
        return lambda network_input, condition: session.run(
            [NETWORK_OUTPUT_NAME], {NETWORK_INPUT_NAME: network_input, NETWORK_CONDITION_NAME: condition}
        )[0]
    if runtime == "openvino":
        request = compile_openvino(onnx_path, precision, threads).create_infer_request()

        def run(network_input: NDArray[np.float32], condition: NDArray[np.float32]) -> NDArray[np.float32]:
            request.infer({NETWORK_INPUT_NAME: network_input, NETWORK_CONDITION_NAME: condition})
            # The output tensor is the request's buffer, reused by the next call: copy it out.
            return np.array(request.get_output_tensor(0).data)

        return run
    raise ValueError(f"runtime must be one of {NETWORK_RUNTIMES}, not {runtime!r}")


def compile_openvino(onnx_path: Path | Any, precision: str | None = "f32", threads: int = 0) -> Any:
    """The graph compiled by OpenVINO's CPU plugin with the latency hint, as the CPU repository serves it.

    Args:
        onnx_path: the exported network (ONNX), or for ``int8`` its quantised OpenVINO IR (``.xml``); or an
            ``openvino.Model`` already read (and reshaped, say).
        precision: ``INFERENCE_PRECISION_HINT`` (``"f32"``, ``"bf16"``); ``"int8"``: the quantised layers run
            int8 and the others f32; None keeps the plugin's default, bf16 on CPUs with AVX512-BF16 or AMX.
        threads: ``INFERENCE_NUM_THREADS``; 0 lets the plugin use every core.

    Raises:
        ValueError: ``int8`` with a graph that is not an OpenVINO IR.
    """
    import openvino as ov  # only the CPU network step and benchmarks need it

    is_file = isinstance(onnx_path, (str, Path))
    if precision == "int8" and is_file and Path(onnx_path).suffix != ".xml":
        raise ValueError(f"int8 runs the quantised OpenVINO IR (build/quantize_int8.py), not {onnx_path}")
    core = ov.Core()
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
    if precision:
        config["INFERENCE_PRECISION_HINT"] = "f32" if precision == "int8" else precision
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return core.compile_model(core.read_model(str(onnx_path)) if is_file else onnx_path, "CPU", config)


def make_onnx_session(onnx_path: Path, intra_op_threads: int = 0) -> Any:
    """The ONNX Runtime session the CPU repository serves with when its ``runtime`` is ``onnxruntime``.

    The benchmarks use the same settings.

    ``intra_op_threads=0`` lets ONNX Runtime use every core.
    """
    import onnxruntime as ort  # only the CPU network step and benchmarks need it

    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])
