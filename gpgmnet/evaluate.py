"""Evaluate GPGMNet and the bicubic baseline (``sritm evaluate``; :func:`main`).

``sritm evaluate --scenes DIR --scale 4 [--checkpoint CKPT] [--json OUT]``
forms, for every readable EXR/.hdr image of DIR (or one part of the split,
``--split val``), the unjittered HDR10/LR pair exactly as training does
(:mod:`gpgmnet.data`), takes its centre crop (``--crop``, default 480 x 480
HR pixels; 0 for whole images), and scores

* GPGMNet (``--checkpoint``; default the shipped ``weights/gpgmnet_x{s}.pt``,
  else the seeded untrained network, with a warning), its output clamped to
  [0, 1] as Kim et al.'s test code does, and
* the classical baseline (:mod:`gpgmnet.baseline`: bicubic, BT.1886, SDR
  white at 203 cd/m^2, BT.2020, PQ),

against the HDR10 master with :mod:`gpgmnet.metrics` (PSNR, SSIM, mPSNR,
MS-SSIM, mean L2 error in L*a*b* and in L* only, mean Delta E_ITP of ITU-R
BT.2124). ``--kim DIR`` scores Kim
et al.'s test set (``testset_SDR_x{s}.mat`` / ``testset_HDR.mat``) instead.

Prints a Markdown table (per scene, then the means over scenes) and writes
it with ``--markdown``; ``--json`` writes the same numbers (infinite values as
the string "inf", undefined ones as null). A missing, corrupt or wrong-scale
checkpoint, a missing folder, or a folder without one readable image prints
one ``error: ...`` line and exits with status 2; an unreadable image is
skipped with a warning naming it.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gpgmnet import data, gradings, metrics
from gpgmnet.arch import GPGMNet
from gpgmnet.baseline import bicubic_baseline
from gpgmnet.checkpoint import CheckpointError, load_network
from gpgmnet.train import classical_input, convention_input
from sritm_core import colour
from sritm_core.contract import HDR_CODE_SCALE, SCALES, SDR_CODE_SCALE

log = logging.getLogger(__name__)

METHODS = ("gpgmnet", "bicubic")
COLUMNS = {
    "psnr": ("PSNR (dB)", "{:.2f}"),
    "ssim": ("SSIM", "{:.4f}"),
    "mpsnr": ("mPSNR (dB)", "{:.2f}"),
    "ms_ssim": ("MS-SSIM", "{:.4f}"),
    "lab_l2": ("L*a*b* L2", "{:.2f}"),
    "l_l2": ("L* L2", "{:.2f}"),
    "delta_e_itp": ("ΔE ITP", "{:.2f}"),
}
METHOD_LABELS = {"gpgmnet": "GPGMNet", "bicubic": "bicubic + BT.2408"}


@dataclass(frozen=True)
class ScenePictures:
    """One scene's images as H x W x 3 normalised Y'CbCr codes: SDR input (/255), outputs and master (/1023)."""

    name: str
    sdr_input: np.ndarray
    outputs: dict[str, np.ndarray]
    master: np.ndarray


def _hwc(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(x)[0].transpose(1, 2, 0), dtype=np.float64)


def center_crop_arrays(lr: np.ndarray, hr: np.ndarray, scale: int, crop: int) -> tuple[np.ndarray, np.ndarray]:
    """Centre crop of N x 3 x h x w / N x 3 x sh x sw arrays to at most ``crop`` HR pixels, even LR offsets."""
    if crop <= 0:
        return lr, hr
    h, w = lr.shape[-2:]
    side = max(2, (crop // scale) // 2 * 2)
    ch, cw = min(h, side), min(w, side)
    top, left = (h - ch) // 4 * 2, (w - cw) // 4 * 2
    lr = lr[..., top : top + ch, left : left + cw]
    hr = hr[..., scale * top : scale * (top + ch), scale * left : scale * (left + cw)]
    return np.ascontiguousarray(lr), np.ascontiguousarray(hr)


def score(
    items: Iterable[tuple[str, np.ndarray, np.ndarray]],
    network: GPGMNet,
    scale: int,
    device: torch.device,
    progress: bool = False,
    pictures: list[ScenePictures] | None = None,
    convention: str = gradings.DEFAULT,
) -> list[dict[str, Any]]:
    """Metrics of GPGMNet and the baseline for each (name, LR input 1x3xhxw, HR target 1x3xHxW).

    With ``pictures``, each scene's input, outputs and target are appended to it (for :func:`save_figure`).
    ``convention`` is the preset a conditioned network is told (a paper-form network has none).
    """
    from tqdm import tqdm

    network.to(device).eval()
    rows = []
    for name, lr, hr in tqdm(list(items), desc="evaluating", disable=not progress, leave=False):
        x = torch.from_numpy(np.ascontiguousarray(lr, dtype=np.float32)).to(device)
        one_hot = convention_input(network, torch.tensor([gradings.index_of(convention)]))
        with torch.no_grad():
            prediction = network(x, None if one_hot is None else one_hot.to(device), classical_input(network, x))
        outputs = {
            "gpgmnet": prediction.clamp(0.0, 1.0).cpu().numpy(),
            "bicubic": np.clip(bicubic_baseline(lr, scale), 0.0, 1.0),
        }
        reference = _hwc(hr)
        row: dict[str, Any] = {"name": name, "size": list(reference.shape[:2])}
        for method in METHODS:
            row[method] = metrics.all_metrics(reference, _hwc(outputs[method]))
        rows.append(row)
        if pictures is not None:
            pictures.append(ScenePictures(name, _hwc(lr), {m: _hwc(outputs[m]) for m in METHODS}, reference))
    return rows


def averages(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per method, the mean of each metric over the rows (undefined values skipped)."""
    out: dict[str, dict[str, float]] = {}
    for method in METHODS:
        out[method] = {}
        for key in metrics.METRIC_NAMES:
            values = [r[method][key] for r in rows if not math.isnan(r[method][key])]
            out[method][key] = float(np.mean(values)) if values else math.nan
    return out


