"""The quality gate of a reduced CPU precision: the served path in that precision against f32, on real frames.

``make repository CPU_PRECISION=auto|bf16`` runs it before it serves anything
below f32. Each frame goes through what the server does (the pre-processor's
:func:`sritm_serving.processing.network_input_from_i420`, the network compiled by
:func:`sritm_serving.runtimes.make_network_runner`, the post-processor's bicubic
skip and 10-bit I420 quantisation), once in f32 and once in the precision
under test. The gate passes when the 10-bit outputs agree to at least
:data:`GATE_PSNR_DB` and no code differs by more than :data:`GATE_MAX_CODES`:
the bar the GPU path's fp16/bf16 is held to.

Frames: crops of the shipped sample clip (always there), plus centre crops of
two validation scenes when the HDR masters are (``../shared``; developers and CI).

    python -m build.precision_gate --scale 4 --precision bf16
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from sritm_core.contract import Rendering
from sritm_serving.processing import condition_one_hot, network_input_from_i420, postprocess
from sritm_serving.runtimes import (
    CPU_PRECISIONS,
    cpu_runs_int8_natively,
    make_network_runner,
    resolve_cpu_precision,
)

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "client" / "samples" / "sdr_sample.mp4"
SCENES_DIR = ROOT.parent / "shared" / "data" / "hdr-scenes"
GATE_PSNR_DB = 50.0
GATE_MAX_CODES = 8
VALIDATION_LOSS_DB = 0.1
"""The most validation PSNR (against the masters) ``auto`` gives up for int8's speed."""
CROP = (64, 96)
"""Low-resolution crop size (height, width): small enough that the gate takes seconds."""
GATE_FILE = "precision_gate.json"
"""Written beside the network model by ``build/assemble_repository.py``; ``make bench`` shows it."""


@dataclass(frozen=True)
class GateResult:
    """The gate's verdict on one precision and scale.

    Attributes:
        requested: what was asked for (``auto``, ``bf16``, ``int8``, ...).
        precision: the precision tested on this CPU.
        served: what is served after the gate: ``precision``, or ``f32`` when the gate failed (an explicit
            ``int8`` is served anyway: it is the user's opt-in, and the figures say what it costs).
        scale: 2 or 4.
        psnr_db: PSNR of the 10-bit output against f32 (inf when identical).
        max_code_difference: the largest |difference| of any 10-bit code.
        frames: how many frames were compared, and where they came from (``sources``).
        passed: whether the precision met both bars.
        validation_loss_db: f32's mean PSNR against the masters minus this precision's, on the
            validation-scene crops (int8 under ``auto``; None where not measured).
        considered: one line per precision ``auto`` tried and did not keep, with its figures.
    """

    requested: str
    precision: str
    served: str
    scale: int
    psnr_db: float
    max_code_difference: int
    frames: int
    sources: list[str]
    passed: bool
    validation_loss_db: float | None = None
    considered: list[str] = field(default_factory=list)

    def figures(self) -> str:
        """The precision, the figures and the verdict."""
        verdict = "passed" if self.passed else f"failed (bars: >= {GATE_PSNR_DB:g} dB, <= {GATE_MAX_CODES} codes)"
        loss = "" if self.validation_loss_db is None else f", validation {-self.validation_loss_db:+.2f} dB"
        return (f"x{self.scale} {self.precision} vs f32 on {self.frames} frames: {self.psnr_db:.1f} dB, "
                f"max {self.max_code_difference} codes{loss}: {verdict}")

    def summary(self) -> str:
        """One line: :meth:`figures` and what is served."""
        return f"{self.figures()}; serving {self.served}"


