"""Tests for gpgmnet.gradings: every SDR grading of an HDR10 master, checked from outside.

Masters are written and SDR renditions read back with colour-science 0.4.6
(PQ, BT.1886, Y'CbCr, BT.709/BT.2020 colourspaces), never with
sritm_core.colour, so a shared mistake cannot cancel out. Expected values come
from the published sources: ITU-R BT.2408 (HDR Reference White 203 cd/m^2),
Report ITU-R BT.2446-1 Method C's constants, Hable's GDC 2010 formula.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from gpgmnet import gradings
from gpgmnet.gradings import GradingVariation
from sritm_core import contract

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # colour-science warns about optional dependencies
    import colour

K_BT2020 = colour.WEIGHTS_YCBCR["ITU-R BT.2020"]
K_BT709 = colour.WEIGHTS_YCBCR["ITU-R BT.709"]
BT709 = colour.RGB_COLOURSPACES["ITU-R BT.709"]
BT2020 = colour.RGB_COLOURSPACES["ITU-R BT.2020"]
OPENCV_OPERATORS = ("reinhard", "drago", "mantiuk")
GLOBAL_CURVES = ("bt2446a", "bt2408", "bt2446c", "hable")  # light in, light out: exposure must show


# --------------------------------------------------------------------------
# independent encoding and decoding (colour-science)


def master(light_bt2020_cd_m2: np.ndarray) -> np.ndarray:
    """Linear BT.2020 light (cd/m^2) -> HDR10 codes: PQ, 10-bit narrow-range BT.2020 Y'CbCr 4:4:4."""
    signal = colour.models.eotf_inverse_ST2084(np.asarray(light_bt2020_cd_m2, dtype=np.float64))
    codes = colour.RGB_to_YCbCr(signal, K=K_BT2020, out_bits=10, out_legal=True, out_int=True)
    return np.asarray(codes).astype(np.uint16)


def master_from_bt709(light_bt709_cd_m2: np.ndarray) -> np.ndarray:
    return master(colour.RGB_to_RGB(np.asarray(light_bt709_cd_m2, dtype=np.float64), BT709, BT2020))


def master_light(codes: np.ndarray) -> np.ndarray:
    """HDR10 codes -> linear BT.2020 light in cd/m^2."""
    signal = colour.YCbCr_to_RGB(codes.astype(np.int64), K=K_BT2020, in_bits=10, in_legal=True, in_int=True)
    return np.asarray(colour.models.eotf_ST2084(np.clip(signal, 0.0, 1.0)))


def sdr_signal(codes: np.ndarray) -> np.ndarray:
    """8-bit narrow-range BT.709 Y'CbCr codes -> R'G'B' signal (unclipped)."""
    return np.asarray(colour.YCbCr_to_RGB(codes.astype(np.int64), K=K_BT709, in_bits=8, in_legal=True, in_int=True))


def sdr_light(codes: np.ndarray) -> np.ndarray:
    """8-bit SDR codes -> BT.709 display light on a 100 cd/m^2 BT.1886 screen (black 0)."""
    return np.asarray(colour.models.eotf_BT1886(np.clip(sdr_signal(codes), 0.0, 1.0), L_B=0, L_W=100))


def xy(light: np.ndarray, space: colour.RGB_Colourspace) -> np.ndarray:
    return np.asarray(colour.XYZ_to_xy(colour.RGB_to_XYZ(light, space)))


def grey(cd_m2: float, size: int = 8) -> np.ndarray:
    return np.full((size, size, 3), float(cd_m2))


def colourful_master() -> np.ndarray:
    """32 x 32: three in-gamut colour patches, a saturated red, black, peak white, mid grey (BT.709 light, cd/m^2)."""
    light = np.full((32, 32, 3), 30.0)
    light[:16, :16] = [60.0, 30.0, 15.0]  # orange
    light[:16, 16:] = [15.0, 40.0, 25.0]  # green
    light[16:, :16] = [20.0, 20.0, 60.0]  # blue
    light[16:24, 16:] = [500.0, 0.5, 0.5]  # saturated red
    light[24:28, 16:] = 0.0  # black
    light[28:, 16:] = 1000.0  # the master's peak white
    return master_from_bt709(light)


