"""Tests of sritm_core.colour against independent references.

References: colour-science 0.4.6 (test-only dependency) where it implements the
same standard; torch for the bilinear upsampling; published constants and
properties (BT.2087, BT.2408, BT.2390, BT.2446) where colour-science has none.
"""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
import warnings
from typing import Any

import numpy as np
import pytest

import sritm_core.colour as C

with warnings.catch_warnings():
    # colour-science warns about optional dependencies it does not find.
    warnings.simplefilter("ignore")
    import colour

COEFFS = {"ITU-R BT.709": C.BT709, "ITU-R BT.2020": C.BT2020}


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240611)


# --------------------------------------------------------------------------
# Y'CbCr


def test_coefficient_constants() -> None:
    assert (C.BT709.kr, C.BT709.kb) == (0.2126, 0.0722)
    assert (C.BT2020.kr, C.BT2020.kb) == (0.2627, 0.0593)
    assert C.BT2020.kg == pytest.approx(0.6780)
    with pytest.raises(dataclasses.FrozenInstanceError):
        C.BT709.kr = 0.3  # type: ignore[misc]


@pytest.mark.parametrize("name", COEFFS)
def test_rgb_to_ycbcr_matches_colour(name: str, rng: np.random.Generator) -> None:
    rgb = rng.random((4, 5, 3))
    ref = colour.RGB_to_YCbCr(rgb, K=colour.WEIGHTS_YCBCR[name], out_legal=False, out_int=False)
    ycc = C.rgb_to_ycbcr(rgb, COEFFS[name])
    np.testing.assert_allclose(ycc, ref, atol=1e-12)
    np.testing.assert_allclose(C.ycbcr_to_rgb(ycc, COEFFS[name]), rgb, atol=1e-12)
    # The extremes of the analogue ranges.
    prim = np.eye(3)
    assert C.rgb_to_ycbcr(np.ones(3), COEFFS[name]) == pytest.approx([1.0, 0.0, 0.0])
    assert C.rgb_to_ycbcr(prim[2], COEFFS[name])[1] == pytest.approx(0.5)
    assert C.rgb_to_ycbcr(prim[0], COEFFS[name])[2] == pytest.approx(0.5)


@pytest.mark.parametrize("bits", [8, 10])
@pytest.mark.parametrize("name", COEFFS)
def test_narrow_range_codes_match_colour(name: str, bits: int, rng: np.random.Generator) -> None:
    rgb = rng.random((200, 3))
    k = colour.WEIGHTS_YCBCR[name]
    codes = C.rgb_to_codes(rgb, COEFFS[name], bits)
    # colour-science's float legal range is code / (2^n - 1).
    ref = colour.RGB_to_YCbCr(rgb, K=k, out_bits=bits, out_legal=True, out_int=False)
    np.testing.assert_allclose(codes, ref * (2**bits - 1), atol=1e-9)
    ref_int = colour.RGB_to_YCbCr(rgb, K=k, out_bits=bits, out_legal=True, out_int=True)
    q = C.quantize_narrow_range(codes, bits)
    np.testing.assert_array_equal(q, ref_int)
    # Decoding integer codes, against colour-science's decoder.
    back = C.codes_to_rgb(q, COEFFS[name], bits)
    ref_back = colour.YCbCr_to_RGB(
        q, K=k, in_bits=bits, in_legal=True, in_int=True, out_legal=False, out_int=False
    )
    np.testing.assert_allclose(back, ref_back, atol=1e-12)


@pytest.mark.parametrize("bits", [8, 10])
def test_narrow_range_formula_and_legal_range(bits: int) -> None:
    s = 2 ** (bits - 8)
    codes = C.encode_narrow_range([[0.0, -0.5, -0.5], [1.0, 0.5, 0.5], [0.5, 0.0, 0.0]], bits)
    np.testing.assert_allclose(codes[0], [16 * s, 16 * s, 16 * s])
    np.testing.assert_allclose(codes[1], [235 * s, 240 * s, 240 * s])
    np.testing.assert_allclose(codes[2], [(219 * 0.5 + 16) * s, 128 * s, 128 * s])
    r = C.legal_range(bits)
    expect = (16, 235, 16, 240) if bits == 8 else (64, 940, 64, 960)
    assert (r.y_min, r.y_max, r.c_min, r.c_max) == expect
    np.testing.assert_allclose(
        C.decode_narrow_range(codes, bits), [[0, -0.5, -0.5], [1, 0.5, 0.5], [0.5, 0, 0]]
    )