def _crops(i420: NDArray[np.uint8], count: int) -> list[NDArray[np.uint8]]:
    """``count`` CROP-sized I420 crops spread over a frame (even offsets, chroma planes cut alike)."""
    rows, width = i420.shape
    height = rows * 2 // 3
    y, u, v = i420[:height], i420[height:height * 5 // 4].reshape(height // 2, width // 2), \
        i420[height * 5 // 4:].reshape(height // 2, width // 2)
    crop_h, crop_w = min(CROP[0], height), min(CROP[1], width)
    out = []
    for index in range(count):
        top = (height - crop_h) * index // max(1, count - 1) // 2 * 2
        left = (width - crop_w) * (count - 1 - index) // max(1, count - 1) // 2 * 2
        planes = [y[top:top + crop_h, left:left + crop_w],
                  u[top // 2:(top + crop_h) // 2, left // 2:(left + crop_w) // 2],
                  v[top // 2:(top + crop_h) // 2, left // 2:(left + crop_w) // 2]]
        out.append(np.ascontiguousarray(np.concatenate([planes[0].reshape(-1), planes[1].reshape(-1),
                                                        planes[2].reshape(-1)]).reshape(crop_h * 3 // 2, crop_w)))
    return out


def gate_frames(
    scale: int, sample: Path = SAMPLE, scenes_dir: Path | None = SCENES_DIR
) -> list[tuple[str, NDArray[np.uint8]]]:
    """Named 8-bit I420 frames for the gate: sample-clip crops, and validation-scene crops where the masters exist."""
    from sritm_client.video import read_sdr_frames

    frames: list[tuple[str, NDArray[np.uint8]]] = []
    for index, frame in enumerate(read_sdr_frames(sample)):
        if index in (0, 15):
            frames += [(f"{sample.name}#{index}/{n}", crop) for n, crop in enumerate(_crops(frame.i420, 2))]
        if index >= 15:
            break
    if scenes_dir is not None and scenes_dir.is_dir():
        from gpgmnet import data

        for path in data.split_files(scenes_dir, "val")[:2]:
            scene = data.read_scene(path)
            height, width = scene.rgb.shape[:2]
            size_h, size_w = CROP[0] * scale, CROP[1] * scale
            top, left = (height - size_h) // 2, (width - size_w) // 2
            cropped = dataclasses.replace(scene, rgb=scene.rgb[top:top + size_h, left:left + size_w])
            frames.append((path.name, data.form_pair(cropped, scale).lr_i420))
    return frames


def served_output(run_network: object, i420: NDArray[np.uint8], scale: int) -> NDArray[np.uint16]:
    """What the ensemble answers for ``i420``, with ``run_network`` as its network step (the default rendering)."""
    network_input = network_input_from_i420(i420)
    residual = run_network(network_input, condition_one_hot(Rendering()))  # type: ignore[operator]
    return postprocess(network_input, residual, scale)


def psnr_10bit(reference: NDArray[np.uint16], test: NDArray[np.uint16]) -> float:
    """PSNR over every code of two 10-bit frames, peak 1023; inf when they are equal."""
    mse = float(np.mean((reference.astype(np.float64) - test.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1023.0**2 / mse)


def _served_codes(runner: object, frames: list[tuple[str, NDArray[np.uint8]]], scale: int) -> NDArray[np.uint16]:
    return np.concatenate([served_output(runner, i420, scale).reshape(-1) for _, i420 in frames])


def run_gate(onnx_path: Path, scale: int, precision: str, frames: list[tuple[str, NDArray[np.uint8]]],
             test_model: Path | None = None, requested: str | None = None) -> GateResult:
    """Runs ``frames`` through the served path in f32 and in ``precision`` (f32, bf16 or int8) and compares.

    ``test_model`` is the graph run in ``precision`` (int8: the quantised IR); default ``onnx_path``.
    A failed gate serves f32, except an explicit int8 request, which is served as asked.
    """
    requested = requested or precision
    if precision == "f32":
        return GateResult(requested, "f32", "f32", scale, math.inf, 0, 0, [], True)
    reference_codes = _served_codes(make_network_runner(onnx_path, "openvino", precision="f32"), frames, scale)
    test_runner = make_network_runner(test_model or onnx_path, "openvino", precision=precision)
    test_codes = _served_codes(test_runner, frames, scale)
    psnr = psnr_10bit(reference_codes, test_codes)
    worst = int(np.abs(reference_codes.astype(np.int32) - test_codes.astype(np.int32)).max())
    passed = psnr >= GATE_PSNR_DB and worst <= GATE_MAX_CODES
    served = precision if passed or requested == "int8" else "f32"
    return GateResult(requested, precision, served, scale, psnr, worst, len(frames),
                      [name for name, _ in frames], passed)


def validation_frames(scale: int, scenes_dir: Path | None = SCENES_DIR,
                      limit: int | None = None) -> list[tuple[NDArray[np.uint8], NDArray[np.uint16]]]:
    """(LR 8-bit I420, master 10-bit I420) centre crops of the validation scenes; empty without the masters."""
    if scenes_dir is None or not scenes_dir.is_dir():
        return []
    from gpgmnet import data
    from sritm_core import colour

    pairs = []
    for path in data.split_files(scenes_dir, "val")[:limit]:
        scene = data.read_scene(path)
        height, width = scene.rgb.shape[:2]
        size_h, size_w = CROP[0] * scale * 2, CROP[1] * scale * 2
        top, left = max(0, (height - size_h) // 2), max(0, (width - size_w) // 2)
        cropped = dataclasses.replace(scene, rgb=scene.rgb[top:top + size_h, left:left + size_w])
        pair = data.form_pair(cropped, scale)
        pairs.append((pair.lr_i420, colour.quantize_i420(pair.hdr_codes, 10)))
    return pairs


def validation_loss_db(onnx_path: Path, test_model: Path, precision: str, scale: int,
                       pairs: list[tuple[NDArray[np.uint8], NDArray[np.uint16]]]) -> float:
    """Mean PSNR against the masters in f32 minus the same in ``precision``: what the precision costs, in dB."""
    def mean_psnr(runner: object) -> float:
        return float(np.mean([psnr_10bit(master, served_output(runner, lr, scale)) for lr, master in pairs]))

    return mean_psnr(make_network_runner(onnx_path, "openvino", precision="f32")) - mean_psnr(
        make_network_runner(test_model, "openvino", precision=precision))


def choose_precision(onnx_path: Path, scale: int, requested: str, frames: list[tuple[str, NDArray[np.uint8]]],
                     int8_path: Path, scenes_dir: Path | None = SCENES_DIR) -> GateResult:
    """What the CPU repository serves for ``requested``, with the gate's figures.

    * ``f32``, ``bf16``: that precision, gated (a failure serves f32).
    * ``int8``: the NNCF-quantised graph, written to ``int8_path``, gated; served even when it fails
      the bars (an explicit opt-in), with the figures.
    * ``auto``: int8 where the CPU has int8 arithmetic, the validation masters exist, the gate passes
      and it loses at most :data:`VALIDATION_LOSS_DB` of validation PSNR against f32; otherwise
      :func:`sritm_serving.runtimes.resolve_cpu_precision`'s float choice, gated.
    """
    if requested not in CPU_PRECISIONS:
        raise ValueError(f"CPU precision must be one of {CPU_PRECISIONS}, not {requested!r}")
    from build.quantize_int8 import calibration_frames, quantize_network

    if requested == "int8":
        quantize_network(onnx_path, calibration_frames(scale, scenes_dir), int8_path)
        return run_gate(onnx_path, scale, "int8", frames, int8_path, requested)
    considered = []
    if requested == "auto":
        pairs = validation_frames(scale, scenes_dir)
        if not cpu_runs_int8_natively():
            considered.append("int8: this CPU has no int8 arithmetic")
        elif not pairs:
            considered.append("int8: no validation masters to measure its loss on")
        else:
            quantize_network(onnx_path, calibration_frames(scale, scenes_dir), int8_path)
            int8 = run_gate(onnx_path, scale, "int8", frames, int8_path, "auto")
            if int8.passed:
                loss = validation_loss_db(onnx_path, int8_path, "int8", scale, pairs)
                int8 = dataclasses.replace(int8, validation_loss_db=loss)
                if loss <= VALIDATION_LOSS_DB:
                    return int8
            considered.append(int8.figures()
                              + ("" if not int8.passed else f"; validation bar: <= {VALIDATION_LOSS_DB} dB lost"))
    float_precision = resolve_cpu_precision("auto" if requested == "auto" else requested)
    result = run_gate(onnx_path, scale, float_precision, frames, requested=requested)
    return dataclasses.replace(result, considered=considered)


def write_gate(result: GateResult, model_dir: Path) -> Path:
    """Keeps the gate's figures beside the model (``precision_gate.json``)."""
    path = model_dir / GATE_FILE
    path.write_text(json.dumps({**asdict(result), "psnr_db": None if math.isinf(result.psnr_db) else result.psnr_db,
                                "bars": {"psnr_db": GATE_PSNR_DB, "max_code_difference": GATE_MAX_CODES,
                                         "auto_int8_validation_loss_db": VALIDATION_LOSS_DB}},
                               indent=2) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m build.precision_gate``: prints the gate's line; 0 when it passes, 1 when it fails."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, choices=(2, 4), default=4)
    parser.add_argument("--precision", choices=CPU_PRECISIONS, default="auto")
    parser.add_argument("--onnx", type=Path, help="default: build/artifacts/gpgmnet_x{scale}.onnx")
    parser.add_argument("--validation", action="store_true",
                        help="also measure the validation PSNR the precision loses against f32 (needs ../shared)")
    args = parser.parse_args(argv)
    onnx_path = args.onnx or ROOT / "build" / "artifacts" / f"gpgmnet_x{args.scale}.onnx"
    if not onnx_path.is_file():
        print(f"error: {onnx_path} does not exist: run python -m build.export_onnx first", file=sys.stderr)
        return 2
    int8_path = onnx_path.with_name(f"{onnx_path.stem}_int8.xml")
    result = choose_precision(onnx_path, args.scale, args.precision, gate_frames(args.scale), int8_path)
    pairs = validation_frames(args.scale) if args.validation and result.validation_loss_db is None else []
    if pairs and result.precision != "f32":
        test_model = int8_path if result.precision == "int8" else onnx_path
        result = dataclasses.replace(
            result, validation_loss_db=validation_loss_db(onnx_path, test_model, result.precision, args.scale, pairs))
    for line in result.considered:
        print(f"not chosen: {line}")
    print(result.summary())
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
