"""The frames the SDK sends and receives: I420 buffers with a presentation timestamp.

All colour science is ``sritm_core.colour`` (the one implementation shared with
the server), so a frame built here is exactly what the server's pre-processor
expects and a frame decoded here is the exact inverse of its post-processor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
from numpy.typing import NDArray

from sritm_client.errors import InvalidFrameError
from sritm_core import colour
from sritm_core.contract import FrameLayoutError, i420_frame_size

__all__ = ["SdrFrame", "HdrFrame"]

CodeT = TypeVar("CodeT", np.uint8, np.uint16)


def _checked_layout(i420: Any, dtype: type[np.unsignedinteger[Any]], what: str) -> tuple[int, int]:
    if not isinstance(i420, np.ndarray):
        raise InvalidFrameError(f"{what}: the I420 buffer must be a numpy array, not {type(i420).__name__}")
    if i420.dtype != dtype:
        # Never cast: float [0, 1] or 16-bit data cast to uint8 would be silently wrong.
        raise InvalidFrameError(f"{what}: the I420 buffer must be {np.dtype(dtype).name}, not {i420.dtype}")
    try:
        return i420_frame_size(i420.shape)
    except FrameLayoutError as error:
        raise InvalidFrameError(f"{what}: {error}") from None


def _planes(i420: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any]]:
    y, u, v = colour.unpack_i420(i420)
    return y, u, v


class _I420Frame(Generic[CodeT]):
    """The size, plane views and buffer of a frame whose dataclass holds an ``i420`` buffer of ``CodeT`` codes."""

    i420: NDArray[CodeT]

    @property
    def height(self) -> int:
        return self.i420.shape[0] * 2 // 3

    @property
    def width(self) -> int:
        return int(self.i420.shape[1])

    @property
    def y(self) -> NDArray[CodeT]:
        """The ``(H, W)`` luma plane (a view)."""
        return _planes(self.i420)[0]

    @property
    def u(self) -> NDArray[CodeT]:
        """The ``(H/2, W/2)`` Cb plane (a view)."""
        return _planes(self.i420)[1]

    @property
    def v(self) -> NDArray[CodeT]:
        """The ``(H/2, W/2)`` Cr plane (a view)."""
        return _planes(self.i420)[2]

    def to_numpy(self) -> NDArray[CodeT]:
        """The ``(3H/2, W)`` I420 buffer (the same array, not a copy)."""
        return self.i420


@dataclass(frozen=True, eq=False)
class SdrFrame(_I420Frame[np.uint8]):
    """One low-resolution input frame: BT.709 narrow-range 8-bit I420, ``(3H/2, W)`` uint8.

    The array is not copied; do not modify it while the frame is being converted.
    """

    i420: NDArray[np.uint8]
    pts: int = 0

    def __post_init__(self) -> None:
        _checked_layout(self.i420, np.uint8, "SdrFrame")

    @classmethod
    def from_i420(cls, i420: NDArray[np.uint8], pts: int = 0) -> SdrFrame:
        """From an I420 buffer, e.g. the bytes of one yuv420p frame reshaped to ``(3H/2, W)``."""
        return cls(np.ascontiguousarray(i420), pts)

    @classmethod
    def from_planes(cls, y: NDArray[np.uint8], u: NDArray[np.uint8], v: NDArray[np.uint8], pts: int = 0) -> SdrFrame:
        """From the ``(H, W)`` luma and two ``(H/2, W/2)`` chroma planes."""
        for name, plane in (("y", y), ("u", u), ("v", v)):
            if np.asarray(plane).dtype != np.uint8:
                raise InvalidFrameError(f"SdrFrame: the {name} plane must be uint8, not {np.asarray(plane).dtype}")
        try:
            packed = colour.pack_i420(y, u, v)
        except ValueError as error:
            raise InvalidFrameError(f"SdrFrame: {error}") from None
        return cls(packed, pts)

    @classmethod
    def from_rgb8(cls, rgb: NDArray[np.uint8], pts: int = 0) -> SdrFrame:
        """From ``(H, W, 3)`` 8-bit BT.709 R'G'B' (full range), encoded as BT.709 narrow-range I420.

        Not OpenCV's ``cvtColor(..., COLOR_RGB2YUV_I420)``: that is BT.601 and
        shifts every saturated colour the network sees.
        """
        if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            described = f"{rgb.dtype} {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
            raise InvalidFrameError(f"SdrFrame.from_rgb8 needs an (H, W, 3) uint8 array, not {described}")
        height, width = rgb.shape[:2]
        if height == 0 or width == 0 or height % 2 or width % 2:
            raise InvalidFrameError(
                f"SdrFrame.from_rgb8: I420 needs a non-empty even height and width, got {height}×{width}"
            )
        codes = colour.rgb_to_codes(rgb.astype(np.float64) / 255.0, colour.BT709, 8)
        return cls(colour.quantize_i420(codes, 8).astype(np.uint8, copy=False), pts)


@dataclass(frozen=True, eq=False)
class HdrFrame(_I420Frame[np.uint16]):
    """One converted frame: BT.2020 NCL, PQ, narrow-range 10-bit I420, ``(3H/2, W)`` uint16 (yuv420p10le).

    ``pts`` is the timestamp of the :class:`SdrFrame` it was converted from.
    A frame received by value wraps the response's bytes and is read-only;
    copy it to modify it.
    """

    i420: NDArray[np.uint16]
    pts: int = 0

    def __post_init__(self) -> None:
        _checked_layout(self.i420, np.uint16, "HdrFrame")

    @classmethod
    def from_i420(cls, i420: NDArray[np.uint16], pts: int = 0) -> HdrFrame:
        """From a ``(3H/2, W)`` uint16 yuv420p10le buffer, copied only if it is not contiguous."""
        return cls(np.ascontiguousarray(i420), pts)

    def to_rgb_pq16(self) -> NDArray[np.uint16]:
        """``(H, W, 3)`` full-range BT.2020 PQ R'G'B': ``value / 65535`` is the PQ signal.

        Chroma is up-sampled with the colour module's centre-sited bilinear
        filter; float32 keeps a 4K frame's temporaries at a few hundred MB.
        """
        yuv444 = colour.i420_to_yuv444(self.i420.astype(np.float32))
        rgb = colour.codes_to_rgb(yuv444, colour.BT2020, 10)
        pq16: NDArray[np.uint16] = np.rint(np.clip(rgb, 0.0, 1.0) * 65535.0).astype(np.uint16)
        return pq16