def _cell(value: float, fmt: str) -> str:
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return fmt.format(value)


def markdown_table(rows: Sequence[dict[str, Any]], means: dict[str, dict[str, float]], title: str) -> str:
    """The Markdown table, headed ``title``: a row per scene and method, then the means over the scenes."""
    head = ["scene", "method", *(label for label, _ in COLUMNS.values())]
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * len(COLUMNS)]
    for row in rows:
        for method in METHODS:
            cells = [_cell(row[method][k], fmt) for k, (_, fmt) in COLUMNS.items()]
            lines.append(f"| {row['name']} | {METHOD_LABELS[method]} | " + " | ".join(cells) + " |")
    for method in METHODS:
        cells = [_cell(means[method][k], fmt) for k, (_, fmt) in COLUMNS.items()]
        lines.append(f"| **mean ({len(rows)})** | **{METHOD_LABELS[method]}** | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


FIGURE_SCENES = 6
"""At most this many scenes (rows) in ``--figure``."""


def save_figure(pictures: Sequence[ScenePictures], rows: Sequence[dict[str, Any]], scale: int, path: Path,
                title: str) -> Path:
    """A picture, a row per scene: the SDR input, the baseline, GPGMNet and the HDR10 master.

    The HDR images are tone-mapped for an SDR screen with BT.2446-1 Method A
    (:func:`sritm_client.preview.pq_rgb_to_sdr_rgb8`, as ``make demo``'s
    side-by-side picture does), so they compare as a viewer would see them;
    each title gives that image's PSNR against the master.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sritm_client.preview import pq_rgb_to_sdr_rgb8

    def sdr_rgb8(codes: np.ndarray) -> np.ndarray:
        rgb = colour.codes_to_rgb(codes * SDR_CODE_SCALE, colour.BT709, 8)
        return np.rint(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)

    def hdr_rgb8(codes: np.ndarray) -> np.ndarray:
        return pq_rgb_to_sdr_rgb8(colour.codes_to_rgb(codes * HDR_CODE_SCALE, colour.BT2020, 10))

    shown = list(zip(pictures, rows))[:FIGURE_SCENES]
    columns = 2 + len(METHODS)
    figure, axes = plt.subplots(len(shown), columns, figsize=(3.2 * columns, 3.4 * len(shown)), squeeze=False)
    for (scene, row), axis_row in zip(shown, axes):
        panels = [(sdr_rgb8(scene.sdr_input), f"SDR input ({scene.sdr_input.shape[1]}×{scene.sdr_input.shape[0]})")]
        for method in ("bicubic", "gpgmnet"):
            panels.append((hdr_rgb8(scene.outputs[method]), f"{METHOD_LABELS[method]}: {row[method]['psnr']:.2f} dB"))
        panels.append((hdr_rgb8(scene.master), f"HDR10 master ({scene.master.shape[1]}×{scene.master.shape[0]})"))
        for axis, (image, label) in zip(axis_row, panels):
            axis.imshow(image, interpolation="nearest")
            axis.set_title(label, fontsize=9)
            axis.set_xticks([])
            axis.set_yticks([])
        axis_row[0].set_ylabel(scene.name, fontsize=9)
    figure.suptitle(f"{title}\nHDR panels tone-mapped for an SDR screen (BT.2446-1 Method A); ×{scale}", fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    # The format follows the suffix; a JPEG of the six validation scenes is a fifth of the PNG's size.
    jpeg = path.suffix.lower() in (".jpg", ".jpeg")
    figure.savefig(path, dpi=80, pil_kwargs={"quality": 90} if jpeg else None)
    plt.close(figure)
    return path


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``sritm evaluate``."""
    parser = argparse.ArgumentParser(prog="sritm evaluate", description="Score GPGMNet and the bicubic baseline.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--scenes", type=Path, help="folder of EXR/.hdr HDR masters")
    source.add_argument("--kim", type=Path, help="folder with Kim et al.'s testset_SDR_x{s}.mat and testset_HDR.mat")
    parser.add_argument("--scale", type=int, choices=SCALES, default=4)
    parser.add_argument("--checkpoint", type=Path, help="GPGMNet checkpoint (default: the shipped weights)")
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    parser.add_argument("--markdown", type=Path, help="write the Markdown table here too")
    parser.add_argument("--figure", type=Path,
                        help=f"write a picture here (PNG, or JPEG by the suffix): input, baseline, GPGMNet and master "
                             f"side by side, first {FIGURE_SCENES} scenes (needs matplotlib)")
    parser.add_argument("--crop", type=int, default=data.DEFAULT_VALIDATION_CROP,
                        help="centre crop, at most CROP x CROP HR pixels (0: whole images; default %(default)s)")
    parser.add_argument("--split", choices=("all", "train", "val"), default="all",
                        help="with --scenes: only this part of the split (default: every image)")
    parser.add_argument("--split-file", type=Path, default=data.SPLIT_FILE)
    parser.add_argument("--limit", type=int, help="with --kim: only the first LIMIT frames")
    parser.add_argument("--grading", choices=gradings.NAMES, default=gradings.DEFAULT,
                        help="with --scenes: grade the SDR inputs this way (gpgmnet.gradings); the network is told "
                        "the same preset (default %(default)s)")
    parser.add_argument("--compressed", action="store_true",
                        help="with --scenes: put each LR input through H.264 (libx264, CRF 28) first")
    parser.add_argument("--matrix", type=Path,
                        help="with --scenes: instead of one table, the cross-grading matrix (every grading, clean and "
                        "H.264 CRF 28; PSNR and Delta E_ITP of GPGMNet with the matching preset beside the baseline) "
                        "as Markdown here, and as JSON beside it")
    parser.add_argument("--cache-dir", type=Path, help="reuse/keep formed pairs under this cache root")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _items(args: argparse.Namespace) -> tuple[list[tuple[str, np.ndarray, np.ndarray]], str]:
    if args.kim is not None:
        pairs = data.kim_test_pairs(args.kim, args.scale)
        count = len(pairs) if args.limit is None else min(len(pairs), args.limit)
        items = []
        for index in range(count):
            lr, hr = pairs.read(slice(index, index + 1))
            lr, hr = center_crop_arrays(lr, hr, args.scale, args.crop)
            items.append((f"frame {index + 1:03d}", lr, hr))
        return items, f"Kim et al. test set ({args.kim})"
    paths = data.split_files(args.scenes, args.split, args.split_file)
    samples = data.render_validation_set(paths, args.scale, args.crop, args.cache_dir,
                                         use_cache=args.cache_dir is not None, grading=args.grading,
                                         compressed=args.compressed)
    how = f"{args.grading}{', H.264 CRF 28' if args.compressed else ''}"
    return [(s.name, s.lr, s.hr) for s in samples], f"{args.scenes} ({args.split}, {how})"


MATRIX_METRICS = ("psnr", "delta_e_itp")


def cross_grading_matrix(args: argparse.Namespace, network: GPGMNet, device: torch.device) -> dict[str, Any]:
    """Mean PSNR and Delta E_ITP of GPGMNet and of the baseline, per grading x {clean, H.264}.

    GPGMNet is told the preset that matches the grading.
    """
    cells: dict[str, Any] = {}
    for grading in gradings.NAMES:
        for compressed in (False, True):
            args.grading, args.compressed = grading, compressed
            items, _ = _items(args)
            means = averages(score(items, network, args.scale, device, progress=not args.quiet, convention=grading))
            cells[grading + ("+h264" if compressed else "")] = {
                method: {key: means[method][key] for key in MATRIX_METRICS} for method in METHODS
            }
    return cells


def matrix_markdown(cells: dict[str, Any], title: str) -> str:
    """Rows: the method (GPGMNet with the column's preset, the baseline); columns: grading, clean and H.264."""
    names = list(cells)
    lines = [f"### {title}", "", "| | " + " | ".join(f"`{n}`" for n in names) + " |",
             "|---|" + "---|" * len(names)]
    for method in METHODS:
        for key, label in (("psnr", "PSNR dB"), ("delta_e_itp", "ΔE ITP")):
            values = " | ".join(_cell(cells[n][method][key], "{:.2f}") for n in names)
            lines.append(f"| {METHOD_LABELS[method]} {label} | {values} |")
    gains = " | ".join(f"{cells[n]['gpgmnet']['psnr'] - cells[n]['bicubic']['psnr']:+.2f}" for n in names)
    lines.append(f"| **GPGMNet − baseline, dB** | {gains} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """``sritm evaluate``: 0 on success, 2 with one ``error:`` line on a bad checkpoint or data."""
    args = build_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")
    try:
        try:
            device = torch.device(args.device)
        except RuntimeError:
            raise data.DataError(f"unknown device {args.device!r}") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise data.DataError(f"device {args.device!r} asked for, but CUDA is not available here")
        network, meta = load_network(args.checkpoint, args.scale)
        started = time.perf_counter()
        if args.matrix is not None:
            if args.scenes is None:
                raise data.DataError("--matrix needs --scenes")
            cells = cross_grading_matrix(args, network, device)
            title = (f"x{args.scale}, {args.scenes} ({args.split}), GPGMNet from {meta.get('source', 'untrained')} "
                     f"(step {meta.get('step', 0)}), crop {args.crop or 'none'}")
            table = matrix_markdown(cells, title)
            print(table)
            args.matrix.parent.mkdir(parents=True, exist_ok=True)
            args.matrix.write_text(table)
            args.matrix.with_suffix(".json").write_text(json.dumps(_json_safe(
                {"title": title, "cells": cells, "seconds": round(time.perf_counter() - started, 2)}), indent=2) + "\n")
            return 0
        items, source = _items(args)
        pictures: list[ScenePictures] | None = [] if args.figure is not None else None
        # The network is told the preset that matches the grading, as the matrix does (the help says so).
        convention = args.grading if args.scenes is not None else gradings.DEFAULT
        rows = score(items, network, args.scale, device, progress=not args.quiet, pictures=pictures,
                     convention=convention)
    except (CheckpointError, data.DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    means = averages(rows)
    checkpoint = meta.get("source", "untrained")
    title = (f"x{args.scale} on {source}, GPGMNet from {checkpoint} (step {meta.get('step', 0)}), "
             f"crop {args.crop or 'none'}")
    table = markdown_table(rows, means, title)
    print(table)
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table)
    if pictures is not None:
        print(f"figure: {save_figure(pictures, rows, args.scale, args.figure, title)}")
    if args.json is not None:
        document = {
            "scale": args.scale,
            "source": source,
            "checkpoint": checkpoint,
            "step": meta.get("step", 0),
            "crop": args.crop,
            "metrics": {k: label for k, (label, _) in COLUMNS.items()},
            "methods": METHOD_LABELS,
            "scenes": rows,
            "mean": means,
            "seconds": round(time.perf_counter() - started, 2),
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(_json_safe(document), indent=2, allow_nan=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
