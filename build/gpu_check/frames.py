"""The parity frames: HDR scenes through the training pipeline, else the sample clip, else synthetic frames."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np

from build.gpu_check.report import Report
from sritm_core import colour


def _rgb_to_i420(rgb: Any) -> Any:
    """R'G'B' in [0, 1] (H×W×3) → 8-bit BT.709 narrow-range I420, through sritm_core.colour."""
    codes = colour.rgb_to_codes(np.clip(rgb, 0.0, 1.0), colour.BT709, 8)
    return colour.quantize_i420(codes, 8).astype(np.uint8)


def _fit(image: Any, size: tuple[int, int]) -> Any:
    """Centre-crop an H×W×C image to ``size``, mirroring it first where it is smaller."""
    height, width = size
    while image.shape[0] < height or image.shape[1] < width:
        pad_h = max(0, min(height - image.shape[0], image.shape[0]))
        pad_w = max(0, min(width - image.shape[1], image.shape[1]))
        image = np.pad(image, ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)),
                       mode="symmetric")
    top, left = (image.shape[0] - height) // 2, (image.shape[1] - width) // 2
    return np.ascontiguousarray(image[top : top + height, left : left + width])


def synthetic_frames(size: tuple[int, int], count: int) -> list[Any]:
    """Gradients, edges, a saturated patch and noise (as ``tests/test_repository.py``'s frames)."""
    height, width = size
    frames = []
    for seed in range(count):
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
        rgb = np.stack([0.5 + 0.5 * np.sin(7 * xx + seed), yy, (xx + yy) % 0.5 * 2], axis=-1)
        rgb[height // 3 : height // 2, width // 4 : width // 2] = [0.95, 0.9, 0.1]
        rgb = rgb + rng.normal(0, 0.03, rgb.shape)
        frames.append(_rgb_to_i420(rgb))
    return frames


def sample_frames(path: Path, size: tuple[int, int], count: int) -> tuple[list[Any], str]:
    """Frames of the sample clip, up-sized (bicubic) to cover ``size`` and centre-cropped."""
    import cv2
    decoded: list[Any] = []
    try:
        import av

        with av.open(str(path)) as container:
            decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
        decoder = "PyAV"
    except ImportError:
        capture = cv2.VideoCapture(str(path))
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            decoded.append(bgr[..., ::-1])
        capture.release()
        decoder = "OpenCV (BT.601 decode)"
    if not decoded:
        raise RuntimeError(f"no frames decoded from {path}")
    picks = [decoded[round(i * (len(decoded) - 1) / max(count - 1, 1))] for i in range(count)]
    frames = []
    for rgb8 in picks:
        height, width = rgb8.shape[:2]
        factor = max(size[0] / height, size[1] / width)
        up = cv2.resize(rgb8.astype(np.float32) / 255.0, (math.ceil(width * factor), math.ceil(height * factor)),
                        interpolation=cv2.INTER_CUBIC)
        frames.append(_rgb_to_i420(_fit(up, size)))
    return frames, (f"{len(frames)} of {len(decoded)} frames of {path.name} ({decoder}), "
                    f"resized ×{factor:.2f} (bicubic), centre crop")


def scene_frames(scenes_dir: Path, scale: int, size: tuple[int, int], count: int) -> tuple[list[Any], str]:
    """LR SDR frames formed from HDR masters exactly as for training/evaluation, fitted to ``size``."""
    from gpgmnet import data  # here: the training data pipeline, for --scenes only

    names = set(data.load_split()["val"])
    files = data.scene_files(scenes_dir)
    chosen = ([p for p in files if p.stem in names] or files)[:count]
    frames, used = [], []
    for path in chosen:
        pair = data.form_pair(data.read_scene(path), scale)
        yuv = _fit(colour.i420_to_yuv444(pair.lr_i420), size)
        frames.append(colour.quantize_i420(yuv, 8).astype("uint8"))
        used.append(f"{path.stem} (LR {pair.lr_size[0]}×{pair.lr_size[1]})")
    return frames, f"{len(frames)} scenes of {scenes_dir}: {', '.join(used)}; centre-cropped / mirror-padded"


Frames = dict[int, list[Any]]
"""8-bit I420 frames by scale."""
Sizes = dict[int, tuple[int, int]]
"""Low-resolution frame sizes (height, width) by scale."""


def _from_scenes(args: argparse.Namespace, sizes: Sizes, report: Report) -> tuple[Frames, str] | None:
    """The ``--scenes`` frames and their description; None without ``--scenes``."""
    if args.scenes is None:
        return None
    frames: Frames = {}
    details = []
    for scale, size in sizes.items():
        frames[scale], detail = scene_frames(args.scenes, scale, size, args.parity_frames)
        details.append(f"x{scale}: {detail}")
    return frames, "; ".join(details)


def _from_sample(args: argparse.Namespace, sizes: Sizes, report: Report) -> tuple[Frames, str] | None:
    """The sample clip's frames and their description; None (recorded as skipped) when it cannot be read."""
    if not args.sample.is_file():
        report.skip("sample clip frames", f"{args.sample} is absent")
        return None
    frames: Frames = {}
    detail = ""
    try:
        for scale, size in sizes.items():
            frames[scale], detail = sample_frames(args.sample, size, args.parity_frames)
    except Exception as error:  # no decoder here: synthetic frames instead
        report.skip("sample clip frames", f"{type(error).__name__}: {error}")
        return None
    return frames, detail


def _synthetic(args: argparse.Namespace, sizes: Sizes, report: Report) -> tuple[Frames, str]:
    """Synthetic structured frames at every size, and their description."""
    frames = {scale: synthetic_frames(size, args.parity_frames) for scale, size in sizes.items()}
    return frames, "synthetic structured frames (gradients, edges, a saturated patch, noise)"


def make_frames(args: argparse.Namespace, sizes: Sizes, report: Report) -> Frames:
    """The parity frames from the first source that gives them (recorded in the report's ``frames``)."""
    frames: Frames = {}
    info: dict[str, Any] = {"count": args.parity_frames, "sizes": {str(s): list(v) for s, v in sizes.items()}}
    for source, load in (("scenes", _from_scenes), ("sample", _from_sample), ("synthetic", _synthetic)):
        try:
            loaded = load(args, sizes, report)
        except Exception as error:  # fall back to the next source
            report.error(f"frames from {source}", error)
            continue
        if loaded is not None:
            frames, info["detail"] = loaded
            info["source"] = source
            break
    report.data["frames"] = info
    report.log(f"frames: {info.get('source')}: {info.get('detail')}")
    return frames
