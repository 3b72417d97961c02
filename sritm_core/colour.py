"""The colour science of sritm: Y'CbCr, I420, PQ, BT.1886, gamut and tone mapping.

This module is the project's single implementation of these formulas. The
Triton pre/post-processors, the client SDK, the training-data synthesis and
the evaluation code all import it, so that a frame encoded by one of them is
decoded by the exact inverse in another. It depends only on numpy and the
standard library because the client SDK must import without torch.

Conventions used throughout
---------------------------
* Channels last: colour arrays have shape ``(..., 3)``; planes are ``(..., H, W)``.
* Dtype: floating inputs keep their dtype (float32 in -> float32 arithmetic
  and float32 out, float64 in -> float64 out) so that the 4K serving path does
  not pay for float64 temporaries. Every other input (integer codes, bools,
  Python scalars and lists, float16) is converted to float64 first. Scalars
  come back as 0-d arrays.
* Inputs are never modified in place.
* Y'CbCr is non-constant-luminance: analogue Y' in [0, 1], Cb/Cr in
  [-0.5, 0.5]; digital codes are narrow ("legal", "video") range.
* Chroma in I420 is centre-sited (see :func:`chroma_downsample_420`).
* Luminances are absolute, in cd/m^2, unless a docstring says "relative".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "YCbCrCoefficients",
    "BT709",
    "BT2020",
    "LegalRange",
    "legal_range",
    "rgb_to_ycbcr",
    "ycbcr_to_rgb",
    "encode_narrow_range",
    "decode_narrow_range",
    "quantize_narrow_range",
    "quantize_plane",
    "rgb_to_codes",
    "codes_to_rgb",
    "chroma_downsample_420",
    "chroma_upsample_420",
    "pack_i420",
    "unpack_i420",
    "yuv444_to_i420",
    "quantize_i420",
    "i420_to_yuv444",
    "PQ_M1",
    "PQ_M2",
    "PQ_C1",
    "PQ_C2",
    "PQ_C3",
    "PQ_PEAK_CD_M2",
    "pq_eotf",
    "pq_inverse_eotf",
    "bt1886_eotf",
    "bt1886_inverse_eotf",
    "BT709_TO_BT2020",
    "BT2020_TO_BT709",
    "bt709_to_bt2020",
    "bt2020_to_bt709",
    "SDR_REFERENCE_WHITE_CD_M2",
    "sdr_to_hdr_luminance",
    "bt2390_eetf",
    "bt2446a_hdr_to_sdr",
    "hdr10_to_sdr_bt709",
]

FloatArray = npt.NDArray[np.floating[Any]]
"""A float32 or float64 array (see the module's dtype convention)."""


# --------------------------------------------------------------------------
# helpers


def _as_float(x: npt.ArrayLike) -> FloatArray:
    """Return ``x`` as float32/float64 per the module's dtype convention."""
    a = np.asarray(x)
    if a.dtype == np.float32 or a.dtype == np.float64:
        return a
    return a.astype(np.float64)


def _check_channels(a: npt.NDArray[Any], what: str) -> None:
    if a.ndim == 0 or a.shape[-1] != 3:
        raise ValueError(
            f"{what} must have a trailing channel axis of size 3, got shape {a.shape}"
        )


def _check_bits(bits: int) -> None:
    if bits not in (8, 10):
        raise ValueError(f"bits must be 8 or 10, got {bits!r}")


# --------------------------------------------------------------------------
# Y'CbCr (non-constant luminance)


@dataclass(frozen=True)
class YCbCrCoefficients:
    """Luma weights of a non-constant-luminance Y'CbCr system.

    ``kg`` follows from ``kr + kg + kb = 1`` (ITU-R BT.709-6 Part 2 item 3.2,
    ITU-R BT.2020-2 Table 4). Frozen so the shared instances cannot be edited.
    """

    name: str
    kr: float
    kb: float

    @property
    def kg(self) -> float:
        """The green weight, ``1 - kr - kb``."""
        return 1.0 - self.kr - self.kb

    def rgb_to_ycbcr_matrix(self) -> npt.NDArray[np.float64]:
        """3x3 matrix M with ``[Y', Cb, Cr] = M @ [R', G', B']``."""
        kr, kg, kb = self.kr, self.kg, self.kb
        sb = 2.0 * (1.0 - kb)
        sr = 2.0 * (1.0 - kr)
        return np.array(
            [
                [kr, kg, kb],
                [-kr / sb, -kg / sb, 0.5],
                [0.5, -kg / sr, -kb / sr],
            ],
            dtype=np.float64,
        )

    def ycbcr_to_rgb_matrix(self) -> npt.NDArray[np.float64]:
        """3x3 matrix with ``[R', G', B'] = M @ [Y', Cb, Cr]``.

        Written out analytically (rather than ``inv()``) so that the neutral
        axis maps to R' = G' = B' exactly (Cb = Cr = 0 -> the Y' column of ones).
        """
        kr, kg, kb = self.kr, self.kg, self.kb
        sb = 2.0 * (1.0 - kb)
        sr = 2.0 * (1.0 - kr)
        return np.array(
            [
                [1.0, 0.0, sr],
                [1.0, -kb * sb / kg, -kr * sr / kg],
                [1.0, sb, 0.0],
            ],
            dtype=np.float64,
        )


BT709: Final = YCbCrCoefficients("ITU-R BT.709", kr=0.2126, kb=0.0722)
"""ITU-R BT.709-6 Part 2, item 3.2 (kr = 0.2126, kb = 0.0722)."""

BT2020: Final = YCbCrCoefficients("ITU-R BT.2020", kr=0.2627, kb=0.0593)
"""ITU-R BT.2020-2 Table 4 (kr = 0.2627, kb = 0.0593)."""


def rgb_to_ycbcr(rgb: npt.ArrayLike, coeffs: YCbCrCoefficients) -> FloatArray:
    """Non-linear R'G'B' -> analogue Y'CbCr (non-constant luminance).

    ITU-R BT.709-6 Part 2 items 3.2-3.3 / ITU-R BT.2020-2 Table 4
    (non-constant luminance):
    ``Y' = kr R' + kg G' + kb B'``, ``Cb = (B' - Y') / (2 (1 - kb))``,
    ``Cr = (R' - Y') / (2 (1 - kr))``.

    Args:
        rgb: gamma-encoded R'G'B', nominally [0, 1], shape ``(..., 3)``.
        coeffs: :data:`BT709` or :data:`BT2020`.

    Returns:
        ``(..., 3)``: Y' in [0, 1], Cb and Cr in [-0.5, 0.5] (unitless).
    """
    a = _as_float(rgb)
    _check_channels(a, "rgb")
    m = coeffs.rgb_to_ycbcr_matrix().astype(a.dtype)
    return a @ m.T


def ycbcr_to_rgb(ycbcr: npt.ArrayLike, coeffs: YCbCrCoefficients) -> FloatArray:
    """Analogue Y'CbCr -> non-linear R'G'B'; the exact inverse of :func:`rgb_to_ycbcr`.

    Same standards as :func:`rgb_to_ycbcr`, solved for R', G', B'. No clipping
    is applied: out-of-gamut Y'CbCr triples give R'G'B' outside [0, 1].

    Args:
        ycbcr: ``(..., 3)``, Y' in [0, 1], Cb/Cr in [-0.5, 0.5].
        coeffs: :data:`BT709` or :data:`BT2020`.

    Returns:
        ``(..., 3)`` gamma-encoded R'G'B' (nominally [0, 1]).
    """
    a = _as_float(ycbcr)
    _check_channels(a, "ycbcr")
    m = coeffs.ycbcr_to_rgb_matrix().astype(a.dtype)
    return a @ m.T


@dataclass(frozen=True)
class LegalRange:
    """Narrow-range code limits (inclusive) for one bit depth."""

    y_min: int
    y_max: int
    c_min: int
    c_max: int


def legal_range(bits: int) -> LegalRange:
    """Narrow-range limits: ITU-R BT.709-6 Part 2 section 4, ITU-R BT.2020-2 Table 5.

    8 bits: Y 16..235, C 16..240. 10 bits: Y 64..940, C 64..960 (the 8-bit
    values times 2^(bits-8)).
    """
    _check_bits(bits)
    s = 1 << (bits - 8)
    return LegalRange(y_min=16 * s, y_max=235 * s, c_min=16 * s, c_max=240 * s)


def _narrow_gain_offset(bits: int, dtype: np.dtype[Any]) -> tuple[FloatArray, FloatArray]:
    s = float(1 << (bits - 8))
    gain = np.array([219.0 * s, 224.0 * s, 224.0 * s], dtype=dtype)
    offset = np.array([16.0 * s, 128.0 * s, 128.0 * s], dtype=dtype)
    return gain, offset


def encode_narrow_range(ycbcr: npt.ArrayLike, bits: int) -> FloatArray:
    """Analogue Y'CbCr -> unrounded narrow-range digital codes.

    ITU-R BT.709-6 Part 2 section 4 / ITU-R BT.2020-2 Table 5 (before the
    ``INT[]`` rounding): ``D_Y = (219 Y' + 16) 2^(n-8)``,
    ``D_C = (224 C + 128) 2^(n-8)``.

    Args:
        ycbcr: ``(..., 3)``, Y' in [0, 1], Cb/Cr in [-0.5, 0.5].
        bits: 8 or 10.

    Returns:
        ``(..., 3)`` float codes (not rounded, not clipped); see
        :func:`quantize_narrow_range`.
    """
    _check_bits(bits)
    a = _as_float(ycbcr)
    _check_channels(a, "ycbcr")
    gain, offset = _narrow_gain_offset(bits, a.dtype)
    return a * gain + offset


def decode_narrow_range(codes: npt.ArrayLike, bits: int) -> FloatArray:
    """Narrow-range codes -> analogue Y'CbCr; the inverse of :func:`encode_narrow_range`.

    Args:
        codes: ``(..., 3)`` codes, integer or float (integers become float64).
        bits: 8 or 10.

    Returns:
        ``(..., 3)``: Y' (nominally [0, 1]), Cb/Cr (nominally [-0.5, 0.5]);
        codes outside the legal range decode outside those intervals.
    """
    _check_bits(bits)
    a = _as_float(codes)
    _check_channels(a, "codes")
    gain, offset = _narrow_gain_offset(bits, a.dtype)
    return (a - offset) / gain


def _quantize(
    x: FloatArray, lo: npt.ArrayLike, hi: npt.ArrayLike, bits: int
) -> npt.NDArray[np.unsignedinteger[Any]]:
    # NaN has no code; a silent cast would produce an arbitrary value. A min
    # propagates NaN, and reads the plane once without a boolean temporary.
    if x.size and np.isnan(np.min(x)):
        raise ValueError("cannot quantize: codes contain NaN")
    q = np.rint(x)
    np.clip(q, lo, hi, out=q)
    return q.astype(np.uint8 if bits == 8 else np.uint16)


def quantize_narrow_range(
    codes: npt.ArrayLike, bits: int
) -> npt.NDArray[np.unsignedinteger[Any]]:
    """Round and clamp ``(..., 3)`` Y'CbCr codes to integers in the legal range.

    Rounding is ``numpy.rint`` (round half to even). BT.709/BT.2020 write
    ``INT[]`` without fixing the tie rule; half-to-even is unbiased and is
    what colour-science uses, and exact ties only arise from inputs that sit
    exactly on a half code. Y is clamped to [y_min, y_max] and Cb/Cr to
    [c_min, c_max] of :func:`legal_range` (so no values in the footroom /
    headroom survive, and the reserved timing codes can never be produced).

    Args:
        codes: ``(..., 3)`` float codes from :func:`encode_narrow_range`.
        bits: 8 or 10.

    Returns:
        ``uint8`` (8 bits) or ``uint16`` (10 bits) array of the same shape.

    Raises:
        ValueError: bad ``bits``, no trailing channel axis of 3, or NaN codes.
    """
    _check_bits(bits)
    a = _as_float(codes)
    _check_channels(a, "codes")
    r = legal_range(bits)
    lo = np.array([r.y_min, r.c_min, r.c_min], dtype=a.dtype)
    hi = np.array([r.y_max, r.c_max, r.c_max], dtype=a.dtype)
    return _quantize(a, lo, hi, bits)


def quantize_plane(
    plane: npt.ArrayLike, bits: int, is_luma: bool
) -> npt.NDArray[np.unsignedinteger[Any]]:
    """Round and clamp one plane of codes (any shape); see :func:`quantize_narrow_range`.

    Args:
        plane: float codes of a Y plane (``is_luma=True``) or a Cb/Cr plane.
        bits: 8 or 10.
        is_luma: clamp to [y_min, y_max] if True, else to [c_min, c_max].

    Returns:
        ``uint8`` (8 bits) or ``uint16`` (10 bits) array of the same shape.
    """
    _check_bits(bits)
    a = _as_float(plane)
    r = legal_range(bits)
    if is_luma:
        return _quantize(a, r.y_min, r.y_max, bits)
    return _quantize(a, r.c_min, r.c_max, bits)


def rgb_to_codes(rgb: npt.ArrayLike, coeffs: YCbCrCoefficients, bits: int) -> FloatArray:
    """R'G'B' [0, 1] -> unrounded narrow-range Y'CbCr codes.

    :func:`rgb_to_ycbcr` followed by :func:`encode_narrow_range`.
    """
    return encode_narrow_range(rgb_to_ycbcr(rgb, coeffs), bits)


def codes_to_rgb(codes: npt.ArrayLike, coeffs: YCbCrCoefficients, bits: int) -> FloatArray:
    """Narrow-range Y'CbCr codes -> R'G'B' (unclipped floats).

    :func:`decode_narrow_range` followed by :func:`ycbcr_to_rgb`.
    """
    return ycbcr_to_rgb(decode_narrow_range(codes, bits), coeffs)


# --------------------------------------------------------------------------
# 4:2:0 chroma and the I420 layout
#
# Chroma siting decision: every function here treats a 4:2:0 chroma sample as
# sitting at the CENTRE of its 2x2 luma block (H.273 chroma_sample_loc_type 1,
# JPEG/MPEG-1 style), not at the left edge (type 0, the H.264/HEVC default).
# The pre-processor (downsampling), the post-processor (upsampling) and the
# training-data synthesis must agree on one siting or the chroma drifts by a
# quarter chroma pixel per round trip. Centre siting is the one where the 2x2
# box mean and the half-pixel-centre bilinear upsample are geometric inverses
# of each other (both place the sample at the same point, and a linear ramp
# survives down+up exactly away from the borders), and the upsample is exactly
# torch's ``interpolate(..., mode="bilinear", align_corners=False)``, so torch
# code (training, the network) reproduces it without a custom kernel.
# Encoders fed with these frames should signal
# chroma_sample_loc_type = 1 (centre) in the VUI.


def chroma_downsample_420(plane: npt.ArrayLike) -> FloatArray:
    """4:4:4 chroma plane -> 4:2:0 by the mean of each 2x2 block (centre siting).

    Args:
        plane: ``(..., H, W)`` chroma plane (codes or analogue values), H and W
            even; any leading batch shape.

    Returns:
        ``(..., H/2, W/2)`` float plane (same units as the input).

    Raises:
        ValueError: fewer than 2 dimensions, or H or W odd.
    """
    a = _as_float(plane)
    if a.ndim < 2:
        raise ValueError(f"chroma plane must be (..., H, W), got shape {a.shape}")
    h, w = a.shape[-2:]
    if h % 2 or w % 2:
        raise ValueError(
            f"4:2:0 downsampling needs even height and width, got {h}x{w} (H x W)"
        )
    # Pairwise sums rather than reshape().mean(): no float64 accumulator for
    # float32 input, and the same rounding for every block.
    s = (a[..., 0::2, 0::2] + a[..., 0::2, 1::2]) + (a[..., 1::2, 0::2] + a[..., 1::2, 1::2])
    return s * 0.25


def _upsample2_axis(a: FloatArray, axis: int) -> FloatArray:
    # Output sample 2k sits at input coordinate k - 1/4 and 2k+1 at k + 1/4
    # (half-pixel centres, scale 2); edge replication = clamping the neighbour
    # index, which is what torch does for align_corners=False.
    n = a.shape[axis]
    idx = np.arange(n)
    prev = np.take(a, np.maximum(idx - 1, 0), axis=axis)
    nxt = np.take(a, np.minimum(idx + 1, n - 1), axis=axis)
    even = 0.75 * a + 0.25 * prev
    odd = 0.75 * a + 0.25 * nxt
    out = np.stack([even, odd], axis=axis + 1 if axis >= 0 else axis)
    shape = list(a.shape)
    shape[axis] = 2 * n
    return out.reshape(shape)


def chroma_upsample_420(plane: npt.ArrayLike, height: int, width: int) -> FloatArray:
    """4:2:0 chroma plane -> full resolution, bilinear with half-pixel centres.

    Centre siting (see the module notes). Equal to
    ``torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear",
    align_corners=False)``: output pixel i samples the input at
    ``(i + 0.5) / 2 - 0.5`` and out-of-range neighbours are replaced by the
    edge sample.

    Args:
        plane: ``(..., h, w)`` chroma plane (codes or analogue values).
        height: output height, must equal ``2 * h``.
        width: output width, must equal ``2 * w``.

    Returns:
        ``(..., height, width)`` float plane, same units as the input.

    Raises:
        ValueError: fewer than 2 dimensions, an empty plane, or a target size
            that is not exactly twice the input size.
    """
    a = _as_float(plane)
    if a.ndim < 2:
        raise ValueError(f"chroma plane must be (..., h, w), got shape {a.shape}")
    h, w = a.shape[-2:]
    if h == 0 or w == 0:
        raise ValueError(f"chroma plane is empty, shape {a.shape}")
    if height != 2 * h or width != 2 * w:
        raise ValueError(
            f"4:2:0 upsampling of a {h}x{w} plane must produce {2 * h}x{2 * w}, "
            f"asked for {height}x{width}"
        )
    return _upsample2_axis(_upsample2_axis(a, -2), -1)


def _check_i420_luma(h: int, w: int) -> None:
    if h % 2 or w % 2:
        raise ValueError(f"I420 needs even height and width, got {h}x{w} (H x W)")


def pack_i420(
    y: npt.ArrayLike, u: npt.ArrayLike, v: npt.ArrayLike
) -> npt.NDArray[Any]:
    """Lay out already-subsampled planes as an I420 (yuv420p) buffer.

    The I420 buffer is the Y plane (H*W samples, row-major), then U
    (H/2 * W/2), then V (H/2 * W/2), exactly as the bytes of a yuv420p file;
    it is returned reshaped to ``(3H/2, W)``. U and V do not start on row
    boundaries of that 2-D view when H is not a multiple of 4; only the flat
    order is meaningful.

    Args:
        y: ``(H, W)`` luma plane, H and W even.
        u: ``(H/2, W/2)`` Cb plane.
        v: ``(H/2, W/2)`` Cr plane.

    Returns:
        ``(3H/2, W)`` array of ``numpy.result_type(y, u, v)`` (a fresh copy).

    Raises:
        ValueError: a plane is not 2-D, H or W is odd, or U/V have the wrong shape.
    """
    ya, ua, va = np.asarray(y), np.asarray(u), np.asarray(v)
    for name, p in (("y", ya), ("u", ua), ("v", va)):
        if p.ndim != 2:
            raise ValueError(f"{name} plane must be 2-D, got shape {p.shape}")
    h, w = ya.shape
    _check_i420_luma(h, w)
    for name, p in (("u", ua), ("v", va)):
        if p.shape != (h // 2, w // 2):
            raise ValueError(
                f"{name} plane must be {(h // 2, w // 2)} for a {h}x{w} luma plane, "
                f"got {p.shape}"
            )
    dtype = np.result_type(ya, ua, va)
    buf = np.concatenate([ya.ravel(), ua.ravel(), va.ravel()]).astype(dtype, copy=False)
    out: npt.NDArray[Any] = buf.reshape(3 * h // 2, w)
    return out


def unpack_i420(
    buf: npt.ArrayLike,
) -> tuple[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any]]:
    """Split an I420 buffer ``(3H/2, W)`` into its planes; the inverse of :func:`pack_i420`.

    Args:
        buf: ``(3H/2, W)`` I420 buffer of any dtype (H even, W even).

    Returns:
        ``(y, u, v)`` with shapes ``(H, W)``, ``(H/2, W/2)``, ``(H/2, W/2)`` and
        the buffer's dtype. They are views of ``buf`` when it is C-contiguous,
        copies otherwise; copy before writing if that matters.

    Raises:
        ValueError: not 2-D, row count not a multiple of 3 (i.e. not 3/2 of an
            even height), or odd width.
    """
    a = np.asarray(buf)
    if a.ndim != 2:
        raise ValueError(f"I420 buffer must be 2-D (3H/2, W), got shape {a.shape}")
    rows, w = a.shape
    if rows % 3:
        raise ValueError(
            f"I420 buffer has {rows} rows, which is not 3/2 of an even luma "
            f"height (must be a multiple of 3)"
        )
    h = 2 * rows // 3
    _check_i420_luma(h, w)
    flat = a.reshape(-1)
    ny, nc = h * w, (h // 2) * (w // 2)
    yp = flat[:ny].reshape(h, w)
    up = flat[ny : ny + nc].reshape(h // 2, w // 2)
    vp = flat[ny + nc :].reshape(h // 2, w // 2)
    return yp, up, vp


def yuv444_to_i420(yuv444: npt.ArrayLike) -> FloatArray:
    """``(H, W, 3)`` Y'CbCr (codes or analogue) -> ``(3H/2, W)`` I420 buffer.

    Chroma is subsampled with :func:`chroma_downsample_420` (centre siting);
    nothing is rounded. Float inputs keep their dtype, integer inputs give
    float64 (a 2x2 mean is not an integer); quantize with
    :func:`quantize_plane` and re-pack with :func:`pack_i420` for bytes.

    Raises:
        ValueError: not ``(H, W, 3)``, or H or W odd.
    """
    a = _as_float(yuv444)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"yuv444 must be (H, W, 3), got shape {a.shape}")
    _check_i420_luma(a.shape[0], a.shape[1])
    u = chroma_downsample_420(a[..., 1])
    v = chroma_downsample_420(a[..., 2])
    return pack_i420(a[..., 0], u, v)


def quantize_i420(yuv444_codes: npt.ArrayLike, bits: int) -> npt.NDArray[np.unsignedinteger[Any]]:
    """``(H, W, 3)`` unrounded narrow-range Y'CbCr codes -> integer ``(3H/2, W)`` I420 frame.

    :func:`yuv444_to_i420` (chroma averaged to 4:2:0 before rounding, so each
    stored code is rounded once), then :func:`quantize_plane` per plane
    (rounded and clamped to the legal range) and :func:`pack_i420`.

    Returns:
        ``uint8`` (8 bits) or ``uint16`` (10 bits) I420 buffer.
    """
    y, u, v = unpack_i420(yuv444_to_i420(yuv444_codes))
    packed: npt.NDArray[np.unsignedinteger[Any]] = pack_i420(
        quantize_plane(y, bits, is_luma=True),
        quantize_plane(u, bits, is_luma=False),
        quantize_plane(v, bits, is_luma=False),
    )
    return packed


def i420_to_yuv444(buf: npt.ArrayLike) -> FloatArray:
    """``(3H/2, W)`` I420 buffer -> ``(H, W, 3)`` Y'CbCr with upsampled chroma.

    :func:`unpack_i420` then :func:`chroma_upsample_420` (centre siting,
    bilinear). Integer buffers (decoded yuv420p bytes) give float64 codes;
    float buffers keep their dtype. Nothing is rounded.
    """
    yp, up, vp = unpack_i420(buf)
    yf = _as_float(yp)
    h, w = yf.shape
    uf = chroma_upsample_420(up, h, w).astype(yf.dtype, copy=False)
    vf = chroma_upsample_420(vp, h, w).astype(yf.dtype, copy=False)
    return np.stack([yf, uf, vf], axis=-1)


# --------------------------------------------------------------------------
# Transfer functions

# SMPTE ST 2084:2014 / ITU-R BT.2100-2 Table 4 (PQ): the constants
# are defined as exact rationals; Fraction documents that and converts exactly.
PQ_M1: Final[float] = float(Fraction(2610, 16384))  # = 0.1593017578125
PQ_M2: Final[float] = float(Fraction(2523, 4096) * 128)  # = 78.84375
PQ_C1: Final[float] = float(Fraction(3424, 4096))  # = 0.8359375 = c3 - c2 + 1
PQ_C2: Final[float] = float(Fraction(2413, 4096) * 32)  # = 18.8515625
PQ_C3: Final[float] = float(Fraction(2392, 4096) * 32)  # = 18.6875
PQ_PEAK_CD_M2: Final[float] = 10000.0


def pq_eotf(signal: npt.ArrayLike) -> FloatArray:
    """SMPTE ST 2084 (PQ) EOTF: non-linear signal -> display luminance.

    SMPTE ST 2084:2014 (EOTF) / ITU-R BT.2100-2 Table 4 (PQ EOTF):
    ``L = 10000 * (max(E'^(1/m2) - c1, 0) / (c2 - c3 E'^(1/m2)))^(1/m1)``.

    Args:
        signal: PQ signal E' (full-range normalised, 0 = code 0, 1 = peak);
            values outside [0, 1] are clipped to it (negatives from filtering
            would otherwise give NaN).

    Returns:
        Luminance in cd/m^2, [0, 10000].
    """
    e = np.clip(_as_float(signal), 0.0, 1.0)
    p = e ** (1.0 / PQ_M2)
    num = np.maximum(p - PQ_C1, 0.0)
    out: FloatArray = PQ_PEAK_CD_M2 * (num / (PQ_C2 - PQ_C3 * p)) ** (1.0 / PQ_M1)
    return out


def pq_inverse_eotf(luminance_cd_m2: npt.ArrayLike) -> FloatArray:
    """SMPTE ST 2084 (PQ) inverse EOTF: display luminance -> non-linear signal.

    SMPTE ST 2084:2014 (inverse EOTF) / ITU-R BT.2100-2 Table 4 (PQ inverse EOTF):
    ``E' = ((c1 + c2 Y^m1) / (1 + c3 Y^m1))^m2`` with ``Y = L / 10000``.

    Args:
        luminance_cd_m2: luminance in cd/m^2; clipped to [0, 10000].

    Returns:
        PQ signal E' in [0, 1].
    """
    y = np.clip(_as_float(luminance_cd_m2) / PQ_PEAK_CD_M2, 0.0, 1.0)
    ym = y**PQ_M1
    return ((PQ_C1 + PQ_C2 * ym) / (1.0 + PQ_C3 * ym)) ** PQ_M2


_BT1886_GAMMA: Final = 2.4


def _bt1886_ab(lw: float, lb: float) -> tuple[float, float]:
    if not lw > lb >= 0.0:
        raise ValueError(f"BT.1886 needs lw > lb >= 0, got lw={lw}, lb={lb}")
    g = 1.0 / _BT1886_GAMMA
    span = lw**g - lb**g
    return span**_BT1886_GAMMA, lb**g / span


def bt1886_eotf(v: npt.ArrayLike, lw: float = 100.0, lb: float = 0.0) -> FloatArray:
    """ITU-R BT.1886 reference EOTF (Annex 1): SDR signal -> display luminance.

    ``L = a * max(V + b, 0)^2.4`` with ``a = (Lw^(1/2.4) - Lb^(1/2.4))^2.4``
    and ``b = Lb^(1/2.4) / (Lw^(1/2.4) - Lb^(1/2.4))``.

    Args:
        v: normalised video signal V (0 = black code, 1 = white code); values
            above 1 are not clipped (the curve extends), below ``-b`` give Lb.
        lw: screen luminance for white, cd/m^2.
        lb: screen luminance for black, cd/m^2.

    Returns:
        Luminance in cd/m^2.
    """
    a, b = _bt1886_ab(lw, lb)
    x = _as_float(v)
    return a * np.maximum(x + b, 0.0) ** _BT1886_GAMMA


def bt1886_inverse_eotf(
    l: npt.ArrayLike,  # noqa: E741 - the name is part of the public API
    lw: float = 100.0,
    lb: float = 0.0,
) -> FloatArray:
    """Inverse of :func:`bt1886_eotf` (ITU-R BT.1886 Annex 1, solved for V).

    ``V = (max(L, 0) / a)^(1/2.4) - b``.

    Args:
        l: luminance in cd/m^2 (negative values are treated as 0).
        lw: screen luminance for white, cd/m^2.
        lb: screen luminance for black, cd/m^2.

    Returns:
        Normalised video signal V (1 at ``L = lw``, 0 at ``L = lb``); not clipped.
    """
    a, b = _bt1886_ab(lw, lb)
    x = _as_float(l)
    return (np.maximum(x, 0.0) / a) ** (1.0 / _BT1886_GAMMA) - b


# --------------------------------------------------------------------------
# Gamut (linear light)

_D65_XY: Final = (0.3127, 0.3290)
_BT709_PRIMARIES_XY: Final = ((0.640, 0.330), (0.300, 0.600), (0.150, 0.060))
_BT2020_PRIMARIES_XY: Final = ((0.708, 0.292), (0.170, 0.797), (0.131, 0.046))


def _rgb_to_xyz_matrix(
    primaries: tuple[tuple[float, float], ...], white: tuple[float, float]
) -> npt.NDArray[np.float64]:
    # Normalised primary matrix (SMPTE RP 177): scale the primaries'
    # XYZ columns so that R = G = B = 1 gives the white point with Y = 1.
    p = np.array([[x / y, 1.0, (1.0 - x - y) / y] for x, y in primaries]).T
    wx, wy = white
    w = np.array([wx / wy, 1.0, (1.0 - wx - wy) / wy])
    scale: npt.NDArray[np.float64] = np.linalg.solve(p, w)
    return np.asarray(p * scale, dtype=np.float64)


def _readonly(m: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    m.setflags(write=False)
    return m


BT709_TO_BT2020: Final = _readonly(
    np.linalg.solve(
        _rgb_to_xyz_matrix(_BT2020_PRIMARIES_XY, _D65_XY),
        _rgb_to_xyz_matrix(_BT709_PRIMARIES_XY, _D65_XY),
    )
)
"""Linear BT.709 RGB -> linear BT.2020 RGB (ITU-R BT.2087-0, the linear-light matrix M).

Derived in float64 from the BT.709/BT.2020 primaries and D65, as BT.2087
does; it matches BT.2087's published 4-decimal matrix
[[0.6274, 0.3293, 0.0433], [0.0691, 0.9195, 0.0114], [0.0164, 0.0880, 0.8956]]
to within 5e-5, and the exact derivation keeps white (rows sum to 1) and
makes :data:`BT2020_TO_BT709` an exact inverse. Read-only.
"""

BT2020_TO_BT709: Final = _readonly(np.linalg.inv(BT709_TO_BT2020))
"""Linear BT.2020 RGB -> linear BT.709 RGB, the inverse of :data:`BT709_TO_BT2020`. Read-only."""


def bt709_to_bt2020(rgb_linear: npt.ArrayLike) -> FloatArray:
    """Convert linear-light BT.709 RGB to linear-light BT.2020 RGB (ITU-R BT.2087).

    Must be applied to linear light (after the EOTF, e.g. :func:`bt1886_eotf`),
    never to gamma-encoded R'G'B'.

    Args:
        rgb_linear: ``(..., 3)`` linear RGB, relative or cd/m^2 (kept).

    Returns:
        ``(..., 3)`` linear BT.2020 RGB in the same units; BT.709 is inside
        BT.2020, so in-gamut input stays non-negative.
    """
    a = _as_float(rgb_linear)
    _check_channels(a, "rgb_linear")
    return a @ BT709_TO_BT2020.T.astype(a.dtype)


def bt2020_to_bt709(
    rgb_linear: npt.ArrayLike, clip: bool = True, peak: float | None = None
) -> FloatArray:
    """Convert linear-light BT.2020 RGB to linear-light BT.709 RGB (inverse of BT.2087's M).

    BT.2020 colours outside BT.709 give negative components (and components
    above the white level). With ``clip=True`` negatives are set to 0 (a hard
    gamut clip, no gamut mapping); the upper bound depends on the caller's
    units, so it is applied only when ``peak`` is given.

    Args:
        rgb_linear: ``(..., 3)`` linear BT.2020 RGB, relative or cd/m^2.
        clip: clip negative components to 0.
        peak: if given (same units as the input) and ``clip`` is True, also
            clip components above ``peak``.

    Returns:
        ``(..., 3)`` linear BT.709 RGB in the input's units.
    """
    a = _as_float(rgb_linear)
    _check_channels(a, "rgb_linear")
    out = a @ BT2020_TO_BT709.T.astype(a.dtype)
    if clip:
        out = np.clip(out, 0.0, np.inf if peak is None else peak)
    return out


# --------------------------------------------------------------------------
# SDR <-> HDR luminance mapping and tone mapping

SDR_REFERENCE_WHITE_CD_M2: Final[float] = 203.0
"""HDR Reference White (ITU-R BT.2408, section 2.1): 203 cd/m^2 (58 % PQ).

Where SDR is placed into HDR (BT.2408 section 5.1.1, display-referred
mapping), SDR diffuse/peak white lands here.
"""


def sdr_to_hdr_luminance(sdr_display_cd_m2: npt.ArrayLike, sdr_peak: float = 100.0) -> FloatArray:
    """Place SDR display light into HDR by BT.2408 display-referred mapping.

    ITU-R BT.2408 section 5.1.1: SDR displayed on a ``sdr_peak`` (BT.1886,
    nominally 100 cd/m^2) display is scaled linearly so that SDR white
    reaches HDR Reference White, 203 cd/m^2:
    ``L_HDR = L_SDR * 203 / sdr_peak`` (x2.03 for a 100-nit SDR). No OOTF
    adjustment (BT.2408's optional 1.15 gamma) is applied.

    Args:
        sdr_display_cd_m2: SDR display luminance in cd/m^2 (e.g. from
            :func:`bt1886_eotf` with ``lw=sdr_peak``).
        sdr_peak: SDR display peak (white) luminance, cd/m^2.

    Returns:
        HDR display luminance in cd/m^2 (feed to :func:`pq_inverse_eotf`).
    """
    if not sdr_peak > 0.0:
        raise ValueError(f"sdr_peak must be positive, got {sdr_peak}")
    return _as_float(sdr_display_cd_m2) * (SDR_REFERENCE_WHITE_CD_M2 / sdr_peak)


def bt2390_eetf(
    pq_signal: npt.ArrayLike,
    source_black: float = 0.0,
    source_peak: float = 10000.0,
    target_black: float = 0.0,
    target_peak: float = 1000.0,
) -> FloatArray:
    """ITU-R BT.2390 EETF: map PQ content to a display of smaller luminance range.

    Report ITU-R BT.2390-4 (2018), the EETF section (pp. 20-21: the
    Hermite-spline roll-off; later revisions moved it to Report ITU-R
    BT.2408-7 Annex 5 unchanged in form).
    Working on PQ signals normalised to the mastering range,
    ``E1 = (E - PQ(Lb)) / (PQ(Lw) - PQ(Lb))``,
    ``minLum``/``maxLum`` = target black/peak normalised the same way:

    * knee start ``KS = 1.5 maxLum - 0.5``;
    * ``E2 = E1`` below KS, else the Hermite spline
      ``P(E1) = (2T^3 - 3T^2 + 1) KS + (T^3 - 2T^2 + T)(1 - KS)
      + (-2T^3 + 3T^2) maxLum`` with ``T = (E1 - KS) / (1 - KS)``;
    * black-level lift ``E3 = E2 + b (1 - E2)^4`` with ``b = minLum``;
    * ``E4 = E3 (PQ(Lw) - PQ(Lb)) + PQ(Lb)``.

    Applied to every element independently, i.e. per R'G'B' channel when
    given ``(..., 3)`` (the caller may instead pass a single PQ intensity such
    as max(R', G', B') and rescale).
    The curve is the identity below the knee when both blacks are 0, is C1
    continuous at the knee, monotonic, and maps the source peak to the target
    peak. When ``target_peak >= source_peak`` there is no roll-off (KS >= 1).
    Inputs outside [Lb, Lw] are clamped to it first; a target black below the
    source black gives no lift (b is clamped at 0).

    Args:
        pq_signal: PQ signal(s) E' in [0, 1], any shape.
        source_black: mastering display black Lb, cd/m^2.
        source_peak: mastering display peak Lw, cd/m^2.
        target_black: target display black Lmin, cd/m^2.
        target_peak: target display peak Lmax, cd/m^2.

    Returns:
        PQ signal(s) E4 in [PQ(Lmin), PQ(Lmax)], same shape.
    """
    if not source_peak > source_black >= 0.0:
        raise ValueError(
            f"need source_peak > source_black >= 0, got {source_peak}, {source_black}"
        )
    if not target_peak > target_black >= 0.0:
        raise ValueError(
            f"need target_peak > target_black >= 0, got {target_peak}, {target_black}"
        )
    e = _as_float(pq_signal)
    pq_lb = float(pq_inverse_eotf(source_black))
    pq_lw = float(pq_inverse_eotf(source_peak))
    span = pq_lw - pq_lb
    min_lum = max((float(pq_inverse_eotf(target_black)) - pq_lb) / span, 0.0)
    max_lum = (float(pq_inverse_eotf(target_peak)) - pq_lb) / span
    ks = 1.5 * max_lum - 0.5

    e1 = np.clip((e - pq_lb) / span, 0.0, 1.0)
    if ks < 1.0:
        t = (e1 - ks) / (1.0 - ks)
        t2 = t * t
        t3 = t2 * t
        spline = (
            (2.0 * t3 - 3.0 * t2 + 1.0) * ks
            + (t3 - 2.0 * t2 + t) * (1.0 - ks)
            + (-2.0 * t3 + 3.0 * t2) * max_lum
        )
        e2 = np.where(e1 < ks, e1, spline)
    else:
        e2 = e1
    e3 = e2 + min_lum * (1.0 - e2) ** 4
    out: FloatArray = e3 * span + pq_lb
    return out


# ITU-R BT.2446-1 Method A constants (Table 1, tone-mapping steps 2 and 3).
_BT2446A_KNEE_LO: Final = 0.7399
_BT2446A_KNEE_HI: Final = 0.9909
_BT2446A_GAMMA: Final = 2.4


def _bt2446a_rho(peak_cd_m2: float) -> float:
    return 1.0 + 32.0 * math.pow(peak_cd_m2 / PQ_PEAK_CD_M2, 1.0 / _BT2446A_GAMMA)


def bt2446a_hdr_to_sdr(
    rgb_pq_bt2020: npt.ArrayLike, hdr_peak: float = 1000.0, sdr_peak: float = 100.0
) -> FloatArray:
    """ITU-R BT.2446-1 Method A HDR-to-SDR conversion (static tone mapping).

    Report ITU-R BT.2446-1 (03/2021), Method A; the step numbers below are
    the rows of its Table 1 (tone mapping) and Table 2 (colour correction).

    0. Method A takes ``R'G'B' = (RGB_linear / L_HDR)^(1/2.4)`` in [0, 1].
       This function derives it from PQ: :func:`pq_eotf`, divide by
       ``hdr_peak``, clip to [0, 1] (content above ``hdr_peak`` is clipped;
       bring a brighter master down with :func:`bt2390_eetf` first), raise to
       1/2.4.
    1. Luma ``Y' = 0.2627 R' + 0.6780 G' + 0.0593 B'`` (BT.2020).
    2. Perceptual linearisation:
       ``rho_HDR = 1 + 32 (L_HDR / 10000)^(1/2.4)``,
       ``Y'_p = log(1 + (rho_HDR - 1) Y') / log(rho_HDR)``.
    3. Tone curve: ``Y'_c = 1.0770 Y'_p`` for ``Y'_p <= 0.7399``;
       ``-1.1510 Y'_p^2 + 2.7811 Y'_p - 0.6302`` for ``0.7399 < Y'_p < 0.9909``;
       ``0.5 Y'_p + 0.5`` for ``Y'_p >= 0.9909``.
    4. Back to the gamma domain: ``rho_SDR = 1 + 32 (L_SDR / 10000)^(1/2.4)``,
       ``Y'_SDR = (rho_SDR^Y'_c - 1) / (rho_SDR - 1)``.
    5. Colour correction (Table 2): ``f(Y'_SDR) = Y'_SDR / (1.1 Y')``,
       ``Cb_TMO = f (B' - Y') / 1.8814``, ``Cr_TMO = f (R' - Y') / 1.4746``,
       ``Y'_TMO = Y'_SDR - max(0.1 Cr_TMO, 0)``.
    6. BT.2020 Y'CbCr -> R'G'B' (:func:`ycbcr_to_rgb` with :data:`BT2020`),
       then clip to [0, 1].

    Args:
        rgb_pq_bt2020: ``(..., 3)`` BT.2020 R'G'B' PQ signals in [0, 1] of an
            HDR master.
        hdr_peak: L_HDR, the HDR peak luminance in cd/m^2.
        sdr_peak: L_SDR, the SDR peak luminance in cd/m^2.

    Returns:
        ``(..., 3)`` BT.2020 SDR non-linear R'G'B' in [0, 1], gamma 2.4 domain
        (decode with :func:`bt1886_eotf`, convert primaries with
        :func:`bt2020_to_bt709`, clip and re-encode for BT.709 SDR).
    """
    if not hdr_peak > 0.0 or not sdr_peak > 0.0:
        raise ValueError(f"peaks must be positive, got hdr={hdr_peak}, sdr={sdr_peak}")
    a = _as_float(rgb_pq_bt2020)
    _check_channels(a, "rgb_pq_bt2020")
    rel = np.clip(pq_eotf(a) / hdr_peak, 0.0, 1.0)
    rgb_p = rel ** (1.0 / _BT2446A_GAMMA)

    ycc = rgb_to_ycbcr(rgb_p, BT2020)
    y_hdr = ycc[..., 0]

    rho_hdr = _bt2446a_rho(hdr_peak)
    y_p = np.log1p((rho_hdr - 1.0) * y_hdr) / np.log(rho_hdr)
    y_c = np.where(
        y_p <= _BT2446A_KNEE_LO,
        1.0770 * y_p,
        np.where(
            y_p < _BT2446A_KNEE_HI,
            (-1.1510 * y_p + 2.7811) * y_p - 0.6302,
            0.5 * y_p + 0.5,
        ),
    )
    rho_sdr = _bt2446a_rho(sdr_peak)
    y_sdr = (rho_sdr**y_c - 1.0) / (rho_sdr - 1.0)

    # Y' = 0 only for R' = G' = B' = 0, whose chroma is 0 as well, so any
    # finite f works there; avoid the 0/0.
    denom = 1.1 * y_hdr
    f = np.divide(y_sdr, denom, out=np.zeros_like(y_sdr), where=denom > 0.0)
    cb = f * ycc[..., 1]
    cr = f * ycc[..., 2]
    y_tmo = y_sdr - np.maximum(0.1 * cr, 0.0)

    out = ycbcr_to_rgb(np.stack([y_tmo, cb, cr], axis=-1), BT2020)
    result: FloatArray = np.clip(out, 0.0, 1.0).astype(a.dtype, copy=False)
    return result


def hdr10_to_sdr_bt709(
    rgb_pq_bt2020: npt.ArrayLike, hdr_peak: float = 1000.0, sdr_peak: float = 100.0
) -> FloatArray:
    """The SDR grade of an HDR10 signal, as an SDR screen shows it: BT.709 R'G'B', BT.1886-encoded.

    :func:`bt2446a_hdr_to_sdr` (BT.2020 SDR R'G'B'), :func:`bt1886_eotf` for
    a ``sdr_peak`` screen, BT.2020 -> BT.709 with a hard gamut clip
    (:func:`bt2020_to_bt709`, also clipping at ``sdr_peak``), and
    :func:`bt1886_inverse_eotf`. The training pairs' SDR grade
    (``gpgmnet.data``), the bundled sample clip and the preview pictures all
    come from this one chain.

    Args:
        rgb_pq_bt2020: ``(..., 3)`` BT.2020 PQ R'G'B' in [0, 1].
        hdr_peak: the master's peak, cd/m^2 (see :func:`bt2446a_hdr_to_sdr`).
        sdr_peak: the SDR screen's white, cd/m^2.

    Returns:
        ``(..., 3)`` BT.709 R'G'B' signal in [0, 1].
    """
    sdr_bt2020 = bt2446a_hdr_to_sdr(rgb_pq_bt2020, hdr_peak=hdr_peak, sdr_peak=sdr_peak)
    light_709 = bt2020_to_bt709(bt1886_eotf(sdr_bt2020, lw=sdr_peak), clip=True, peak=sdr_peak)
    return bt1886_inverse_eotf(light_709, lw=sdr_peak)
