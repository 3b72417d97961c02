#!/usr/bin/env python
"""Export GPGMNet to ONNX for serving: the residual only, dynamic height and width.

For each scale this writes ``build/artifacts/gpgmnet_x{s}.onnx`` and checks it:

* ``onnx.checker`` accepts the graph;
* every operator is one the ONNX-TensorRT parser supports
  (``build/tensorrt_onnx_operators.txt``), so the same file builds a TensorRT engine;
* ONNX Runtime matches PyTorch within ``--tolerance`` (max abs, default 1e-4) on
  random inputs of several sizes.

The graph has no bicubic skip (``bicubic_skip=False``): the served ensemble's
post-processor adds it, in the same place for the CPU and the GPU repository.
It has two inputs, ``LR_YUV`` and ``CONDITION`` (1 × K one-hot of the request's
SDR convention, from the pre-processor); a paper-form checkpoint (no
conventions) ignores the second (:class:`ServedNetwork`).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from gpgmnet.arch import GPGMNet
from gpgmnet.checkpoint import CheckpointError, load_network
from sritm_core.contract import CONVENTIONS, NETWORK_CONDITION_NAME, NETWORK_INPUT_NAME, NETWORK_OUTPUT_NAME, SCALES

BUILD_DIR = Path(__file__).resolve().parent
ARTIFACTS_DIR = BUILD_DIR / "artifacts"
TENSORRT_OPERATORS_FILE = BUILD_DIR / "tensorrt_onnx_operators.txt"
OPSET = 17
EXPORT_SIZE = (64, 96)
VERIFY_SIZES = ((24, 40), (37, 53), (64, 96))


@dataclass(frozen=True)
class ExportReport:
    """What was exported and how it checked, as written beside the graph (``gpgmnet_x{s}.json``)."""

    scale: int
    path: str
    opset: int
    operators: list[str]
    max_abs_difference: float
    checkpoint: str
    classical_skip: list[str] = field(default_factory=list)
    """Conventions whose skip the post-processor takes from the classical conversion (``GPGMNet.classical_skip``)."""


def tensorrt_supported_operators(path: Path = TENSORRT_OPERATORS_FILE) -> frozenset[str]:
    """The ONNX operators TensorRT's parser supports, from ``path`` (words; ``#`` lines are comments)."""
    words: list[str] = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            words += line.split()
    return frozenset(words)


def graph_operators(model: onnx.ModelProto) -> list[str]:
    """The sorted operator types of ``model``'s graph."""
    return sorted({node.op_type for node in model.graph.node})


def unsupported_by_tensorrt(model: onnx.ModelProto) -> list[str]:
    """The operator types of ``model`` that TensorRT's ONNX parser lacks (empty: it builds an engine)."""
    supported = tensorrt_supported_operators()
    return [op for op in graph_operators(model) if op not in supported]


class ServedNetwork(torch.nn.Module):
    """The served graph: (LR_YUV, CONDITION) -> RESIDUAL, whatever the checkpoint's number of conventions.

    A network without conventions (the paper's) computes its one answer and
    keeps ``CONDITION`` in the graph through a zero-weight term, so every
    repository has the same two inputs.
    """

    def __init__(self, network: GPGMNet) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """The residual of ``x`` (N×3×h×w) for the convention one-hot ``condition`` (1×K)."""
        if self.network.conventions:
            return self.network(x, condition[:, : self.network.conventions])
        return self.network(x) + 0.0 * condition.sum()


def example_condition(index: int = 0) -> torch.Tensor:
    """A 1×K one-hot ``CONDITION`` selecting convention ``index``."""
    condition = torch.zeros(1, len(CONVENTIONS))
    condition[0, index] = 1.0
    return condition


