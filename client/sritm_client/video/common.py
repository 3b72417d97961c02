"""What the reader, the HDR10 metadata and the writer share: the error type and array aliases."""

from __future__ import annotations

import os

import numpy as np
import numpy.typing as npt

U8Array = npt.NDArray[np.uint8]
U16Array = npt.NDArray[np.uint16]
PathLike = str | os.PathLike[str]


class VideoError(ValueError):
    """A video file cannot be read or written; the message is one line naming the problem."""


def ffmpeg_reason(e: BaseException) -> str:
    """The reason of an FFmpeg or OS error on one line: its ``strerror`` if it has one, else its text."""
    reason = getattr(e, "strerror", None) or str(e)
    return " ".join(str(reason).split())  # one line
