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
    """
    _, channels, height, width = network_input.shape
    planar = np.ascontiguousarray(network_input[0].transpose(1, 2, 0), dtype=np.float32)
    upsampled = cv2.resize(planar, (width * scale, height * scale), interpolation=cv2.INTER_CUBIC)
    planes = upsampled.reshape(height * scale, width * scale, channels).transpose(2, 0, 1)
    return np.ascontiguousarray(planes[np.newaxis])


def i420_from_network_output(
    network_output: NDArray[np.floating[Any]], target_peak: float = NETWORK_PEAK_NITS
) -> NDArray[np.uint16]:
    """The network's 1×3×H×W output (10-bit codes / 1023, skip included) as a 10-bit I420 frame.

    Chroma is averaged to 4:2:0 in floating point first, so each stored code is
    rounded once; every code is then clamped to the narrow (legal) range, which
    keeps the PQ signal inside what HDR10 displays accept. A ``target_peak``
    below the network's 1000 cd/m^2 applies :func:`display_peak_codes` first.
    """
    codes = network_output[0].transpose(1, 2, 0).astype(np.float64) * HDR_CODE_SCALE
    if target_peak < NETWORK_PEAK_NITS:
        codes = display_peak_codes(codes, target_peak)
    return colour.quantize_i420(codes, 10).astype(np.uint16, copy=False)


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