# --------------------------------------------------------------------------
# the registry


def test_registry_is_the_served_condition_order() -> None:
    assert gradings.NAMES == contract.CONVENTIONS
    assert tuple(g.name for g in gradings.GRADINGS) == contract.CONVENTIONS
    assert gradings.DEFAULT == "bt2446a" == gradings.NAMES[0]
    for index, name in enumerate(contract.CONVENTIONS):
        assert gradings.index_of(name) == index
        assert gradings.BY_NAME[name].source and gradings.BY_NAME[name].expects


def test_unknown_grading_is_a_key_error_naming_the_allowed_ones() -> None:
    with pytest.raises(KeyError) as caught:
        gradings.index_of("nope")
    message = str(caught.value)
    assert "'nope'" in message
    assert all(name in message for name in contract.CONVENTIONS)
    with pytest.raises(KeyError):
        gradings.grade(master(grey(50.0)), "nope")


@pytest.mark.parametrize("name", contract.CONVENTIONS)
def test_every_grading_gives_legal_8_bit_codes_of_the_masters_size(name: str) -> None:
    codes = colourful_master()[:, :30]  # not square, not a power of two
    sdr = gradings.grade(codes, name)
    assert sdr.dtype == np.uint8 and sdr.shape == codes.shape
    assert 16 <= sdr[..., 0].min() and sdr[..., 0].max() <= 235
    assert 16 <= sdr[..., 1:].min() and sdr[..., 1:].max() <= 240


# --------------------------------------------------------------------------
# BT.2408: HDR Reference White 203 cd/m^2 -> SDR white


@pytest.mark.parametrize("cd_m2", [10.0, 50.0, 100.0, 140.0])
def test_bt2408_places_midtones_linearly_against_reference_white(cd_m2: float) -> None:
    assert cd_m2 / 203.0 < 0.7  # below the knee: display light scales by 100 / 203
    sdr = gradings.grade(master(grey(cd_m2)), "bt2408")
    expected_signal = float(colour.models.eotf_inverse_BT1886(cd_m2 / 203.0, L_B=0, L_W=1))
    signal = sdr_signal(sdr)
    assert np.abs(signal - expected_signal).max() * 219.0 <= 1.0  # one 8-bit code
    assert np.all(np.abs(sdr[..., 1:].astype(int) - 128) <= 1)  # a neutral stays neutral
    light = float(sdr_light(sdr)[0, 0, 1])
    assert light == pytest.approx(cd_m2 * 100.0 / 203.0, rel=0.03)


def test_bt2408_rolls_highlights_off_near_but_below_sdr_white() -> None:
    luma = {L: int(gradings.grade(master(grey(L, 2)), "bt2408")[0, 0, 0]) for L in (150.0, 203.0, 300.0, 2000.0)}
    light_300 = float(sdr_light(gradings.grade(master(grey(300.0, 2)), "bt2408"))[0, 0, 1])
    assert 90.0 < light_300 < 100.0 and luma[300.0] < 235  # 1.48 x reference white: rolled off, not clipped
    assert luma[2000.0] >= 234  # a highlight ten times reference white: at SDR white
    assert luma[150.0] < luma[203.0] < luma[300.0] < 235  # the roll-off keeps highlight detail apart
    ramp = np.geomspace(1.0, 4000.0, 96)
    codes = gradings.grade(master(np.broadcast_to(ramp[None, :, None], (2, 96, 3)).copy()), "bt2408")[0, :, 0]
    assert np.all(np.diff(codes.astype(int)) >= 0)


