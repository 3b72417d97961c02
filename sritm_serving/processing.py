"""The numpy halves of the served pipeline, shared by the Triton models and the tests' reference.

``network_input_from_i420`` is the pre-processor's work and
``i420_from_network_output`` the post-processor's; :mod:`sritm_serving.processing_torch`
is the torch twin the GPU paths run. Numpy and OpenCV only: the CPU server's
Python-backend models import this without torch.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from sritm_core import colour
from sritm_core.contract import CONVENTIONS, HDR_CODE_SCALE, NETWORK_PEAK_NITS, SDR_CODE_SCALE, Rendering


def network_input_from_i420(i420: NDArray[np.uint8], dtype: type = np.float32) -> NDArray[np.floating[Any]]:
    """An 8-bit I420 frame (3H/2 × W) as the network's N×3×H×W YUV 4:4:4 input, codes / 255."""
    yuv444 = colour.i420_to_yuv444(i420)
    return np.ascontiguousarray((yuv444 / SDR_CODE_SCALE).transpose(2, 0, 1)[np.newaxis], dtype=dtype)


def bicubic_upsample(network_input: NDArray[np.float32], scale: int) -> NDArray[np.float32]:
    """Eq. 1's Bic(I_L) on a 1×3×h×w array: the same result as ``gpgmnet.arch.bicubic_upsample``.

    OpenCV's INTER_CUBIC uses the same kernel (a = −0.75), half-pixel centres
    and clamped borders as ``torch.nn.functional.interpolate(mode="bicubic",
    align_corners=False)``; the two agree to ~4e-7 (``tests/test_repository.py``).
    Each plane is resized where it lies (planar, float32): no interleaving
    transposes, which cost as much as the resize itself at 4K.
    """
    _, channels, height, width = network_input.shape
    planes = np.ascontiguousarray(network_input[0], dtype=np.float32)
    upsampled = np.empty((1, channels, height * scale, width * scale), dtype=np.float32)
    for channel in range(channels):
        cv2.resize(planes[channel], (width * scale, height * scale), dst=upsampled[0, channel],
                   interpolation=cv2.INTER_CUBIC)
    return upsampled


SDR_PEAK_CD_M2 = 100.0
"""The SDR display the classical conversion assumes: BT.1886 with a 100 cd/m^2 white and a 0 black."""


def classical_hdr10_codes(sdr_yuv: NDArray[Any]) -> NDArray[np.float32]:
    """The classical SDR → HDR10 conversion per pixel: (…, 3) BT.709 8-bit codes / 255 → BT.2020 10-bit / 1023.

    BT.709 narrow-range decode to R'G'B', clipped to [0, 1] (what an SDR
    display shows); BT.1886 EOTF (100 cd/m^2 white, 0 black); BT.2408
    display-referred placement, SDR white at 203 cd/m^2; BT.709 → BT.2020
    (linear); PQ; 10-bit narrow-range Y'CbCr. The last axis holds Y'CbCr;
    unquantised. The baseline (:mod:`gpgmnet.baseline`) and the classical
    skip of a conditioned network (:func:`skip_input`) are this function.
    """
    codes = np.asarray(sdr_yuv, dtype=np.float64) * SDR_CODE_SCALE
    signal = np.clip(colour.codes_to_rgb(codes, colour.BT709, 8), 0.0, 1.0)
    light = colour.sdr_to_hdr_luminance(colour.bt1886_eotf(signal, lw=SDR_PEAK_CD_M2), sdr_peak=SDR_PEAK_CD_M2)
    pq = colour.pq_inverse_eotf(colour.bt709_to_bt2020(light))
    hdr = colour.rgb_to_codes(pq, colour.BT2020, 10) / HDR_CODE_SCALE
    return np.asarray(hdr, dtype=np.float32)


def skip_input(network_input: NDArray[np.floating[Any]], classical: bool) -> NDArray[np.float32]:
    """The LR image whose bicubic up-scaling is the skip: the input itself, or its classical conversion.

    A conditioned network may be trained with the classical skip for some
    conventions (``GPGMNet.classical_skip``, e.g. ``bt2408``, whose SDR the
    classical conversion inverts to first order): its residual then only
    adds what the classical conversion misses. ``network_input`` is
    N×3×h×w codes / 255.
    """
    if not classical:
        return np.asarray(network_input, dtype=np.float32)
    channels_last = np.moveaxis(np.asarray(network_input), 1, -1)
    return np.ascontiguousarray(np.moveaxis(classical_hdr10_codes(channels_last), -1, 1))


