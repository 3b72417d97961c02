"""Pictures of a conversion: the SDR input next to the HDR output as an SDR screen would show it.

The HDR frame is tone-mapped for display with the project's own BT.2446-1
Method A (``sritm_core.colour``), then BT.2020→BT.709 and BT.1886, so the picture
shows what the HDR10 grade holds rather than the washed-out look of PQ codes
read as gamma. A histogram of the frame's PQ luminance goes beside it.
Needs matplotlib (``pip install 'sritm[preview]'``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sritm_core import colour


def sdr_i420_to_rgb8(i420: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """An 8-bit BT.709 I420 frame as 8-bit R'G'B' for display."""
    rgb = colour.codes_to_rgb(colour.i420_to_yuv444(i420), colour.BT709, 8)
    rgb8: NDArray[np.uint8] = np.rint(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)
    return rgb8


def hdr_i420_to_pq_rgb(i420: NDArray[np.uint16]) -> NDArray[np.float64]:
    """A 10-bit BT.2020 PQ I420 frame as PQ R'G'B' in [0, 1]."""
    return np.clip(colour.codes_to_rgb(colour.i420_to_yuv444(i420), colour.BT2020, 10), 0.0, 1.0)


def hdr_i420_to_sdr_rgb8(i420: NDArray[np.uint16], hdr_peak: float = 1000.0) -> NDArray[np.uint8]:
    """Tone-maps an HDR10 frame for an SDR (BT.709, BT.1886, 100 cd/m²) screen."""
    return pq_rgb_to_sdr_rgb8(hdr_i420_to_pq_rgb(i420), hdr_peak)


def pq_rgb_to_sdr_rgb8(pq_rgb: NDArray[np.floating[Any]], hdr_peak: float = 1000.0) -> NDArray[np.uint8]:
    """Tone-maps BT.2020 PQ R'G'B' in [0, 1] for an SDR (BT.709, BT.1886, 100 cd/m²) screen."""
    display = colour.hdr10_to_sdr_bt709(np.clip(pq_rgb, 0.0, 1.0), hdr_peak=hdr_peak)
    rgb8: NDArray[np.uint8] = np.rint(np.clip(display, 0.0, 1.0) * 255.0).astype(np.uint8)
    return rgb8


def pq_luminance_cd_m2(i420: NDArray[np.uint16]) -> NDArray[np.float64]:
    """Per-pixel luminance (cd/m²) of an HDR10 frame: BT.2020 Y of the PQ-decoded R, G, B."""
    linear = colour.pq_eotf(hdr_i420_to_pq_rgb(i420))
    return np.asarray(linear @ np.array([colour.BT2020.kr, colour.BT2020.kg, colour.BT2020.kb]), dtype=np.float64)


def save_side_by_side(
    sdr_i420: NDArray[np.uint8], hdr_i420: NDArray[np.uint16] | Mapping[str, NDArray[np.uint16]], path: Path,
    title: str = "",
) -> Path:
    """Writes a PNG: SDR input | each HDR output tone-mapped for SDR | their PQ luminance histograms.

    ``hdr_i420`` is one output, or several by label (e.g. one per convention preset).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outputs = {"HDR10 output": hdr_i420} if isinstance(hdr_i420, np.ndarray) else dict(hdr_i420)
    count = len(outputs)
    figure, axes = plt.subplots(1, count + 2, figsize=(5 * (count + 1) + 4, 4.2),
                                gridspec_kw={"width_ratios": [1] * (count + 1) + [0.8]})
    axes[0].imshow(sdr_i420_to_rgb8(sdr_i420), interpolation="nearest")
    axes[0].set_title(f"SDR input ({sdr_i420.shape[1]}×{sdr_i420.shape[0] * 2 // 3}, BT.709)")
    bins = np.logspace(-2, 4, 61)
    histogram = axes[-1]
    for axis, (label, hdr) in zip(axes[1:-1], outputs.items()):
        axis.imshow(hdr_i420_to_sdr_rgb8(hdr))
        axis.set_title(f"{label} ({hdr.shape[1]}×{hdr.shape[0] * 2 // 3}), tone-mapped for SDR", fontsize=9)
        luminance = pq_luminance_cd_m2(hdr)
        histogram.hist(np.clip(luminance.ravel(), bins[0], bins[-1]), bins=bins, histtype="step", linewidth=1.5,
                       label=f"{label}: max {luminance.max():.0f} cd/m²")
    for axis in axes[:-1]:
        axis.axis("off")
    histogram.set_xscale("log")
    histogram.set_xlabel("luminance (cd/m², PQ-decoded)")
    histogram.set_ylabel("pixels")
    histogram.axvline(colour.SDR_REFERENCE_WHITE_CD_M2, color="grey", linestyle="--", label="203 cd/m² (BT.2408 white)")
    histogram.set_title("PQ luminance")
    histogram.legend(loc="upper left", fontsize=7)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def nth_frame(path: Path, index: int, pixel_format: str) -> NDArray[np.generic]:
    """Frame ``index`` (0-based, presentation order) of a video as an I420 array in ``pixel_format``."""
    import av

    with av.open(str(path)) as container:
        for position, frame in enumerate(container.decode(video=0)):
            if position == index:
                return frame.to_ndarray(format=pixel_format)
    raise ValueError(f"{path} has no frame {index}")


def middle_frames(sdr_video: Path, hdr_video: Path, frame_count: int) -> tuple[NDArray[np.uint8], NDArray[np.uint16]]:
    """The middle frame of an SDR input and of its HDR10 conversion."""
    middle = frame_count // 2
    return (
        nth_frame(sdr_video, middle, "yuv420p").astype(np.uint8, copy=False),
        nth_frame(hdr_video, middle, "yuv420p10le").astype(np.uint16, copy=False),
    )
