"""The served pipeline's pre- and post-processing on torch tensors, for frames that live on a GPU.

The torch twin of :mod:`sritm_serving.processing`, step for step, so that a frame the
network produced on a GPU is finished there and only the 10-bit I420 result
(a quarter of the bytes of the FP32 residual) leaves the device:

* :func:`network_input_from_i420`: I420 8-bit → N×3×H×W YUV 4:4:4, codes / 255
  (chroma up-sampled bilinearly with half-pixel centres, as
  :func:`sritm_core.colour.chroma_upsample_420`, which documents that it equals
  ``F.interpolate(mode="bilinear", align_corners=False)``);
* :func:`postprocess`: Eq. 1's bicubic skip with :func:`gpgmnet.arch.bicubic_upsample`
  (the training-time op) added to the network's residual, then
  :func:`i420_from_network_output`: 4:2:0 chroma by the mean of each 2×2 block,
  rounding half to even, clamping to the legal range of
  :func:`sritm_core.colour.legal_range`, I420 packing.

No colour formula or constant is restated here: the code scales come from
:mod:`sritm_core.contract` and the legal range from :mod:`sritm_core.colour`.
``tests/test_gpu_path.py`` checks both functions against the numpy path on CPU
tensors: pre-processing bit-exactly, post-processing bit-exactly with
``compute_dtype=torch.float32`` (the default, the numpy path's precision) and
within one code with ``torch.float64``.

Every function runs on the device of its input and never copies to the host;
N is 1 (the serving contract), as in :mod:`sritm_serving.processing`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torch.utils.dlpack
from torch import Tensor

from gpgmnet.arch import bicubic_upsample
from sritm_core import colour
from sritm_core.contract import HDR_CODE_SCALE, SDR_CODE_SCALE, i420_frame_size
from sritm_serving import processing

__all__ = [
    "from_triton",
    "i420_from_network_output",
    "network_input_from_i420",
    "pack_i420",
    "postprocess",
    "to_triton",
    "torch_dtype",
    "unpack_i420",
]

OUTPUT_BITS = 10
"""The served HDR10 frame's bit depth (the post-processor's ``quantize_plane(..., 10, ...)``)."""


def unpack_i420(i420: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(3H/2, W)`` I420 buffer → views of its Y (H×W), U and V (H/2×W/2) planes.

    The flat order of :func:`sritm_core.colour.unpack_i420` (U and V need not start
    on a row of the 2-D view). The buffer must be contiguous.
    """
    height, width = i420_frame_size(tuple(i420.shape))
    flat = i420.reshape(-1)
    luma, chroma = height * width, (height // 2) * (width // 2)
    return (
        flat[:luma].view(height, width),
        flat[luma : luma + chroma].view(height // 2, width // 2),
        flat[luma + chroma :].view(height // 2, width // 2),
    )


def pack_i420(y: Tensor, u: Tensor, v: Tensor) -> Tensor:
    """Y (H×W), U and V (H/2×W/2) planes → a fresh ``(3H/2, W)`` I420 buffer.

    The layout of :func:`sritm_core.colour.pack_i420`.
    """
    height, width = y.shape
    if tuple(u.shape) != (height // 2, width // 2) or tuple(v.shape) != (height // 2, width // 2):
        raise ValueError(f"U and V must be {height // 2}×{width // 2} for a {height}×{width} luma plane")
    return torch.cat([y.reshape(-1), u.reshape(-1), v.reshape(-1)]).view(3 * height // 2, width)


def network_input_from_i420(i420: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """An 8-bit I420 frame (3H/2 × W, uint8, any device) as the network's 1×3×H×W input, codes / 255.

    Computed in float64 like the numpy path (``i420_to_yuv444`` of integer codes
    is float64 there), so the result is bit-identical; at the input's low
    resolution the cost is negligible.
    """
    if i420.dtype != torch.uint8:
        raise TypeError(f"an SDR I420 frame is uint8, not {i420.dtype}")
    y, u, v = unpack_i420(i420.contiguous())
    chroma = torch.stack([u, v]).to(torch.float64)[None]  # 1×2×H/2×W/2
    chroma = F.interpolate(chroma, scale_factor=2, mode="bilinear", align_corners=False)
    yuv = torch.cat([y.to(torch.float64)[None, None], chroma], dim=1)
    return (yuv / SDR_CODE_SCALE).to(dtype).contiguous()


def _chroma_downsample_420(plane: Tensor) -> Tensor:
    """The mean of each 2×2 block, summed pairwise in the order of :func:`sritm_core.colour.chroma_downsample_420`."""
    return ((plane[0::2, 0::2] + plane[0::2, 1::2]) + (plane[1::2, 0::2] + plane[1::2, 1::2])) * 0.25


def _quantize(codes: Tensor, low: int, high: int) -> Tensor:
    # torch.round rounds half to even, like numpy.rint in sritm_core.colour.quantize_plane.
    return torch.round(codes).clamp_(low, high).to(torch.int16)


def i420_from_network_output(
    network_output: Tensor, compute_dtype: torch.dtype = torch.float32, check_nan: bool = True
) -> Tensor:
    """The network's 1×3×H×W output (10-bit codes / 1023, skip included) as a 10-bit I420 frame.

    The torch version of :func:`sritm_serving.processing.i420_from_network_output`:
    codes = output × 1023 in ``compute_dtype``; chroma averaged to 4:2:0 first,
    so each stored code is rounded once; every plane rounded half to even and
    clamped to the narrow range. Returns ``(3H/2, W)`` ``torch.uint16`` on the
    input's device (the layout of ``yuv420p10le``).

    Args:
        network_output: 1×3×H×W floating tensor, H and W even.
        compute_dtype: float32 (default) reproduces the numpy path bit for bit;
            float64 doubles the memory traffic and differs by at most one code,
            in the rare samples that sit within float32 rounding of a half code.
        check_nan: raise ``ValueError`` on NaN, as the numpy path does (costs a
            device synchronisation).
    """
    if network_output.ndim != 4 or network_output.shape[0] != 1 or network_output.shape[1] != 3:
        raise ValueError(f"the network output must be 1×3×H×W, got {tuple(network_output.shape)}")
    codes = network_output[0].to(compute_dtype) * HDR_CODE_SCALE
    if check_nan and bool(torch.isnan(codes).any()):
        raise ValueError("cannot quantize: codes contain NaN")
    limits = colour.legal_range(OUTPUT_BITS)
    y = _quantize(codes[0], limits.y_min, limits.y_max)
    u = _quantize(_chroma_downsample_420(codes[1]), limits.c_min, limits.c_max)
    v = _quantize(_chroma_downsample_420(codes[2]), limits.c_min, limits.c_max)
    # Legal 10-bit codes fit int16; the same bits viewed as uint16 are the served values.
    return pack_i420(y, u, v).view(torch.uint16)


def classical_skip_source(network_input: Tensor) -> Tensor:
    """:func:`sritm_serving.processing.skip_input` with the classical conversion, for a torch N×3×h×w tensor.

    The conversion exists once, in numpy; at the low resolution the round
    trip through the host is small. The result is float32 on the input's device.
    """
    host = network_input.detach().to("cpu", torch.float32).numpy()
    return torch.from_numpy(processing.skip_input(host, classical=True)).to(network_input.device)


def postprocess(
    network_input: Tensor,
    residual: Tensor,
    scale: int,
    compute_dtype: torch.dtype = torch.float32,
    check_nan: bool = True,
) -> Tensor:
    """The post-processor's whole step on one device: Bic(I_L) + residual → 10-bit I420 (uint16).

    The skip is :func:`gpgmnet.arch.bicubic_upsample` of the network input in
    float32 (the training-time op; the numpy path's OpenCV resize agrees with it
    to ~4e-7), added to the residual in float32.
    """
    skip = bicubic_upsample(network_input.to(torch.float32), scale)
    if skip.shape != residual.shape:
        raise ValueError(
            f"the residual {tuple(residual.shape)} is not ×{scale} of the input {tuple(network_input.shape)}"
        )
    return i420_from_network_output(residual.to(torch.float32) + skip, compute_dtype, check_nan)


# --------------------------------------------------------------------------
# Triton Python-backend tensors, through DLPack (no copies)


def from_triton(pb_tensor: Any) -> Tensor:
    """A ``pb_utils.Tensor`` as a torch tensor on the same device, sharing its memory (DLPack)."""
    return torch.utils.dlpack.from_dlpack(pb_tensor.to_dlpack())


def to_triton(pb_utils: Any, name: str, tensor: Tensor) -> Any:
    """A torch tensor as the ``pb_utils.Tensor`` output ``name``, sharing its memory (DLPack).

    The tensor is made contiguous (the backend takes C-order only), and a CUDA
    tensor's stream is synchronised first: Triton reads the memory on its own
    stream once ``execute`` returns.
    """
    tensor = tensor.contiguous()
    if tensor.is_cuda:
        torch.cuda.current_stream(tensor.device).synchronize()
    return pb_utils.Tensor.from_dlpack(name, torch.utils.dlpack.to_dlpack(tensor))


def torch_dtype(numpy_dtype: Any) -> torch.dtype:
    """The torch dtype of a numpy dtype (``pb_utils.triton_string_to_numpy`` gives numpy ones)."""
    return getattr(torch, np.dtype(numpy_dtype).name)
