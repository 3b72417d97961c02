"""Tests for gpgmnet.degrade: real libx264 / libx265 / libjpeg round trips of 8-bit I420 frames.

The frames are built plane by plane here (the yuv420p byte order: Y, then U,
then V) and PSNR is computed here, so nothing is checked with the module's
own helpers.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from gpgmnet import degrade
from gpgmnet.degrade import Degradation

H, W = 64, 64


def i420(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Planes -> a (3H/2, W) yuv420p buffer."""
    height, width = y.shape
    assert u.shape == v.shape == (height // 2, width // 2)
    planes = [np.asarray(p, dtype=np.uint8).ravel() for p in (y, u, v)]
    return np.concatenate(planes).reshape(3 * height // 2, width)


def planes(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    height = frame.shape[0] * 2 // 3
    width = frame.shape[1]
    flat = frame.ravel()
    n, c = height * width, (height // 2) * (width // 2)
    return (flat[:n].reshape(height, width), flat[n : n + c].reshape(height // 2, width // 2),
            flat[n + c :].reshape(height // 2, width // 2))


def textured(height: int = H, width: int = W, seed: int = 0) -> np.ndarray:
    """Legal-range content with structure at several scales and noise: what a codec has to throw away."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    y = 128 + 50 * np.sin(xx / 3.0) * np.cos(yy / 5.0) + rng.normal(0, 12, (height, width))
    y[height // 4 : height // 2, width // 4 : width // 2] = 220  # a sharp-edged bright block
    cy, cx = yy[::2, ::2], xx[::2, ::2]
    u = 128 + 30 * np.sin(cx / 4.0) + rng.normal(0, 5, cy.shape)
    v = 128 - 30 * np.cos(cy / 4.0) + rng.normal(0, 5, cy.shape)
    return i420(np.clip(y, 16, 235), np.clip(u, 16, 240), np.clip(v, 16, 240))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def luma_psnr(reference: np.ndarray, decoded: np.ndarray) -> float:
    return psnr(planes(reference)[0], planes(decoded)[0])


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    return textured()


@pytest.mark.parametrize("codec", ["libx264", "libx265"])
def test_video_round_trip_is_real_and_crf_orders_the_quality(frame: np.ndarray, codec: str) -> None:
    fine = degrade.video_round_trip(frame, codec, 18)
    coarse = degrade.video_round_trip(frame, codec, 35)
    for decoded in (fine, coarse):
        assert decoded.shape == frame.shape and decoded.dtype == np.uint8
        assert not np.array_equal(decoded, frame)  # a real lossy coder ran
    assert 30.0 < luma_psnr(frame, fine) < 60.0
    assert luma_psnr(frame, fine) > luma_psnr(frame, coarse) + 3.0
    assert 18.0 < luma_psnr(frame, coarse)  # degraded, still the same picture
    for plane_in, plane_out in zip(planes(frame)[1:], planes(fine)[1:]):
        assert psnr(plane_in, plane_out) > 28.0  # the chroma planes come back in their places
    assert np.array_equal(degrade.video_round_trip(frame, codec, 18), fine)  # intra coding is deterministic


def test_h264_defaults_to_the_validation_crf(frame: np.ndarray) -> None:
    assert degrade.VALIDATION_CRF == 28
    default = degrade.h264(frame)
    assert (luma_psnr(frame, degrade.h264(frame, 18)) > luma_psnr(frame, default)
            > luma_psnr(frame, degrade.h264(frame, 35)))


def test_jpeg_quality_orders_the_error(frame: np.ndarray) -> None:
    fine, coarse = degrade.jpeg(frame, 95), degrade.jpeg(frame, 40)
    for decoded in (fine, coarse):
        assert decoded.shape == frame.shape and decoded.dtype == np.uint8
        assert not np.array_equal(decoded, frame)
        y, u, v = planes(decoded)
        assert 16 <= y.min() and y.max() <= 235 and 16 <= min(u.min(), v.min()) and max(u.max(), v.max()) <= 240
    assert luma_psnr(frame, fine) > luma_psnr(frame, coarse) + 5.0
    assert luma_psnr(frame, fine) > 35.0
    for plane_in, plane_out in zip(planes(frame)[1:], planes(fine)[1:]):
        assert psnr(plane_in, plane_out) > 28.0


@pytest.mark.parametrize("degradation",
                         [Degradation("libx264", 35), Degradation("libx265", 35), Degradation("jpeg", 40)], ids=str)
def test_a_flat_grey_frame_survives_nearly_unchanged(degradation: Degradation) -> None:
    flat = i420(np.full((32, 48), 110), np.full((16, 24), 120), np.full((16, 24), 135))
    decoded = degradation.apply(flat)
    assert decoded.shape == flat.shape and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - flat.astype(int)).max() <= 2


@pytest.mark.parametrize("codec", ["libx264", "libx265", "jpeg"])
def test_small_odd_multiple_frames_round_trip(codec: str) -> None:
    """LR frames are small (a 64 x 96 master at x4 gives 16 x 24) and need not be multiples of 8 or 16."""
    small = textured(18, 30, seed=2)
    decoded = Degradation(codec, 30).apply(small)
    assert decoded.shape == small.shape and luma_psnr(small, decoded) > 20.0


def test_degradation_dispatches_and_names_itself(frame: np.ndarray) -> None:
    assert np.array_equal(Degradation("jpeg", 70).apply(frame), degrade.jpeg(frame, 70))
    assert np.array_equal(Degradation("libx265", 25).apply(frame), degrade.video_round_trip(frame, "libx265", 25))
    assert str(Degradation("libx264", 23)) == "libx264 crf 23"
    assert str(Degradation("libx265", 30)) == "libx265 crf 30"
    assert str(Degradation("jpeg", 80)) == "jpeg q80"


def test_random_degradation_follows_the_documented_mix() -> None:
    rng = np.random.default_rng(0)
    draws = [degrade.random_degradation(rng) for _ in range(4000)]
    counts = Counter(d.codec for d in draws)
    assert set(counts) == {"libx264", "libx265", "jpeg"}
    for codec, share in (("libx264", 0.5), ("libx265", 0.3), ("jpeg", 0.2)):
        assert abs(counts[codec] / len(draws) - share) < 0.03, counts
    crfs = {d.quality for d in draws if d.codec != "jpeg"}
    qualities = {d.quality for d in draws if d.codec == "jpeg"}
    assert crfs == set(range(18, 36))  # CRF 18..35, both ends included
    assert qualities == set(range(40, 96))  # JPEG quality 40..95
    assert degrade.random_degradation(np.random.default_rng(0)) == draws[0]