@pytest.mark.parametrize("bits", [8, 10])
def test_quantize_rounds_half_even_and_clamps(bits: int) -> None:
    r = C.legal_range(bits)
    codes = np.array(
        [
            [-50.0, -50.0, 5000.0],  # far outside: clamped
            [r.y_max + 0.4, r.c_max + 0.6, r.c_min - 0.6],
            [100.5, 101.5, 102.49],  # ties go to even
        ]
    )
    q = C.quantize_narrow_range(codes, bits)
    assert q.dtype == (np.uint8 if bits == 8 else np.uint16)
    np.testing.assert_array_equal(q[0], [r.y_min, r.c_min, r.c_max])
    np.testing.assert_array_equal(q[1], [r.y_max, r.c_max, r.c_min])
    np.testing.assert_array_equal(q[2], [100, 102, 102])
    plane = np.array([[0.0, 300.0], [1023.7, 128.5]])
    qy = C.quantize_plane(plane, bits, is_luma=True)
    qc = C.quantize_plane(plane, bits, is_luma=False)
    assert qy.dtype == q.dtype and qy.shape == plane.shape
    np.testing.assert_array_equal(qy, np.clip([[0, 300], [1024, 128]], r.y_min, r.y_max))
    np.testing.assert_array_equal(qc, np.clip([[0, 300], [1024, 128]], r.c_min, r.c_max))


def test_quantize_and_bits_errors() -> None:
    with pytest.raises(ValueError, match="NaN"):
        C.quantize_narrow_range(np.array([[np.nan, 128.0, 128.0]]), 8)
    with pytest.raises(ValueError, match="NaN"):
        C.quantize_plane(np.array([np.nan]), 10, is_luma=False)
    for bad in (7, 12, 16):
        with pytest.raises(ValueError, match="bits"):
            C.legal_range(bad)
        with pytest.raises(ValueError, match="bits"):
            C.encode_narrow_range(np.zeros(3), bad)
    with pytest.raises(ValueError, match="trailing channel axis"):
        C.rgb_to_ycbcr(np.zeros((4, 2)), C.BT709)
    with pytest.raises(ValueError, match="trailing channel axis"):
        C.decode_narrow_range(np.zeros((3, 4)), 8)


@pytest.mark.parametrize("bits", [8, 10])
@pytest.mark.parametrize("name", COEFFS)
def test_code_round_trip_within_one_code(name: str, bits: int, rng: np.random.Generator) -> None:
    rgb = rng.random((500, 3))
    codes = C.rgb_to_codes(rgb, COEFFS[name], bits)
    q = C.quantize_narrow_range(codes, bits)
    again = C.encode_narrow_range(C.decode_narrow_range(q, bits), bits)
    assert np.abs(again - codes).max() <= 0.5 + 1e-9
    np.testing.assert_array_equal(C.quantize_narrow_range(again, bits), q)
    # R'G'B' error of one half code in every component is bounded accordingly.
    err = np.abs(C.codes_to_rgb(q, COEFFS[name], bits) - rgb).max()
    assert err < 2.0 / (219 * 2 ** (bits - 8))