def export_onnx(network: GPGMNet, path: Path, opset: int = OPSET) -> onnx.ModelProto:
    """Write ``network``'s residual branch to ``path`` with dynamic height and width."""
    network = network.eval()
    network.bicubic_skip = False
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.rand(1, 3, *EXPORT_SIZE)
    with torch.no_grad():
        # The TorchScript-based exporter: it needs no onnxscript at run time and
        # gives a plain static-opset graph that TensorRT's parser takes as is.
        torch.onnx.export(
            ServedNetwork(network).eval(),
            (example, example_condition()),
            str(path),
            input_names=[NETWORK_INPUT_NAME, NETWORK_CONDITION_NAME],
            output_names=[NETWORK_OUTPUT_NAME],
            dynamic_axes={
                NETWORK_INPUT_NAME: {2: "height", 3: "width"},
                NETWORK_OUTPUT_NAME: {2: "scaled_height", 3: "scaled_width"},
            },
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    return model


def max_difference_vs_torch(
    network: GPGMNet, path: Path, sizes: tuple[tuple[int, int], ...] = VERIFY_SIZES, seed: int = 0
) -> float:
    """Largest |ORT − PyTorch| over random inputs of several sizes."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(seed)
    worst = 0.0
    network = network.eval()
    network.bicubic_skip = False
    served = ServedNetwork(network).eval()
    for index, (height, width) in enumerate(sizes):
        x = torch.rand(1, 3, height, width, generator=generator)
        condition = example_condition(index % len(CONVENTIONS))
        with torch.no_grad():
            expected = served(x, condition).numpy()
        (actual,) = session.run([NETWORK_OUTPUT_NAME], {NETWORK_INPUT_NAME: x.numpy(),
                                                        NETWORK_CONDITION_NAME: condition.numpy()})
        if actual.shape != expected.shape:
            raise AssertionError(f"ONNX output shape {actual.shape} != PyTorch {expected.shape} at {height}×{width}")
        worst = max(worst, float(np.abs(actual - expected).max()))
    return worst


def export_and_verify(
    scale: int, checkpoint: Path | None, output_dir: Path = ARTIFACTS_DIR, tolerance: float = 1e-4,
    random_weights: bool = False,
) -> ExportReport:
    """Export ``scale``'s network to ``output_dir`` and check it; the report is also written beside the graph.

    Raises:
        SystemExit: the graph uses an operator TensorRT lacks, or ONNX Runtime differs by more than ``tolerance``.
        CheckpointError: the checkpoint cannot be loaded (and ``random_weights`` is not set).
    """
    network, metadata = load_network(checkpoint, scale, random_weights=random_weights)
    path = output_dir / f"gpgmnet_x{scale}.onnx"
    model = export_onnx(network, path)
    unsupported = unsupported_by_tensorrt(model)
    if unsupported:
        raise SystemExit(f"error: {path} uses operators TensorRT's ONNX parser lacks: {', '.join(unsupported)}")
    difference = max_difference_vs_torch(network, path)
    if difference > tolerance:
        raise SystemExit(
            f"error: ONNX Runtime differs from PyTorch by {difference:.2e} (> {tolerance:.0e}) for x{scale}"
        )
    report = ExportReport(
        scale=scale, path=str(path), opset=OPSET, operators=graph_operators(model),
        max_abs_difference=difference, checkpoint=str(metadata.get("source")),
        classical_skip=[CONVENTIONS[index] for index in network.classical_skip],
    )
    path.with_suffix(".json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    """Export and check each scale asked for; 0 on success, 2 when a checkpoint cannot be loaded."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, choices=SCALES, action="append",
                        help="scale to export (repeatable; default: both)")
    parser.add_argument("--checkpoint", type=Path, action="append",
                        help="checkpoint per --scale, in the same order (default: weights/gpgmnet_x{s}.pt if present)")
    parser.add_argument("--output-dir", type=Path, default=ARTIFACTS_DIR)
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--random-weights", action="store_true",
                        help="without a checkpoint, export the seeded untrained network (plumbing only) "
                             "instead of failing")
    args = parser.parse_args(argv)
    scales = args.scale or list(SCALES)
    checkpoints = args.checkpoint or [None] * len(scales)
    if len(checkpoints) != len(scales):
        parser.error("give one --checkpoint per --scale")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    for scale, checkpoint in zip(scales, checkpoints):
        try:
            report = export_and_verify(scale, checkpoint, args.output_dir, args.tolerance, args.random_weights)
        except CheckpointError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(
            f"x{scale}: {report.path} (opset {report.opset}, {len(report.operators)} operator types, "
            f"all TensorRT-supported; max |ORT-PyTorch| {report.max_abs_difference:.1e}; weights: {report.checkpoint})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
