"""int8 post-training quantisation of the CPU network with NNCF, calibrated on real low-resolution frames.

``make repository CPU_PRECISION=int8`` (and ``auto``, which only keeps int8
when it passes :mod:`build.precision_gate` and its validation-PSNR bar) runs
:func:`quantize_network` on the exported ONNX graph: ``nncf.quantize`` inserts
int8 fake-quantise nodes on the inputs and weights of every convolution and
matrix product but the first and last convolutions (:data:`FLOAT_LAYERS`), with
ranges taken from the calibration frames, and the result is saved as an OpenVINO
IR (``model_int8.xml``/``.bin``) beside ``model.onnx``. OpenVINO's CPU plugin runs
those layers with int8 arithmetic (AMX-INT8 or VNNI) and the rest in f32.

Calibration frames: centre crops of the training scenes' low-resolution SDR,
formed as for training (``../shared``; developers and CI), or, where the masters
are absent (a user's checkout), crops of the shipped sample clip.

    python -m build.quantize_int8 --scale 4
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from sritm_core.contract import NETWORK_CONDITION_NAME, NETWORK_INPUT_NAME, Rendering
from sritm_serving.processing import condition_one_hot, network_input_from_i420

ROOT = Path(__file__).resolve().parent.parent
SCENES_DIR = ROOT.parent / "shared" / "data" / "hdr-scenes"
INT8_FILE = "model_int8.xml"
"""The quantised network's file in the model's version directory (its weights are ``model_int8.bin``)."""
FLOAT_LAYERS = (".*conv_first.*", ".*conv_last.*")
"""Layers left in float: the two that touch the image. Measured (x4, 12 calibration scenes): quantising them
too lost 0.12 dB of validation PSNR against f32, leaving them 0.10 dB, for under 1 % of the FLOPs."""
CALIBRATION_SCENES = 12
CALIBRATION_CROP = (96, 160)
"""Low-resolution calibration crop (height, width): large enough to see each scene's range of levels."""


def calibration_frames(scale: int, scenes_dir: Path | None = SCENES_DIR) -> list[tuple[str, NDArray[np.uint8]]]:
    """Named 8-bit I420 calibration frames: training-scene crops, or sample-clip crops where there are no masters."""
    if scenes_dir is not None and scenes_dir.is_dir():
        from gpgmnet import data

        frames = []
        for path in data.split_files(scenes_dir, "train")[:CALIBRATION_SCENES]:
            scene = data.read_scene(path)
            height, width = scene.rgb.shape[:2]
            size_h, size_w = min(CALIBRATION_CROP[0] * scale, height), min(CALIBRATION_CROP[1] * scale, width)
            size_h, size_w = size_h // (2 * scale) * 2 * scale, size_w // (2 * scale) * 2 * scale
            top, left = (height - size_h) // 2, (width - size_w) // 2
            cropped = dataclasses.replace(scene, rgb=scene.rgb[top:top + size_h, left:left + size_w])
            frames.append((path.name, data.form_pair(cropped, scale).lr_i420))
        return frames
    from build.precision_gate import gate_frames

    return gate_frames(scale, scenes_dir=None)


def quantize_network(onnx_path: Path, frames: list[tuple[str, NDArray[np.uint8]]], out_path: Path) -> Path:
    """``nncf.quantize`` of ``onnx_path`` on ``frames`` (default rendering), saved as the OpenVINO IR ``out_path``."""
    import nncf  # build-time only: the server loads the saved IR with OpenVINO alone
    import openvino as ov

    nncf.set_log_level(logging.WARNING)
    condition = condition_one_hot(Rendering())
    samples = [{NETWORK_INPUT_NAME: network_input_from_i420(i420), NETWORK_CONDITION_NAME: condition}
               for _, i420 in frames]
    model = ov.Core().read_model(str(onnx_path))
    quantized = nncf.quantize(model, nncf.Dataset(samples), subset_size=len(samples),
                              preset=nncf.QuantizationPreset.PERFORMANCE,
                              ignored_scope=nncf.IgnoredScope(patterns=list(FLOAT_LAYERS)))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, str(out_path), compress_to_fp16=False)
    return out_path


def main(argv: list[str] | None = None) -> int:
    """``python -m build.quantize_int8``: writes the int8 IR and prints where, with the calibration's size and time."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, choices=(2, 4), default=4)
    parser.add_argument("--onnx", type=Path, help="default: build/artifacts/gpgmnet_x{scale}.onnx")
    parser.add_argument("--out", type=Path, help="default: build/artifacts/gpgmnet_x{scale}_int8.xml")
    args = parser.parse_args(argv)
    onnx_path = args.onnx or ROOT / "build" / "artifacts" / f"gpgmnet_x{args.scale}.onnx"
    if not onnx_path.is_file():
        print(f"error: {onnx_path} does not exist: run python -m build.export_onnx first", file=sys.stderr)
        return 2
    out = args.out or ROOT / "build" / "artifacts" / f"gpgmnet_x{args.scale}_int8.xml"
    frames = calibration_frames(args.scale)
    start = time.perf_counter()
    quantize_network(onnx_path, frames, out)
    print(f"x{args.scale} int8: {out} (calibrated on {len(frames)} frames in {time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
