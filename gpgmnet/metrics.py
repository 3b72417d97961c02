"""The paper's image-quality metrics, on HDR10 YUV normalised codes (numpy, OpenCV, scikit-image).

Every function takes two H x W x 3 arrays, the reference (ground truth) first,
holding 10-bit BT.2020 PQ Y'CbCr codes / 1023 (4:4:4), as the paper and Kim
et al. evaluate ("all results are calculated on YUV"); predictions are clipped
to [0, 1] by the caller first (``test_mat.m`` does ``min(max(pred, 0), 1)``).

* :func:`psnr` -- over all three channels, peak 1.
* :func:`ssim` -- ``skimage.metrics.structural_similarity`` with Wang et al.'s
  settings (11 x 11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03, population
  covariances, data range 1), the mean over Y, Cb, Cr.
* :func:`mpsnr` -- Deep SR-ITM's ``utils/mPSNR_HDR.m`` (after Banterle's HDR
  Toolbox), exposures -3..3 on the normalised PQ YUV: for each exposure 2^e
  both images become ``clamp(round(1023 * 2^e * x), 0, 1023)``; the exposure
  counts only when the reference's mean / 1023 lies in (0.1, 0.9); the MSEs of
  the counted exposures are averaged and mPSNR = 20 log10(1023 / sqrt(MSE)).
  Identical images give +inf (as MATLAB's division by zero does); where no
  exposure counts, the script returns the sentinel -1, here NaN so that
  averages skip it. Rounding is MATLAB's (half away from zero).
* :func:`ms_ssim` -- Deep SR-ITM's ``utils/msssim.m`` (Wang et al. 2003): five
  scales with weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), the same SSIM
  terms on the "valid" part of an 11 x 11 sigma-1.5 Gaussian filtering, 2 x 2
  mean down-sampling with symmetric border between scales, the product
  ``prod(cs_1..4 ^ w_1..4) * ssim_5 ^ w_5``; per channel, then the mean over
  Y, Cb, Cr (the script takes one plane). Our own implementation, checked
  against pytorch-msssim and, at a single scale, scikit-image's SSIM
  (``tests/test_evaluate.py``).
  Needs a side of at least 176 pixels (11 x 2^4); smaller gives NaN (the
  script returns -inf).
* :func:`lab_errors` -- Table IV's mean L2 error in CIE L*a*b* and in L*
  only: HDR10 codes -> R'G'B' (BT.2020, clipped to [0, 1]) -> PQ EOTF
  (cd/m^2) -> / 203 cd/m^2 (BT.2408 HDR Reference White is L* = 100;
  highlights go above 100) -> XYZ (BT.2020 primaries, D65) ->
  ``skimage.color.xyz2lab`` (D65, 2 degrees). The per-pixel Euclidean distance
  (Delta E*ab 1976) and |Delta L*| are averaged over pixels.
* :func:`delta_e_itp` -- the mean Delta E_ITP of Recommendation ITU-R
  BT.2124-0 (01/2019) over pixels, in its ICtCp colour space of ITU-R
  BT.2100-2 (07/2018) Table 6 (PQ). Unlike the other functions it takes the
  10-bit codes themselves (0..1023, not / 1023); :func:`all_metrics` scales.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray
from skimage.color import xyz2lab, xyz_tristimulus_values
from skimage.metrics import structural_similarity

from sritm_core import colour

__all__ = [
    "psnr", "ssim", "mpsnr", "ms_ssim", "hdr10_to_lab", "lab_errors", "hdr10_codes_to_ictcp", "delta_e_itp",
    "all_metrics", "METRIC_NAMES",
]

SSIM_SETTINGS: dict[str, Any] = {
    "gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False, "K1": 0.01, "K2": 0.03,
}
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MPSNR_EXPOSURES = (-3, 3)
LAB_WHITE_CD_M2 = colour.SDR_REFERENCE_WHITE_CD_M2
CODE_SCALE = 1023.0

METRIC_NAMES = ("psnr", "ssim", "mpsnr", "ms_ssim", "lab_l2", "l_l2", "delta_e_itp")
"""The keys of :func:`all_metrics`, in table order."""

# The colour module has no public RGB -> XYZ matrix; its private helper is the one implementation.
_BT2020_TO_XYZ = colour._rgb_to_xyz_matrix(colour._BT2020_PRIMARIES_XY, colour._D65_XY)
_SKIMAGE_WHITE = np.asarray(xyz_tristimulus_values(illuminant="D65", observer="2"), dtype=np.float64)
# skimage's D65 (0.95047, 1, 1.08883) differs from D65 at (0.3127, 0.3290) in the 4th decimal;
# rescaling XYZ by the ratio maps our white exactly to skimage's, so neutrals get a* = b* = 0.
_WHITE_FIX = _SKIMAGE_WHITE / (_BT2020_TO_XYZ @ np.ones(3))


def _pair(ref: NDArray[Any], dist: NDArray[Any]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    a = np.asarray(ref, dtype=np.float64)
    b = np.asarray(dist, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"need two H x W x 3 images of one shape, got {a.shape} and {b.shape}")
    return a, b


def psnr(ref: NDArray[Any], dist: NDArray[Any], peak: float = 1.0) -> float:
    """PSNR in dB over all channels; +inf for identical images."""
    a, b = _pair(ref, dist)
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(peak * peak / mse)


def ssim(ref: NDArray[Any], dist: NDArray[Any], data_range: float = 1.0) -> float:
    """Mean SSIM over the three channels (scikit-image, Wang et al.'s settings); NaN below 11 x 11."""
    a, b = _pair(ref, dist)
    if min(a.shape[:2]) < 11:
        return math.nan
    return float(structural_similarity(a, b, channel_axis=-1, data_range=data_range, **SSIM_SETTINGS))


def _matlab_round(x: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def mpsnr(ref: NDArray[Any], dist: NDArray[Any], e_min: int = MPSNR_EXPOSURES[0],
          e_max: int = MPSNR_EXPOSURES[1]) -> float:
    """Multi-exposure PSNR exactly as Deep SR-ITM's ``mPSNR_HDR.m`` (see the module notes)."""
    a, b = _pair(ref, dist)
    if (a < 0).any() or (b < 0).any():
        raise ValueError("mPSNR needs non-negative images (the script's checkNegative)")
    mse_sum, counted = 0.0, 0
    for exposure in range(e_min, e_max + 1):
        gain = 2.0**exposure
        qa = np.clip(_matlab_round(CODE_SCALE * a * gain), 0.0, CODE_SCALE)
        if 0.1 < float(np.mean(qa / CODE_SCALE)) < 0.9:
            qb = np.clip(_matlab_round(CODE_SCALE * b * gain), 0.0, CODE_SCALE)
            mse_sum += float(np.mean((qa - qb) ** 2))
            counted += 1
    if counted == 0:
        return math.nan
    mse = mse_sum / counted
    return math.inf if mse == 0.0 else 20.0 * math.log10(CODE_SCALE / math.sqrt(mse))


def _gaussian_window() -> NDArray[np.float64]:
    g = cv2.getGaussianKernel(11, 1.5, cv2.CV_64F)  # fspecial('gaussian', 11, 1.5) is its outer product
    return g @ g.T


_WINDOW = _gaussian_window()


def _valid_filter(x: NDArray[np.float64]) -> NDArray[np.float64]:
    # filter2(win, x, 'valid'): the window is symmetric, so correlation = convolution.
    filtered = cv2.filter2D(x, cv2.CV_64F, _WINDOW, borderType=cv2.BORDER_REFLECT)
    return np.asarray(filtered[5:-5, 5:-5], dtype=np.float64)


def ssim_terms(a: NDArray[np.float64], b: NDArray[np.float64], max_val: float = 1.0) -> tuple[float, float]:
    """(mean SSIM, mean contrast-structure term) of two planes, as ``ssim_index_new.m`` computes them."""
    c1 = (0.01 * max_val) ** 2
    c2 = (0.03 * max_val) ** 2
    mu_a, mu_b = _valid_filter(a), _valid_filter(b)
    var_a = _valid_filter(a * a) - mu_a**2
    var_b = _valid_filter(b * b) - mu_b**2
    cov = _valid_filter(a * b) - mu_a * mu_b
    cs = (2.0 * cov + c2) / (var_a + var_b + c2)
    ssim_map = (2.0 * mu_a * mu_b + c1) / (mu_a**2 + mu_b**2 + c1) * cs
    return float(ssim_map.mean()), float(cs.mean())


def _halve(x: NDArray[np.float64]) -> NDArray[np.float64]:
    # imfilter(x, ones(2)/4, 'symmetric', 'same') then x(1:2:end, 1:2:end): the 2x2 mean
    # anchored at even pixels, the last row/column repeated for odd sizes.
    p = np.pad(x, ((0, 1), (0, 1)), mode="symmetric")
    s = (p[:-1, :-1] + p[1:, :-1] + p[:-1, 1:] + p[1:, 1:]) * 0.25
    return s[0::2, 0::2]


def ms_ssim_plane(a: NDArray[Any], b: NDArray[Any], max_val: float = 1.0) -> float:
    """MS-SSIM of two planes as ``msssim.m`` (product form); NaN when a side is below 176."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    levels = len(MS_SSIM_WEIGHTS)
    if min(x.shape) / 2 ** (levels - 1) < 11:
        return math.nan
    value = 1.0
    for level, weight in enumerate(MS_SSIM_WEIGHTS):
        mean_ssim, mean_cs = ssim_terms(x, y, max_val)
        if level < levels - 1:
            value *= np.sign(mean_cs) * abs(mean_cs) ** weight  # MATLAB's x.^w is complex for x < 0; keep the sign
            x, y = _halve(x), _halve(y)
        else:
            value *= np.sign(mean_ssim) * abs(mean_ssim) ** weight
    return float(value)


def ms_ssim(ref: NDArray[Any], dist: NDArray[Any], max_val: float = 1.0) -> float:
    """Mean over Y, Cb, Cr of :func:`ms_ssim_plane`."""
    a, b = _pair(ref, dist)
    return float(np.mean([ms_ssim_plane(a[..., c], b[..., c], max_val) for c in range(3)]))


def hdr10_to_lab(yuv: NDArray[Any]) -> NDArray[np.float64]:
    """HDR10 normalised YUV codes -> CIE L*a*b* with 203 cd/m^2 at L* = 100 (see the module notes)."""
    codes = np.asarray(yuv, dtype=np.float64) * CODE_SCALE
    rgb_pq = np.clip(colour.codes_to_rgb(codes, colour.BT2020, 10), 0.0, 1.0)
    relative = colour.pq_eotf(rgb_pq) / LAB_WHITE_CD_M2
    xyz = (relative @ _BT2020_TO_XYZ.T) * _WHITE_FIX
    return np.asarray(xyz2lab(xyz, illuminant="D65", observer="2"), dtype=np.float64)


def lab_errors(ref: NDArray[Any], dist: NDArray[Any]) -> tuple[float, float]:
    """(mean Delta E*ab, mean |Delta L*|) between two HDR10 normalised YUV images."""
    a, b = _pair(ref, dist)
    diff = hdr10_to_lab(a) - hdr10_to_lab(b)
    return float(np.mean(np.sqrt(np.sum(diff**2, axis=-1)))), float(np.mean(np.abs(diff[..., 0])))


# ITU-R BT.2100-2 Table 6 (ICtCp, PQ): linear BT.2020 RGB -> LMS, and PQ-encoded L'M'S' -> ICtCp; both / 4096.
ICTCP_RGB_TO_LMS = np.array([[1688, 2146, 262], [683, 2951, 462], [99, 309, 3688]], dtype=np.float64) / 4096.0
ICTCP_LMS_P_TO_ICTCP = (
    np.array([[2048, 2048, 0], [6610, -13613, 7003], [17933, -17390, -543]], dtype=np.float64) / 4096.0
)
ICTCP_RGB_TO_LMS.setflags(write=False)
ICTCP_LMS_P_TO_ICTCP.setflags(write=False)
DELTA_E_ITP_SCALE = 720.0
"""ITU-R BT.2124-0: 720 scales the ITP distance so that 1 is about one just-noticeable difference."""


def hdr10_codes_to_ictcp(codes: NDArray[Any]) -> NDArray[np.float64]:
    """10-bit narrow-range BT.2020 PQ Y'CbCr codes (..., 3) -> ICtCp (ITU-R BT.2100-2, PQ), float64.

    Codes -> R'G'B' (:func:`sritm_core.colour.codes_to_rgb`, BT.2020, 10 bits),
    clipped to [0, 1] -> PQ EOTF (:func:`sritm_core.colour.pq_eotf`, absolute
    cd/m^2) -> LMS (BT.2100-2 Table 6: (1688, 2146, 262; 683, 2951, 462; 99,
    309, 3688) / 4096) -> PQ inverse EOTF of the absolute LMS
    (:func:`sritm_core.colour.pq_inverse_eotf`) -> I = (L' + M') / 2,
    Ct = (6610 L' - 13613 M' + 7003 S') / 4096,
    Cp = (17933 L' - 17390 M' - 543 S') / 4096.
    """
    c = np.asarray(codes, dtype=np.float64)
    if c.ndim == 0 or c.shape[-1] != 3:
        raise ValueError(f"need a trailing channel axis of 3 codes, got shape {c.shape}")
    rgb_pq = np.clip(colour.codes_to_rgb(c, colour.BT2020, 10), 0.0, 1.0)
    lms = colour.pq_eotf(rgb_pq) @ ICTCP_RGB_TO_LMS.T
    return np.asarray(colour.pq_inverse_eotf(lms) @ ICTCP_LMS_P_TO_ICTCP.T, dtype=np.float64)


def delta_e_itp(hdr_codes_a: NDArray[Any], hdr_codes_b: NDArray[Any]) -> float:
    """Mean Delta E_ITP (Recommendation ITU-R BT.2124-0) between two HDR10 images given as 10-bit codes.

    Each argument is an H x W x 3 array (float or integer) of 10-bit
    narrow-range BT.2020 PQ Y'CbCr codes, 0..1023 -- the metrics' usual
    normalised codes times 1023 (:data:`CODE_SCALE`). Both become ICtCp by
    :func:`hdr10_codes_to_ictcp` (ITU-R BT.2100-2 Table 6, PQ, absolute
    luminance: the display is assumed to show the PQ signal as coded, up to
    10000 cd/m^2); BT.2124-0 then takes ITP with T = 0.5 Ct and I, P as they
    are, and Delta E_ITP = 720 sqrt(Delta I^2 + Delta T^2 + Delta P^2) per
    pixel, which is averaged here over the pixels. 1 is roughly one
    just-noticeable difference; identical images give 0.
    """
    a, b = _pair(hdr_codes_a, hdr_codes_b)
    diff = hdr10_codes_to_ictcp(a) - hdr10_codes_to_ictcp(b)
    diff[..., 1] *= 0.5
    return float(np.mean(DELTA_E_ITP_SCALE * np.sqrt(np.sum(diff**2, axis=-1))))


def all_metrics(ref: NDArray[Any], dist: NDArray[Any]) -> dict[str, float]:
    """Every metric of :data:`METRIC_NAMES` for one pair of normalised-code images (codes / 1023)."""
    ref, dist = _pair(ref, dist)
    lab, l_only = lab_errors(ref, dist)
    return {
        "psnr": psnr(ref, dist),
        "ssim": ssim(ref, dist),
        "mpsnr": mpsnr(ref, dist),
        "ms_ssim": ms_ssim(ref, dist),
        "lab_l2": lab,
        "l_l2": l_only,
        "delta_e_itp": delta_e_itp(ref * CODE_SCALE, dist * CODE_SCALE),
    }