def test_bt2408_rolloff_is_identity_below_the_knee_smooth_at_it_and_bounded() -> None:
    knee = gradings.BT2408_KNEE
    below = np.linspace(0.0, knee, 50)
    np.testing.assert_allclose(gradings.bt2408_rolloff(below), below, rtol=0, atol=1e-15)
    h = 1e-6
    before, at, after = gradings.bt2408_rolloff(np.array([knee - h, knee, knee + h]))
    left, right = (at - before) / h, (after - at) / h
    assert left == pytest.approx(1.0, abs=1e-5) and right == pytest.approx(1.0, abs=1e-5)  # C1 at the knee
    above = gradings.bt2408_rolloff(np.array([0.8, 1.0, 2.0, 5.0, 30.0]))
    assert np.all(np.diff(above) > 0) and np.all(above[:-1] < 1.0)
    assert above[-1] == pytest.approx(1.0, abs=1e-12)  # -> SDR white far above reference white


# --------------------------------------------------------------------------
# BT.2446-1 Method C

REPORT_K1, REPORT_K2, REPORT_K3, REPORT_K4 = 0.83802, 15.09968, 0.74204, 78.99439
REPORT_SDR_IP = 100.0 * 0.8**2.4  # 80 % SDR signal on BT.1886: the Report's "58.5" (58.535 rounded)


def report_curve(y: np.ndarray) -> np.ndarray:
    """Report ITU-R BT.2446-1, Method C, luminance mapping, with the Report's published k1..k4."""
    y_ip = REPORT_SDR_IP / REPORT_K1
    return np.where(y < y_ip, REPORT_K1 * y, REPORT_K2 * np.log(np.maximum(y / y_ip - REPORT_K3, 1e-12)) + REPORT_K4)


def test_bt2446c_curve_matches_the_reports_published_constants() -> None:
    y = np.concatenate([np.linspace(0.0, 69.0, 40), np.geomspace(70.0, 4000.0, 80)])
    np.testing.assert_allclose(gradings.bt2446c_curve(y), report_curve(y), rtol=0, atol=2e-4)
    assert float(gradings.bt2446c_curve(np.array(1000.0))) == pytest.approx(118.4, abs=0.1)  # 1000 -> ~118 %


def test_bt2446c_curve_is_continuous_in_value_and_slope_at_the_inflection() -> None:
    y_ip = REPORT_SDR_IP / REPORT_K1
    h = 1e-4
    below, at, above = gradings.bt2446c_curve(np.array([y_ip - h, y_ip, y_ip + h]))
    assert abs(above - below) < 3 * REPORT_K1 * h  # no jump
    slope_left = (at - below) / h
    slope_right = (above - at) / h
    assert slope_left == pytest.approx(REPORT_K1, rel=1e-6)
    assert slope_right == pytest.approx(REPORT_K1, rel=1e-3)
    ramp = np.linspace(1.0, 4000.0, 4000)
    assert np.all(np.diff(gradings.bt2446c_curve(ramp)) > 0)


@pytest.mark.parametrize("name", ["bt2446c", "bt2408"])
def test_luminance_gradings_keep_the_chromaticity_of_in_gamut_colours(name: str) -> None:
    codes = colourful_master()
    sdr = gradings.grade(codes, name)
    for rows, cols in ((slice(2, 14), slice(2, 14)), (slice(2, 14), slice(18, 30)), (slice(18, 22), slice(2, 14))):
        before = xy(master_light(codes[rows, cols]).mean(axis=(0, 1)), BT2020)
        after = xy(sdr_light(sdr[rows, cols]).mean(axis=(0, 1)), BT709)
        assert np.abs(after - before).max() < 0.004, (rows, cols, before, after)


# --------------------------------------------------------------------------
# Hable (Uncharted 2, GDC 2010)

A, B, C, D, E, F, W = 0.15, 0.50, 0.10, 0.20, 0.02, 0.30, 11.2  # Hable's published constants


def hable(x: float) -> float:
    """Hable's filmic curve as published: ((x(Ax+CB)+DE)/(x(Ax+B)+DF)) - E/F."""
    return ((x * (A * x + C * B) + D * E) / (x * (A * x + B) + D * F)) - E / F


