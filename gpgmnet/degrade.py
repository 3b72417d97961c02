"""Real codec round trips for LR training inputs: SDR reaches the service as decoded, compressed video.

Each function takes an 8-bit I420 frame (the LR input a client sends) and
returns what a decoder gives back after a real encoder ran on it: libx264 or
libx265 through PyAV (FFmpeg), yuv420p, constant-rate-factor mode, the frame
coded alone as an intra picture; or JPEG through OpenCV's libjpeg (images
reach users as JPEG). Nothing here simulates a codec.

:func:`random_degradation` is the training mix (see ``DEGRADATION_MIX``);
the validation set's compressed twin is :func:`h264` at CRF 28.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import cv2
import numpy as np
from numpy.typing import NDArray

from sritm_core import colour

CRF_RANGE = (18, 35)
JPEG_QUALITY_RANGE = (40, 95)
VALIDATION_CRF = 28
DEGRADATION_MIX = (("libx264", 0.5), ("libx265", 0.3), ("jpeg", 0.2))
"""Of the degraded training inputs: half H.264, 30 % HEVC, 20 % JPEG."""


@dataclass(frozen=True)
class Degradation:
    """One codec round trip: ``codec`` in {"libx264", "libx265", "jpeg"}, ``quality`` = CRF or JPEG quality."""

    codec: str
    quality: int

    def apply(self, i420: NDArray[np.uint8]) -> NDArray[np.uint8]:
        """The I420 frame a decoder gives back after this round trip of ``i420``."""
        if self.codec == "jpeg":
            return jpeg(i420, self.quality)
        return video_round_trip(i420, self.codec, self.quality)

    def __str__(self) -> str:
        return f"{self.codec} q{self.quality}" if self.codec == "jpeg" else f"{self.codec} crf {self.quality}"


def video_round_trip(i420: NDArray[np.uint8], codec: str, crf: int) -> NDArray[np.uint8]:
    """Encode one I420 frame with ``codec`` (libx264/libx265) at ``crf``, decode it, return the decoded I420."""
    y, _, _ = colour.unpack_i420(i420)
    height, width = y.shape
    encoder: Any = av.CodecContext.create(codec, "w")
    encoder.width, encoder.height = width, height
    encoder.pix_fmt = "yuv420p"
    encoder.time_base = Fraction(1, 25)
    options = {"crf": str(crf), "preset": "veryfast"}
    if codec == "libx265":
        options["x265-params"] = "log-level=none"
    encoder.options = options
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(i420), format="yuv420p")
    frame.pts = 0
    packets = list(encoder.encode(frame)) + list(encoder.encode(None))
    decoder: Any = av.CodecContext.create("h264" if codec == "libx264" else "hevc", "r")
    decoded = []
    for packet in packets:
        decoded += decoder.decode(packet)
    decoded += decoder.decode(None)
    if len(decoded) != 1:
        raise RuntimeError(f"{codec} round trip of a {width}x{height} frame gave {len(decoded)} frames")
    return np.ascontiguousarray(decoded[0].to_ndarray(format="yuv420p"), dtype=np.uint8)


def h264(i420: NDArray[np.uint8], crf: int = VALIDATION_CRF) -> NDArray[np.uint8]:
    """libx264 round trip at ``crf`` (the validation set's compressed twin uses CRF 28)."""
    return video_round_trip(i420, "libx264", crf)


def jpeg(i420: NDArray[np.uint8], quality: int) -> NDArray[np.uint8]:
    """JPEG round trip as a photo takes it: narrow-range Y'CbCr -> 8-bit R'G'B' -> libjpeg (4:2:0) -> back."""
    y, _, _ = colour.unpack_i420(i420)
    yuv444 = colour.i420_to_yuv444(i420)
    rgb = np.clip(colour.codes_to_rgb(yuv444, colour.BT709, 8), 0.0, 1.0)
    bgr8 = np.round(rgb[..., ::-1] * 255.0).astype(np.uint8)
    ok, encoded = cv2.imencode(".jpg", bgr8, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError(f"JPEG encoding of a {y.shape[1]}x{y.shape[0]} frame failed")
    decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float64) / 255.0
    return colour.quantize_i420(colour.rgb_to_codes(decoded, colour.BT709, 8), 8).astype(np.uint8, copy=False)


def random_degradation(rng: np.random.Generator) -> Degradation:
    """A draw from ``DEGRADATION_MIX``: CRF uniform in 18..35, JPEG quality uniform in 40..95."""
    names = [name for name, _ in DEGRADATION_MIX]
    weights = np.array([w for _, w in DEGRADATION_MIX])
    codec = names[int(rng.choice(len(names), p=weights / weights.sum()))]
    low, high = JPEG_QUALITY_RANGE if codec == "jpeg" else CRF_RANGE
    return Degradation(codec, int(rng.integers(low, high + 1)))
