"""The SDR gradings: how an HDR10 master becomes the 8-bit BT.709 SDR rendition the network sees.

Real SDR is graded many ways. Each :class:`Grading` here is one documented
way, applied to the HDR10 master (which stays the ground truth). They all
start from the same place, the master's linear BT.2020 light in cd/m^2
(PQ EOTF of the decoded 10-bit codes), and end the same way: a BT.709
R'G'B' signal for a 100 cd/m^2 BT.1886 screen, which :func:`grade` turns
into 8-bit narrow-range BT.709 Y'CbCr 4:4:4 codes. Every transfer function
and matrix comes from :mod:`sritm_core.colour`.

The order of :data:`GRADINGS` is part of the network's interface: a
conditioned GPGMNet takes the grading's index as a one-hot (the served
``CONVENTION`` input names it). Append new gradings; never reorder.

Randomisation (:class:`GradingVariation`, training only) stands for what
colourists vary within one convention: exposure 2^U(-0.5, 0.5) on the light
before the curve, saturation (Cb, Cr x U(0.8, 1.2)) and a black lift
``b + (1 - b) V`` with b ~ U(0, 0.03) on the signal; the OpenCV operators
also draw their own parameters. Validation and evaluation use
:data:`NO_VARIATION`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from sritm_core import colour, contract

SDR_PEAK_CD_M2 = 100.0
HDR_REFERENCE_WHITE_CD_M2 = 203.0
"""BT.2408 section 2.1: HDR Reference White (diffuse white) in cd/m^2."""


@dataclass(frozen=True)
class GradingVariation:
    """What one rendition varies within its grading (identity by default)."""

    exposure: float = 1.0
    saturation: float = 1.0
    black_lift: float = 0.0
    draw: float = 0.5  # U(0, 1), for the operator's own parameters (0.5 = its documented default)


NO_VARIATION = GradingVariation()


def random_variation(rng: np.random.Generator) -> GradingVariation:
    """One training draw (see the module notes for the ranges)."""
    return GradingVariation(
        exposure=float(2.0 ** rng.uniform(-0.5, 0.5)),
        saturation=float(rng.uniform(0.8, 1.2)),
        black_lift=float(rng.uniform(0.0, 0.03)),
        draw=float(rng.uniform(0.0, 1.0)),
    )


LinearToSignal = Callable[[NDArray[np.float64], GradingVariation], NDArray[np.float64]]


@dataclass(frozen=True)
class Grading:
    """One SDR convention.

    Attributes:
        name: the name the CLI, SDK and server use.
        source: the standard, paper or library it follows.
        expects: what SDR it stands for, for users choosing a preset.
        render: linear BT.2020 light (cd/m^2, ``(..., 3)``) -> BT.709 R'G'B'
            signal in [0, 1] for a 100 cd/m^2 BT.1886 screen.
    """

    name: str
    source: str
    expects: str
    render: LinearToSignal


def _luminance_bt2020(rgb: NDArray[np.float64]) -> NDArray[np.float64]:
    return rgb @ np.array([colour.BT2020.kr, colour.BT2020.kg, colour.BT2020.kb])


def _scale_to_luminance(rgb: NDArray[np.float64], y_in: NDArray[np.float64],
                        y_out: NDArray[np.float64]) -> NDArray[np.float64]:
    """Scale RGB so its luminance goes from ``y_in`` to ``y_out``: keeps the chromaticity (the xyY route)."""
    ratio = np.where(y_in > 1e-9, y_out / np.maximum(y_in, 1e-9), 0.0)
    return rgb * ratio[..., None]


def _display_signal(light_bt2020_cd_m2: NDArray[np.float64]) -> NDArray[np.float64]:
    """SDR display light (BT.2020, cd/m^2) -> BT.709 BT.1886 signal: hard gamut clip, clip at white."""
    light_709 = colour.bt2020_to_bt709(light_bt2020_cd_m2, clip=True, peak=SDR_PEAK_CD_M2)
    return colour.bt1886_inverse_eotf(light_709, lw=SDR_PEAK_CD_M2)


def _linear_bt709_relative(linear_bt2020: NDArray[np.float64]) -> NDArray[np.float64]:
    return colour.bt2020_to_bt709(linear_bt2020, clip=True) / SDR_PEAK_CD_M2


# --------------------------------------------------------------------------
# the gradings


def render_bt2446a(linear: NDArray[np.float64], variation: GradingVariation) -> NDArray[np.float64]:
    """BT.2446-1 Method A, 1000 -> 100 cd/m^2 (:func:`sritm_core.colour.hdr10_to_sdr_bt709`)."""
    return colour.hdr10_to_sdr_bt709(colour.pq_inverse_eotf(linear * variation.exposure), hdr_peak=1000.0,
                                     sdr_peak=SDR_PEAK_CD_M2)


BT2446C_CROSSTALK = 0.05
BT2446C_K1, BT2446C_K3 = 0.83802, 0.74204
# % of SDR white where the linear part ends (80 % signal; the Report's "58.5")
BT2446C_INFLECTION_SDR = 100.0 * 0.8**2.4


def bt2446c_curve(y_hdr_cd_m2: NDArray[np.float64]) -> NDArray[np.float64]:
    """BT.2446-1 Method C's luminance curve, HDR cd/m^2 -> SDR per cent of white (Report BT.2446-1, 5.2).

    Linear ``k1 Y`` up to ``Y_ip = 58.5 / k1`` cd/m^2, then
    ``k2 ln(Y / Y_ip - k3) + k4``; k2 and k4 follow from continuity of value
    and slope at ``Y_ip`` (k2 = 15.09968, k4 = 78.99439 as published). The
    Report's 58.5 is 100 x 0.8^2.4 = 58.535 rounded; the published k2 and k4
    come from the unrounded value (58.5 itself would give 15.09066, 78.94710).
    """
    y_ip = BT2446C_INFLECTION_SDR / BT2446C_K1
    k2 = BT2446C_K1 * y_ip * (1.0 - BT2446C_K3)
    k4 = BT2446C_K1 * y_ip - k2 * np.log(1.0 - BT2446C_K3)
    y = np.asarray(y_hdr_cd_m2, dtype=np.float64)
    above = k2 * np.log(np.maximum(y / y_ip - BT2446C_K3, 1e-12)) + k4
    return np.where(y < y_ip, BT2446C_K1 * y, above)


def render_bt2446c(linear: NDArray[np.float64], variation: GradingVariation) -> NDArray[np.float64]:
    """BT.2446-1 Method C: crosstalk matrix (alpha 0.05), luminance curve on Y (chromaticity kept), inverse crosstalk.

    The curve maps 1000 cd/m^2 to 118 % of SDR white; this rendition scales
    it so the master's 1000 cd/m^2 peak lands on 100 % (8-bit narrow range
    here carries no super-whites), then clips the gamut to BT.709.
    """
    a = BT2446C_CROSSTALK
    crosstalk = np.array([[1 - 2 * a, a, a], [a, 1 - 2 * a, a], [a, a, 1 - 2 * a]])
    mixed = linear * variation.exposure @ crosstalk.T
    y = _luminance_bt2020(mixed)
    y_sdr = bt2446c_curve(y) / float(bt2446c_curve(np.array(1000.0))) * SDR_PEAK_CD_M2
    mapped = _scale_to_luminance(mixed, y, y_sdr) @ np.linalg.inv(crosstalk).T
    return _display_signal(np.maximum(mapped, 0.0))


BT2408_KNEE = 0.7
"""Fraction of SDR white below which BT.2408 placement is linear."""


def bt2408_rolloff(x: NDArray[np.float64], knee: float = BT2408_KNEE) -> NDArray[np.float64]:
    """Identity below ``knee``, then ``k + (1 - k)(1 - exp(-(x - k)/(1 - k)))``: C1 at the knee, -> 1 as x -> inf."""
    x = np.asarray(x, dtype=np.float64)
    rolled = knee + (1.0 - knee) * (1.0 - np.exp(-(x - knee) / (1.0 - knee)))
    return np.where(x <= knee, x, rolled)


def render_bt2408(linear: NDArray[np.float64], variation: GradingVariation) -> NDArray[np.float64]:
    """BT.2408 display-light placement: HDR Reference White (203 cd/m^2) -> SDR white, mid-tones linear.

    Luminance relative to 203 cd/m^2 is kept below 0.7 and rolled off above
    (:func:`bt2408_rolloff`), chromaticity kept, then 100 cd/m^2 SDR. The
    inverse is BT.2408's SDR -> HDR up-mapping and the gain-map HDR of
    phone cameras (SDR white at 203 cd/m^2, highlights boosted above it).
    """
    lit = linear * variation.exposure
    y = _luminance_bt2020(lit)
    y_sdr = bt2408_rolloff(y / HDR_REFERENCE_WHITE_CD_M2) * SDR_PEAK_CD_M2
    return _display_signal(_scale_to_luminance(lit, y, y_sdr))


def _opencv_tonemap(operator: Any, linear: NDArray[np.float64], variation: GradingVariation) -> NDArray[np.float64]:
    rgb = np.maximum(_linear_bt709_relative(linear * variation.exposure), 1e-6).astype(np.float32)
    if rgb.ndim != 3:
        raise ValueError(f"OpenCV tone mapping needs an H x W x 3 image, got shape {rgb.shape}")
    bgr = np.ascontiguousarray(rgb[..., ::-1])  # OpenCV is BGR
    if isinstance(operator, cv2.TonemapMantiuk) and np.ptp(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)) == 0:
        # No contrast at all (a flat or black frame): OpenCV's Mantiuk solver asserts on its 0/0
        # step, though the solution is its start (the input); what remains is its linear normalisation.
        operator = cv2.createTonemap(gamma=1.0)
    mapped = operator.process(bgr)[..., ::-1]
    light = np.clip(np.nan_to_num(mapped.astype(np.float64), nan=0.0), 0.0, 1.0) * SDR_PEAK_CD_M2
    return colour.bt1886_inverse_eotf(light, lw=SDR_PEAK_CD_M2)


def render_reinhard(linear: NDArray[np.float64], variation: GradingVariation) -> NDArray[np.float64]:
    """Reinhard & Devlin 2005 via OpenCV ``createTonemapReinhard`` (gamma 1, then BT.1886).

    Intensity U(-1, 1), light adaptation U(0.6, 1).
    """
    d = variation.draw
    operator = cv2.createTonemapReinhard(gamma=1.0, intensity=2.0 * d - 1.0, light_adapt=0.6 + 0.4 * d, color_adapt=0.0)
    return _opencv_tonemap(operator, linear, variation)


def render_drago(linear: NDArray[np.float64], variation: GradingVariation) -> NDArray[np.float64]:
    """Drago et al. 2003 via OpenCV ``createTonemapDrago`` (gamma 1, then BT.1886): bias U(0.75, 0.95)."""
    operator = cv2.createTonemapDrago(gamma=1.0, saturation=1.0, bias=0.75 + 0.2 * variation.draw)
    return _opencv_tonemap(operator, linear, variation)


def render_mantiuk(linear: NDArray[np.float64], variation: GradingVariation) -> NDArray[np.float64]:
    """Mantiuk et al. 2006 (local contrast) via OpenCV ``createTonemapMantiuk`` (gamma 1, then BT.1886).

    Scale U(0.6, 0.85).
    """
    operator = cv2.createTonemapMantiuk(gamma=1.0, scale=0.6 + 0.25 * variation.draw, saturation=1.0)
    return _opencv_tonemap(operator, linear, variation)


HABLE = {"A": 0.15, "B": 0.50, "C": 0.10, "D": 0.20, "E": 0.02, "F": 0.30, "W": 11.2}
HABLE_EXPOSURE_BIAS = 2.0
HABLE_MIDDLE_GREY_CD_M2 = 26.0


def hable_curve(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """John Hable's filmic curve (Uncharted 2, GDC 2010): ``((x(Ax+CB)+DE) / (x(Ax+B)+DF)) - E/F``."""
    A, B, C, D, E, F = (HABLE[k] for k in "ABCDEF")
    x = np.asarray(x, dtype=np.float64)
    return (x * (A * x + C * B) + D * E) / (x * (A * x + B) + D * F) - E / F