def test_dtype_and_shape_policy(rng: np.random.Generator) -> None:
    rgb32 = rng.random((2, 3, 4, 3)).astype(np.float32)
    rgb64 = rgb32.astype(np.float64)
    for fn in (
        lambda x: C.rgb_to_ycbcr(x, C.BT2020),
        lambda x: C.ycbcr_to_rgb(x, C.BT709),
        lambda x: C.rgb_to_codes(x, C.BT709, 10),
        lambda x: C.decode_narrow_range(x, 8),
        C.pq_eotf,
        C.pq_inverse_eotf,
        C.bt1886_eotf,
        C.bt1886_inverse_eotf,
        C.bt709_to_bt2020,
        C.bt2020_to_bt709,
        C.sdr_to_hdr_luminance,
        C.bt2390_eetf,
        C.bt2446a_hdr_to_sdr,
    ):
        out32, out64 = fn(rgb32), fn(rgb64)
        assert out32.dtype == np.float32 and out64.dtype == np.float64
        assert out32.shape == rgb32.shape
        np.testing.assert_allclose(out32, out64, rtol=2e-4, atol=2e-3)
    # Integer and list inputs compute in float64; inputs are not modified.
    codes = np.array([[64, 512, 512]], dtype=np.uint16)
    assert C.decode_narrow_range(codes, 10).dtype == np.float64
    assert C.pq_eotf([0.5]).dtype == np.float64
    copy = rgb64.copy()
    C.bt2446a_hdr_to_sdr(rgb64)
    C.chroma_upsample_420(rgb64[..., 0], 6, 8)
    np.testing.assert_array_equal(rgb64, copy)


# --------------------------------------------------------------------------
# 4:2:0 and I420


def test_chroma_downsample_is_2x2_mean() -> None:
    plane = np.arange(24, dtype=np.uint8).reshape(4, 6)
    out = C.chroma_downsample_420(plane)
    assert out.dtype == np.float64 and out.shape == (2, 3)
    np.testing.assert_allclose(out, plane.reshape(2, 2, 3, 2).mean(axis=(1, 3)))
    batch = np.stack([plane, 2 * plane]).astype(np.float32)[None]
    out_b = C.chroma_downsample_420(batch)
    assert out_b.shape == (1, 2, 2, 3) and out_b.dtype == np.float32
    np.testing.assert_allclose(out_b[0, 1], 2 * out)
    for bad in (np.zeros((3, 4)), np.zeros((4, 5)), np.zeros(4)):
        with pytest.raises(ValueError, match="even|\\(\\.\\.\\., H, W\\)"):
            C.chroma_downsample_420(bad)


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (4, 4), (2, 3, 4, 6), (7, 2, 1)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_chroma_upsample_equals_torch_bilinear(
    shape: tuple[int, ...], dtype: type[np.floating[Any]], rng: np.random.Generator
) -> None:
    import torch  # only here: sritm_core.colour itself must not need torch

    plane = (rng.random(shape) * 1023).astype(dtype)
    h, w = shape[-2:]
    x = torch.from_numpy(plane.reshape(-1, 1, h, w))
    ref = torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    out = C.chroma_upsample_420(plane, 2 * h, 2 * w)
    assert out.dtype == dtype and out.shape == (*shape[:-2], 2 * h, 2 * w)
    tol = 1e-3 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(out.reshape(-1, 1, 2 * h, 2 * w), ref.numpy(), atol=tol)


def test_chroma_upsample_errors() -> None:
    with pytest.raises(ValueError, match="must produce 4x6"):
        C.chroma_upsample_420(np.zeros((2, 3)), 4, 5)
    with pytest.raises(ValueError, match="must produce"):
        C.chroma_upsample_420(np.zeros((2, 3)), 3, 6)
    with pytest.raises(ValueError, match="empty"):
        C.chroma_upsample_420(np.zeros((0, 3)), 0, 6)
    with pytest.raises(ValueError, match="h, w"):
        C.chroma_upsample_420(np.zeros(3), 2, 6)


def test_centre_siting_down_then_up_preserves_linear_ramps() -> None:
    # With centre siting the 2x2 mean sits exactly where the bilinear upsample
    # expects the sample, so a plane linear in x and y comes back exactly away
    # from the one-pixel border (where edge replication flattens it).
    yy, xx = np.mgrid[0:16, 0:20].astype(np.float64)
    plane = 3.0 * xx - 2.0 * yy + 500.0
    back = C.chroma_upsample_420(C.chroma_downsample_420(plane), 16, 20)
    np.testing.assert_allclose(back[1:-1, 1:-1], plane[1:-1, 1:-1], atol=1e-9)
    # Constant planes survive everywhere.
    flat = np.full((6, 8), 77.0)
    np.testing.assert_array_equal(C.chroma_upsample_420(C.chroma_downsample_420(flat), 6, 8), flat)