def test_hable_curve_is_the_published_formula() -> None:
    # By hand from the constants: F(0) = DE/DF - E/F = 0;
    # F(1) = (0.15 + 0.05 + 0.004) / (0.15 + 0.5 + 0.06) - 1/15;
    # F(11.2) = 11.2 * 1.73 + 0.004 = 19.38 over 11.2 * 2.18 + 0.06 = 24.476, less 1/15.
    expected = [0.0, 0.204 / 0.71 - 1.0 / 15.0, 19.38 / 24.476 - 1.0 / 15.0]
    np.testing.assert_allclose(gradings.hable_curve(np.array([0.0, 1.0, 11.2])), expected, rtol=1e-12, atol=1e-15)
    assert expected[2] == pytest.approx(0.72513, abs=1e-5)


def test_hable_rendition_puts_26_nit_grey_at_scene_grey_and_whites_at_w() -> None:
    # Scene value 0.18 (26 cd/m^2 grey), exposure bias 2, white scale 1 / F(W).
    expected = 100.0 * hable(2.0 * 0.18) / hable(W)
    sdr = gradings.grade(master(grey(26.0)), "hable")
    expected_signal = float(colour.models.eotf_inverse_BT1886(expected, L_B=0, L_W=100))
    assert np.abs(sdr_signal(sdr)[..., 1] - expected_signal).max() * 219.0 <= 1.0
    white = W / 2.0 / 0.18 * 26.0  # master light whose biased scene value is W (809 cd/m^2)
    assert gradings.grade(master(grey(white * 1.02, 2)), "hable")[0, 0, 0] == 235
    assert gradings.grade(master(grey(white * 0.7, 2)), "hable")[0, 0, 0] < 235


# --------------------------------------------------------------------------
# every grading


@pytest.mark.parametrize("name", contract.CONVENTIONS)
def test_every_grading_is_monotonic_on_a_grey_ramp(name: str) -> None:
    ramp = np.geomspace(0.01, 4000.0, 64)
    sdr = gradings.grade(master(np.broadcast_to(ramp[None, :, None], (8, 64, 3)).copy()), name)
    luma = sdr[4, :, 0].astype(int)
    assert np.all(np.diff(luma) >= -1), luma  # one code of noise allowed (Mantiuk is local)
    assert luma[-1] - luma[0] > 100, luma  # and the ramp really rises
    assert np.all(np.abs(sdr[..., 1:].astype(int) - 128) <= 1)  # greys stay grey


@pytest.mark.parametrize("name", contract.CONVENTIONS)
def test_black_and_flat_masters_give_finite_neutral_sdr(name: str) -> None:
    black = gradings.grade(master(grey(0.0)), name)
    assert np.all(np.abs(black.astype(int) - [16, 128, 128]) <= 1)  # the OpenCV operators floor light at 1e-6 of white
    flat = gradings.grade(master(grey(50.0)), name)
    assert np.all(np.abs(flat[..., 1:].astype(int) - 128) <= 1)
    assert np.ptp(flat[..., 0]) == 0  # a flat master stays flat


@pytest.mark.parametrize("name", OPENCV_OPERATORS)
def test_opencv_operators_keep_saturated_red_red_and_are_deterministic(name: str) -> None:
    codes = colourful_master()
    variation = GradingVariation(draw=0.3)
    sdr = gradings.grade(codes, name, variation)
    red = sdr_signal(sdr[17:23, 17:31]).mean(axis=(0, 1))
    assert red[0] > red[1] + 0.3 and red[0] > red[2] + 0.3, red
    assert np.array_equal(sdr, gradings.grade(codes, name, variation))
    assert not np.array_equal(sdr, gradings.grade(codes, name, GradingVariation(draw=0.9)))  # the draw matters
    assert np.isfinite(sdr_signal(sdr)).all()