def render_hable(linear: NDArray[np.float64], variation: GradingVariation) -> NDArray[np.float64]:
    """Hable filmic per channel on linear BT.709.

    Exposure bias 2, 26 cd/m^2 grey at scene value 0.18, white point W = 11.2.
    """
    scene = _linear_bt709_relative(linear * variation.exposure) * (SDR_PEAK_CD_M2 * 0.18 / HABLE_MIDDLE_GREY_CD_M2)
    mapped = hable_curve(HABLE_EXPOSURE_BIAS * scene) / hable_curve(np.array(HABLE["W"]))
    return colour.bt1886_inverse_eotf(np.clip(mapped, 0.0, 1.0) * SDR_PEAK_CD_M2, lw=SDR_PEAK_CD_M2)


GRADINGS: tuple[Grading, ...] = (
    Grading("bt2446a", "ITU-R BT.2446-1 Method A (colour.bt2446a_hdr_to_sdr)",
            "SDR down-converted from HDR10 by broadcast/streaming converters (YouTube-style); the paper's data",
            render_bt2446a),
    Grading("bt2408", "ITU-R BT.2408 section 5: SDR white at HDR Reference White 203 cd/m^2, highlights rolled off",
            "SDR whose white should sit at 203 cd/m^2 with highlights expanded above it: phone-camera gain-map HDR, "
            "BT.2408 up-mapping",
            render_bt2408),
    Grading("bt2446c", "ITU-R BT.2446-1 Method C (crosstalk matrix, linear + log luminance curve)",
            "SDR from HDR production converters that follow Method C", render_bt2446c),
    Grading("reinhard", "Reinhard & Devlin 2005, OpenCV createTonemapReinhard",
            "photographic global tone mapping", render_reinhard),
    Grading("drago", "Drago et al. 2003, OpenCV createTonemapDrago",
            "adaptive logarithmic global tone mapping", render_drago),
    Grading("mantiuk", "Mantiuk et al. 2006, OpenCV createTonemapMantiuk",
            "local-contrast tone mapping (HDR photography)", render_mantiuk),
    Grading("hable", "J. Hable, filmic tone mapping (Uncharted 2), GDC 2010",
            "game and CG renders with a filmic curve", render_hable),
)
"""Every grading, in condition-index order (append only)."""