@pytest.mark.parametrize("h, w", [(6, 8), (4, 4), (2, 10), (8, 6)])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_pack_unpack_i420_layout(
    h: int, w: int, dtype: type[np.integer[Any]], rng: np.random.Generator
) -> None:
    hi = 256 if dtype == np.uint8 else 1024
    y = rng.integers(0, hi, (h, w)).astype(dtype)
    u = rng.integers(0, hi, (h // 2, w // 2)).astype(dtype)
    v = rng.integers(0, hi, (h // 2, w // 2)).astype(dtype)
    buf = C.pack_i420(y, u, v)
    assert buf.shape == (3 * h // 2, w) and buf.dtype == dtype
    # Exactly the bytes of a yuv420p frame: Y, then U, then V, each row-major.
    assert buf.tobytes() == y.tobytes() + u.tobytes() + v.tobytes()
    y2, u2, v2 = C.unpack_i420(buf)
    for a, b in ((y, y2), (u, u2), (v, v2)):
        assert b.dtype == dtype
        np.testing.assert_array_equal(a, b)
        assert np.shares_memory(b, buf)  # views of a contiguous buffer
    # A buffer read straight from yuv420p bytes unpacks the same way.
    raw = np.frombuffer(buf.tobytes(), dtype=dtype).reshape(3 * h // 2, w)
    np.testing.assert_array_equal(C.unpack_i420(raw)[2], v)


def test_pack_unpack_i420_errors() -> None:
    with pytest.raises(ValueError, match="even height and width"):
        C.pack_i420(np.zeros((5, 4)), np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="even height and width"):
        C.pack_i420(np.zeros((4, 5)), np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="u plane must be"):
        C.pack_i420(np.zeros((4, 4)), np.zeros((2, 3)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="v plane must be"):
        C.pack_i420(np.zeros((4, 4)), np.zeros((2, 2)), np.zeros(4))
    with pytest.raises(ValueError, match="multiple of 3"):
        C.unpack_i420(np.zeros((7, 4)))
    with pytest.raises(ValueError, match="even height and width"):
        C.unpack_i420(np.zeros((6, 5)))
    with pytest.raises(ValueError, match="2-D"):
        C.unpack_i420(np.zeros(24))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        C.yuv444_to_i420(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="even height and width"):
        C.yuv444_to_i420(np.zeros((3, 4, 3)))


@pytest.mark.parametrize("bits", [8, 10])
def test_yuv444_i420_round_trip_on_flat_chroma(bits: int, rng: np.random.Generator) -> None:
    h, w = 6, 10
    r = C.legal_range(bits)
    yuv = np.empty((h, w, 3))
    yuv[..., 0] = rng.uniform(r.y_min, r.y_max, (h, w))
    # Chroma constant over each 2x2 block (what 4:2:0 can represent) ...
    blocks = rng.uniform(r.c_min, r.c_max, (h // 2, w // 2, 2))
    yuv[..., 1:] = blocks.repeat(2, axis=0).repeat(2, axis=1)
    buf = C.yuv444_to_i420(yuv)
    assert buf.shape == (3 * h // 2, w) and buf.dtype == np.float64
    _, u, v = C.unpack_i420(buf)
    np.testing.assert_allclose(u, blocks[..., 0])
    np.testing.assert_allclose(v, blocks[..., 1])
    # ... and a flat chroma plane comes back within one code after the full
    # integer path: quantize, pack, bytes, unpack, upsample.
    yuv[..., 1] = 300.3 * 2 ** (bits - 8) / 4
    yuv[..., 2] = 700.6 * 2 ** (bits - 8) / 4
    fy, fu, fv = C.unpack_i420(C.yuv444_to_i420(yuv))
    ints = C.pack_i420(
        C.quantize_plane(fy, bits, is_luma=True),
        C.quantize_plane(fu, bits, is_luma=False),
        C.quantize_plane(fv, bits, is_luma=False),
    )
    quantized = C.quantize_i420(yuv, bits)
    assert quantized.dtype == (np.uint8 if bits == 8 else np.uint16)
    np.testing.assert_array_equal(quantized, ints)
    back = C.i420_to_yuv444(ints)
    assert back.shape == (h, w, 3) and back.dtype == np.float64
    assert np.abs(back - yuv).max() <= 0.5 + 1e-9


# --------------------------------------------------------------------------
# Transfer functions


def test_pq_constants_are_exact_rationals() -> None:
    assert C.PQ_M1 == 2610 / 16384 == 0.1593017578125
    assert C.PQ_M2 == 2523 / 4096 * 128 == 78.84375
    assert C.PQ_C1 == 3424 / 4096 == C.PQ_C3 - C.PQ_C2 + 1
    assert C.PQ_C2 == 2413 / 4096 * 32 == 18.8515625
    assert C.PQ_C3 == 2392 / 4096 * 32 == 18.6875


def test_pq_matches_colour(rng: np.random.Generator) -> None:
    e = rng.random((50, 3))
    lum = C.pq_eotf(e)
    np.testing.assert_allclose(lum, colour.models.eotf_ST2084(e), rtol=1e-12, atol=1e-12)
    l_ref = rng.uniform(0.0, 10000.0, 300)
    np.testing.assert_allclose(
        C.pq_inverse_eotf(l_ref), colour.models.eotf_inverse_ST2084(l_ref), atol=1e-12
    )
    np.testing.assert_allclose(C.pq_inverse_eotf(lum), e, atol=1e-10)
    # BT.2408 anchors: 100 cd/m^2 ~ 51 %, HDR Reference White 203 cd/m^2 ~ 58 % PQ.
    np.testing.assert_allclose(
        C.pq_inverse_eotf([100.0, 203.0, 1000.0, 10000.0]), [0.5081, 0.5807, 0.7518, 1.0], atol=1e-4
    )
    # Out-of-domain values are clipped rather than turned into NaN.
    assert C.pq_eotf(-0.2) == 0.0 and C.pq_eotf(1.5) == pytest.approx(10000.0)
    assert C.pq_inverse_eotf(-5.0) == pytest.approx(C.pq_inverse_eotf(0.0))
    assert not np.isnan(C.pq_eotf(np.array([-1.0, 2.0]))).any()


@pytest.mark.parametrize("lw, lb", [(100.0, 0.0), (100.0, 0.1), (203.0, 0.05)])
def test_bt1886_matches_colour(lw: float, lb: float, rng: np.random.Generator) -> None:
    v = rng.random((40, 3))
    lum = C.bt1886_eotf(v, lw, lb)
    np.testing.assert_allclose(lum, colour.models.eotf_BT1886(v, L_B=lb, L_W=lw), rtol=1e-12)
    np.testing.assert_allclose(C.bt1886_inverse_eotf(lum, lw, lb), v, atol=1e-12)
    np.testing.assert_allclose(
        C.bt1886_inverse_eotf(lum, lw, lb),
        colour.models.eotf_inverse_BT1886(lum, L_B=lb, L_W=lw),
        atol=1e-12,
    )
    assert C.bt1886_eotf(0.0, lw, lb) == pytest.approx(lb)
    assert C.bt1886_eotf(1.0, lw, lb) == pytest.approx(lw)
    with pytest.raises(ValueError):
        C.bt1886_eotf(v, lw=1.0, lb=2.0)


# --------------------------------------------------------------------------
# Gamut


def test_gamut_matrices_match_bt2087_and_colour(rng: np.random.Generator) -> None:
    bt2087 = np.array(
        [[0.6274, 0.3293, 0.0433], [0.0691, 0.9195, 0.0114], [0.0164, 0.0880, 0.8956]]
    )
    np.testing.assert_allclose(C.BT709_TO_BT2020, bt2087, atol=5e-5)
    s709 = colour.RGB_COLOURSPACES["ITU-R BT.709"]
    s2020 = colour.RGB_COLOURSPACES["ITU-R BT.2020"]
    np.testing.assert_allclose(C.BT709_TO_BT2020, colour.matrix_RGB_to_RGB(s709, s2020), atol=1e-10)
    np.testing.assert_allclose(C.BT2020_TO_BT709, colour.matrix_RGB_to_RGB(s2020, s709), atol=1e-10)
    np.testing.assert_allclose(C.BT709_TO_BT2020 @ C.BT2020_TO_BT709, np.eye(3), atol=1e-14)
    np.testing.assert_allclose(C.BT709_TO_BT2020.sum(axis=1), 1.0, atol=1e-14)  # white stays white
    assert not C.BT709_TO_BT2020.flags.writeable and not C.BT2020_TO_BT709.flags.writeable

    rgb = rng.random((30, 3)) * 100.0
    ref_wide = colour.RGB_to_RGB(rgb, s709, s2020)
    np.testing.assert_allclose(C.bt709_to_bt2020(rgb), ref_wide, atol=1e-9)
    wide = rng.random((30, 3))
    ref = colour.RGB_to_RGB(wide, s2020, s709)
    np.testing.assert_allclose(C.bt2020_to_bt709(wide, clip=False), ref, atol=1e-12)
    np.testing.assert_allclose(C.bt2020_to_bt709(wide), np.maximum(ref, 0.0), atol=1e-12)
    clipped = C.bt2020_to_bt709(wide, peak=1.0)
    np.testing.assert_allclose(clipped, np.clip(ref, 0.0, 1.0), atol=1e-12)
    np.testing.assert_allclose(C.bt2020_to_bt709(C.bt709_to_bt2020(rgb)), rgb, atol=1e-9)


def test_sdr_to_hdr_luminance_bt2408() -> None:
    assert C.SDR_REFERENCE_WHITE_CD_M2 == 203.0
    np.testing.assert_allclose(C.sdr_to_hdr_luminance([0.0, 50.0, 100.0]), [0.0, 101.5, 203.0])
    assert C.sdr_to_hdr_luminance(200.0, sdr_peak=200.0) == pytest.approx(203.0)
    # SDR white lands on 58 % PQ.
    sdr_white_pq = C.pq_inverse_eotf(C.sdr_to_hdr_luminance(C.bt1886_eotf(1.0)))
    assert sdr_white_pq == pytest.approx(0.5807, abs=1e-4)


# --------------------------------------------------------------------------
# BT.2390 EETF


def test_bt2390_eetf_properties() -> None:
    e = np.linspace(0.0, 1.0, 20001)
    out = C.bt2390_eetf(e, 0.0, 10000.0, 0.0, 1000.0)
    pq_target = float(C.pq_inverse_eotf(1000.0))
    max_lum = pq_target  # the source range is the whole PQ range
    ks = 1.5 * max_lum - 0.5
    below = e < ks
    # Identity below the knee start (up to the 7e-7 PQ code of 0 cd/m^2).
    np.testing.assert_allclose(out[below], e[below], atol=1e-6)
    assert not np.allclose(out[e > ks + 0.01], e[e > ks + 0.01])
    # The source peak lands on the target peak; nothing exceeds it.
    assert out[-1] == pytest.approx(pq_target, abs=1e-12)
    assert out.max() <= pq_target + 1e-12
    assert np.all(np.diff(out) >= 0.0)  # monotonic
    # C1 at the knee: value and slope continuous.
    d = 1e-6
    at = C.bt2390_eetf(np.array([ks - d, ks, ks + d]))
    assert at[1] == pytest.approx(ks, abs=1e-9)
    assert (at[2] - at[1]) / d == pytest.approx(1.0, abs=1e-4)
    assert (at[1] - at[0]) / d == pytest.approx(1.0, abs=1e-4)


def test_bt2390_eetf_master_and_black_lift() -> None:
    pq = C.pq_inverse_eotf
    # A 4000-nit master on a 1000-nit display: 4000 -> 1000, low levels untouched.
    e = pq(np.array([0.1, 1.0, 100.0, 4000.0, 8000.0]))
    out = C.bt2390_eetf(e, source_peak=4000.0, target_peak=1000.0)
    np.testing.assert_allclose(out[:3], e[:3], atol=1e-9)
    assert out[3] == pytest.approx(float(pq(1000.0)), abs=1e-12)
    assert out[4] == out[3]  # above the source peak: clamped
    # No roll-off when the display is at least as bright as the master.
    e2 = np.linspace(0.0, float(pq(1000.0)), 50)
    same = C.bt2390_eetf(e2, source_peak=1000.0, target_peak=1000.0)
    np.testing.assert_allclose(same, np.maximum(e2, float(pq(0.0))), atol=1e-12)
    # Black lift: source black goes to target black, the lift fades towards the peak.
    lifted = C.bt2390_eetf(np.array([0.0, float(pq(1000.0))]), 0.0, 1000.0, 0.05, 600.0)
    assert lifted[0] == pytest.approx(float(pq(0.05)), abs=1e-9)
    # The lift term b (1 - E2)^4 is not zero at the peak, so BT.2390's curve
    # overshoots the target peak by b (1 - maxLum)^4 (here ~1e-6 PQ).
    assert lifted[1] == pytest.approx(float(pq(600.0)), abs=1e-5)
    grid = C.bt2390_eetf(np.linspace(0, 1, 1001), 0.005, 4000.0, 0.05, 600.0)
    assert np.all(np.diff(grid) >= 0.0)
    with pytest.raises(ValueError):
        C.bt2390_eetf(e, source_peak=0.0)


# --------------------------------------------------------------------------
# BT.2446 Method A


def _bt2446a_scalar(r: float, g: float, b: float, l_hdr: float, l_sdr: float) -> tuple[float, ...]:
    """Report ITU-R BT.2446-1 Method A written out pixel by pixel from Tables 1 and 2."""

    def pq_to_linear(e: float) -> float:
        m1, m2, c1, c2, c3 = 0.1593017578125, 78.84375, 0.8359375, 18.8515625, 18.6875
        p = math.pow(e, 1 / m2)
        return 10000.0 * math.pow(max(p - c1, 0.0) / (c2 - c3 * p), 1 / m1)

    rp, gp, bp = (min(pq_to_linear(c) / l_hdr, 1.0) ** (1 / 2.4) for c in (r, g, b))
    y = 0.2627 * rp + 0.6780 * gp + 0.0593 * bp
    rho_hdr = 1 + 32 * (l_hdr / 10000) ** (1 / 2.4)
    yp = math.log(1 + (rho_hdr - 1) * y) / math.log(rho_hdr)
    if yp <= 0.7399:
        yc = 1.0770 * yp
    elif yp < 0.9909:
        yc = -1.1510 * yp**2 + 2.7811 * yp - 0.6302
    else:
        yc = 0.5 * yp + 0.5
    rho_sdr = 1 + 32 * (l_sdr / 10000) ** (1 / 2.4)
    ysdr = (rho_sdr**yc - 1) / (rho_sdr - 1)
    f = ysdr / (1.1 * y) if y > 0 else 0.0
    cb = f * (bp - y) / 1.8814
    cr = f * (rp - y) / 1.4746
    yt = ysdr - max(0.1 * cr, 0.0)
    out = (yt + 1.4746 * cr, yt - 0.16455 * cb - 0.57135 * cr, yt + 1.8814 * cb)
    return tuple(min(max(c, 0.0), 1.0) for c in out)


@pytest.mark.parametrize("l_hdr, l_sdr", [(1000.0, 100.0), (4000.0, 100.0), (1000.0, 203.0)])
def test_bt2446a_matches_scalar_reference(
    l_hdr: float, l_sdr: float, rng: np.random.Generator
) -> None:
    rgb = rng.random((60, 3)) * float(C.pq_inverse_eotf(l_hdr))
    rgb[0] = 0.0
    out = C.bt2446a_hdr_to_sdr(rgb, hdr_peak=l_hdr, sdr_peak=l_sdr)
    ref = np.array([_bt2446a_scalar(float(r), float(g), float(b), l_hdr, l_sdr) for r, g, b in rgb])
    # 1e-4: the reference uses the 5-digit rounded G' coefficients of Table 2.
    np.testing.assert_allclose(out, ref, atol=1e-4)


def test_hdr10_to_sdr_bt709_matches_colour_science_after_bt2446a() -> None:
    """The SDR grade: our BT.2446-1 A, then colour-science's BT.1886 and BT.2020 -> BT.709 (clipped)."""
    rng = np.random.default_rng(11)
    pq = rng.uniform(0.0, float(C.pq_inverse_eotf(1000.0)), (500, 3))
    pq[:3] = [[0.0, 0.0, 0.0], [C.pq_inverse_eotf(1000.0)] * 3, [C.pq_inverse_eotf(1000.0), 0.0, 0.0]]
    light = colour.models.eotf_BT1886(C.bt2446a_hdr_to_sdr(pq), L_B=0.0, L_W=100.0)
    s709, s2020 = colour.RGB_COLOURSPACES["ITU-R BT.709"], colour.RGB_COLOURSPACES["ITU-R BT.2020"]
    light_709 = np.clip(colour.RGB_to_RGB(light, s2020, s709), 0.0, 100.0)
    expected = colour.models.eotf_inverse_BT1886(light_709, L_B=0.0, L_W=100.0)
    graded = C.hdr10_to_sdr_bt709(pq)
    np.testing.assert_allclose(graded, expected, atol=1e-9)
    assert graded.min() >= 0.0 and graded.max() <= 1.0 + 1e-12
    assert graded[0] == pytest.approx([0.0] * 3, abs=1e-9) and graded[1] == pytest.approx([1.0] * 3)
    assert graded[2, 0] == pytest.approx(1.0) and graded[2, 1:].max() < 0.05  # the master's peak red: SDR red


def test_bt2446a_properties() -> None:
    lum = np.linspace(0.0, 1000.0, 2001)
    grey = np.repeat(C.pq_inverse_eotf(lum)[:, None], 3, axis=1)
    out = C.bt2446a_hdr_to_sdr(grey)
    # Neutral greys stay neutral, monotonic, black -> 0, HDR peak -> SDR peak.
    np.testing.assert_allclose(out[:, 1], out[:, 0], atol=1e-12)
    np.testing.assert_allclose(out[:, 2], out[:, 0], atol=1e-12)
    assert np.all(np.diff(out[:, 0]) > 0.0)
    assert out[0, 0] == pytest.approx(0.0, abs=1e-6) and out[-1, 0] == pytest.approx(1.0)
    # HDR Reference White (203 cd/m^2, BT.2408) of a 1000-nit master: by
    # Table 1, Y' = 0.2030^(1/2.4) = 0.5146 -> Y'_p = 0.7696 (knee segment)
    # -> Y'_c = 0.8284 -> Y'_SDR = 0.6869, i.e. about 69 % of the SDR signal.
    white = C.bt2446a_hdr_to_sdr(np.full(3, C.pq_inverse_eotf(203.0)))
    np.testing.assert_allclose(white, 0.6869, atol=5e-4)
    # Brighter than the HDR peak saturates to SDR white; saturated colours stay in [0, 1].
    assert C.bt2446a_hdr_to_sdr(np.full(3, C.pq_inverse_eotf(4000.0))) == pytest.approx([1.0] * 3)
    corners = np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)], dtype=float)
    sat = C.bt2446a_hdr_to_sdr(corners * float(C.pq_inverse_eotf(1000.0)))
    assert sat.min() >= 0.0 and sat.max() <= 1.0
    # Colour correction keeps hue order: a red stays reddest.
    red = C.bt2446a_hdr_to_sdr(np.array([0.7, 0.45, 0.45]))
    assert red[0] > red[1] and red[1] == pytest.approx(red[2], abs=1e-12)


# --------------------------------------------------------------------------
# Packaging


def test_import_does_not_pull_in_torch() -> None:
    code = "import sys, sritm_core.colour; assert 'torch' not in sys.modules, 'torch was imported'"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
