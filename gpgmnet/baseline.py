"""The classical baseline GPGMNet is compared with: bicubic up-scaling plus BT.2408 SDR-in-HDR placement.

Steps, all from :mod:`sritm_core.colour` and :mod:`sritm_serving.processing` (numpy/OpenCV, no torch):

1. bicubic x s of the LR 8-bit Y'CbCr codes (4:4:4, as the network receives
   them) -- the same interpolation as the network's Bic skip
   (:func:`sritm_serving.processing.bicubic_upsample`, a = -0.75, half-pixel centres);
2. BT.709 narrow-range decode to R'G'B', clipped to [0, 1] (what an SDR
   display shows);
3. BT.1886 EOTF (100 cd/m^2 white, 0 black);
4. BT.2408 display-referred placement: SDR white at 203 cd/m^2
   (:func:`sritm_core.colour.sdr_to_hdr_luminance`, x2.03);
5. BT.709 -> BT.2020 (linear), PQ, 10-bit narrow-range BT.2020 Y'CbCr.

The output is the same array convention as GPGMNet's: 1 x 3 x sH x sW,
10-bit codes / 1023, unquantised (the metrics see both unrounded).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from sritm_core.contract import check_scale
from sritm_serving import processing


def sdr_codes_to_hdr10(sdr_yuv: NDArray[Any]) -> NDArray[np.float32]:
    """H x W x 3 BT.709 8-bit codes / 255 -> H x W x 3 HDR10 10-bit codes / 1023 (steps 2-5)."""
    return processing.classical_hdr10_codes(sdr_yuv)


def bicubic_baseline(network_input: NDArray[Any], scale: int) -> NDArray[np.float32]:
    """GPGMNet's input (1 x 3 x h x w, codes / 255) -> the baseline HDR10 output (1 x 3 x sh x sw, codes / 1023)."""
    check_scale(scale)
    x = np.asarray(network_input, dtype=np.float32)
    if x.ndim != 4 or x.shape[:2] != (1, 3):
        raise ValueError(f"expected a 1 x 3 x h x w array, got shape {x.shape}")
    upscaled = processing.bicubic_upsample(x, scale)[0].transpose(1, 2, 0)
    return np.ascontiguousarray(sdr_codes_to_hdr10(upscaled).transpose(2, 0, 1)[None])