@pytest.mark.parametrize("name", contract.CONVENTIONS)
def test_saturation_variation_scales_chroma(name: str) -> None:
    codes = colourful_master()

    def chroma(variation: GradingVariation) -> float:
        return float(np.abs(gradings.grade(codes, name, variation)[..., 1:].astype(float) - 128.0).mean())

    plain = chroma(gradings.NO_VARIATION)
    assert chroma(GradingVariation(saturation=1.2)) > plain * 1.04
    assert chroma(GradingVariation(saturation=0.8)) < plain * 0.96


@pytest.mark.parametrize("name", contract.CONVENTIONS)
def test_black_lift_is_b_plus_one_minus_b_times_the_signal(name: str) -> None:
    codes = colourful_master()
    lift = 0.03
    plain = gradings.grade(codes, name)
    lifted = gradings.grade(codes, name, GradingVariation(black_lift=lift))
    # b + (1 - b) V on every R'G'B' signal, up to the two 8-bit quantisations.
    expected = lift + (1.0 - lift) * np.clip(sdr_signal(plain), 0.0, 1.0)
    assert np.abs(np.clip(sdr_signal(lifted), 0.0, 1.0) - expected).max() * 219.0 <= 2.0
    assert int(lifted[..., 0].min()) > int(plain[..., 0].min())
    if name != "mantiuk":  # Mantiuk's local contrast leaves no pixel at black here
        assert plain[..., 0].min() == 16 and abs(int(lifted[..., 0].min()) - round(16 + 219 * lift)) <= 1


@pytest.mark.parametrize("name", GLOBAL_CURVES)
def test_exposure_variation_brightens_the_light_before_the_curve(name: str) -> None:
    codes = master(grey(20.0))
    plain = int(gradings.grade(codes, name)[0, 0, 0])
    brighter = int(gradings.grade(codes, name, GradingVariation(exposure=2**0.5))[0, 0, 0])
    darker = int(gradings.grade(codes, name, GradingVariation(exposure=2**-0.5))[0, 0, 0])
    assert darker + 3 < plain < brighter - 3


def test_random_variations_stay_in_the_documented_ranges() -> None:
    rng = np.random.default_rng(5)
    draws = [gradings.random_variation(rng) for _ in range(400)]
    exposure_stops = np.log2([v.exposure for v in draws])
    saturation = np.array([v.saturation for v in draws])
    lift = np.array([v.black_lift for v in draws])
    draw = np.array([v.draw for v in draws])
    for values, low, high in ((exposure_stops, -0.5, 0.5), (saturation, 0.8, 1.2), (lift, 0.0, 0.03), (draw, 0.0, 1.0)):
        assert values.min() >= low and values.max() <= high
        span = high - low
        assert values.min() < low + 0.05 * span and values.max() > high - 0.05 * span  # the whole range is used
    assert gradings.random_variation(np.random.default_rng(5)) == draws[0]  # a function of the generator only
    assert gradings.NO_VARIATION == GradingVariation(1.0, 1.0, 0.0, 0.5)


def test_vary_signal_is_identity_without_variation_and_clips() -> None:
    signal = np.random.default_rng(1).uniform(0.0, 1.0, (4, 5, 3))
    np.testing.assert_array_equal(gradings.vary_signal(signal.copy(), gradings.NO_VARIATION), signal)
    lifted = gradings.vary_signal(np.zeros((1, 1, 3)), GradingVariation(black_lift=0.02))
    np.testing.assert_allclose(lifted, 0.02)
    # Saturation acts on BT.709 Cb/Cr: luma Y' = 0.2126 R' + 0.7152 G' + 0.0722 B' is kept.
    saturated = gradings.vary_signal(signal, GradingVariation(saturation=1.1))
    weights = np.array([0.2126, 0.7152, 0.0722])
    inside = np.all((saturated > 0.0) & (saturated < 1.0), axis=-1)
    np.testing.assert_allclose((saturated @ weights)[inside], (signal @ weights)[inside], atol=1e-12)
    assert saturated.min() >= 0.0 and saturated.max() <= 1.0
    assert math.isclose(float(np.std(saturated - (saturated @ weights)[..., None])),
                        1.1 * float(np.std(signal - (signal @ weights)[..., None])), rel_tol=0.1)