def postprocess(
    network_input: NDArray[np.float32], residual: NDArray[np.float32], scale: int,
    target_peak: float = NETWORK_PEAK_NITS,
) -> NDArray[np.uint16]:
    """The post-processor's whole step: Bic(I_L) + residual → 10-bit I420, as the CPU server runs it.

    The skip is summed into the freshly up-sampled planes (the residual, which
    may be a read-only view of Triton's buffer, is never copied) and
    :func:`i420_from_network_output` finishes the frame. The torch twin is
    :func:`sritm_serving.processing_torch.postprocess`.

    Raises:
        ValueError: the residual is not ×``scale`` of the input, or contains NaN.
    """
    output = bicubic_upsample(network_input, scale)
    if output.shape != residual.shape:
        raise ValueError(f"the residual {residual.shape} is not ×{scale} of the input {network_input.shape}")
    output += residual
    return i420_from_network_output(output, target_peak)


def i420_from_network_output(
    network_output: NDArray[np.floating[Any]], target_peak: float = NETWORK_PEAK_NITS
) -> NDArray[np.uint16]:
    """The network's 1×3×H×W output (10-bit codes / 1023, skip included) as a 10-bit I420 frame.

    Chroma is averaged to 4:2:0 first, so each stored code is rounded once;
    every code is then clamped to the narrow (legal) range, which keeps the PQ
    signal inside what HDR10 displays accept. The arithmetic is float32, plane
    by plane (the network's own precision; float64 moved about 3 in 100,000
    codes by one, at samples within float32 rounding of a half code, for twice
    the time). A ``target_peak`` below the network's 1000 cd/m^2 applies
    :func:`display_peak_codes` first, in float64.

    Raises:
        ValueError: the output contains NaN.
    """
    if target_peak < NETWORK_PEAK_NITS:
        codes = network_output[0].transpose(1, 2, 0).astype(np.float64) * HDR_CODE_SCALE
        return colour.quantize_i420(display_peak_codes(codes, target_peak), 10).astype(np.uint16, copy=False)
    planes = np.asarray(network_output[0], dtype=np.float32) * np.float32(HDR_CODE_SCALE)
    return colour.pack_i420(
        colour.quantize_plane(planes[0], 10, is_luma=True),
        colour.quantize_plane(colour.chroma_downsample_420(planes[1]), 10, is_luma=False),
        colour.quantize_plane(colour.chroma_downsample_420(planes[2]), 10, is_luma=False),
    )


def display_peak_codes(codes: NDArray[np.float64], target_peak: float) -> NDArray[np.float64]:
    """10-bit BT.2020 PQ Y'CbCr 4:4:4 codes of a 1000 cd/m^2 grade, re-mapped for a ``target_peak`` display.

    The ITU-R BT.2390 EETF (:func:`sritm_core.colour.bt2390_eetf`) per R'G'B'
    channel, from the grade's 1000 cd/m^2 to ``target_peak``; mid-tones stay,
    highlights roll off. At or above 1000 cd/m^2 the grade already fits the
    display and is left as it is (the EETF only ever compresses).
    """
    if target_peak >= NETWORK_PEAK_NITS:
        return codes
    rgb = np.clip(colour.codes_to_rgb(codes, colour.BT2020, 10), 0.0, 1.0)
    mapped = colour.bt2390_eetf(rgb, source_peak=NETWORK_PEAK_NITS, target_peak=target_peak)
    return colour.rgb_to_codes(mapped, colour.BT2020, 10)


def condition_one_hot(rendering: Rendering, dtype: type = np.float32) -> NDArray[Any]:
    """The network's ``CONDITION`` input for a rendering: 1 × K one-hot of its convention."""
    one_hot = np.zeros((1, len(CONVENTIONS)), dtype=dtype)
    one_hot[0, rendering.convention_index] = 1
    return one_hot