BY_NAME: Mapping[str, Grading] = MappingProxyType({g.name: g for g in GRADINGS})
NAMES: tuple[str, ...] = contract.CONVENTIONS
DEFAULT = contract.DEFAULT_CONVENTION
if tuple(g.name for g in GRADINGS) != NAMES:  # the served condition order is the contract's
    raise ImportError(f"gpgmnet.gradings lists {[g.name for g in GRADINGS]}, the contract {list(NAMES)}")


def index_of(name: str) -> int:
    """The condition index of a grading name.

    Raises:
        KeyError: an unknown name; the message lists the known ones.
    """
    try:
        return NAMES.index(name)
    except ValueError:
        raise KeyError(f"unknown convention {name!r}; allowed: {', '.join(NAMES)}") from None


def vary_signal(signal: NDArray[np.float64], variation: GradingVariation) -> NDArray[np.float64]:
    """Saturation (on Cb, Cr) and black lift on a BT.709 R'G'B' signal."""
    if variation.saturation != 1.0:
        ycbcr = colour.rgb_to_ycbcr(signal, colour.BT709)
        ycbcr[..., 1:] *= variation.saturation
        signal = colour.ycbcr_to_rgb(ycbcr, colour.BT709)
    if variation.black_lift:
        signal = variation.black_lift + (1.0 - variation.black_lift) * signal
    return np.clip(signal, 0.0, 1.0)


def grade(hdr_codes: NDArray[np.integer[Any]], name: str = DEFAULT,
          variation: GradingVariation = NO_VARIATION) -> NDArray[np.uint8]:
    """HDR10 master codes (10-bit narrow BT.2020 PQ Y'CbCr 4:4:4) -> 8-bit narrow BT.709 Y'CbCr 4:4:4 SDR codes."""
    rgb_pq = np.clip(colour.codes_to_rgb(np.asarray(hdr_codes, dtype=np.float64), colour.BT2020, 10), 0.0, 1.0)
    signal = BY_NAME[name].render(colour.pq_eotf(rgb_pq), variation)
    signal = vary_signal(signal, variation)
    codes = colour.rgb_to_codes(signal, colour.BT709, 8)
    return colour.quantize_narrow_range(codes, 8).astype(np.uint8)
