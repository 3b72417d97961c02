"""Raw video output: 10-bit I420 frames one after another (``yuv420p10le``), for byte-exact comparisons.

No container, no metadata, no audio: what ffmpeg reads with
``-f rawvideo -pix_fmt yuv420p10le -s WxH``. The file appears atomically when
the writer closes (written under a temporary name, then renamed), as the
HDR10 writer's does.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from types import TracebackType

import numpy as np
import numpy.typing as npt

from sritm_client.video.common import PathLike, VideoError


class RawYuvWriter:
    """Writes ``width`` x ``height`` 10-bit I420 frames to ``path`` as little-endian 16-bit samples."""

    def __init__(self, path: PathLike, width: int, height: int) -> None:
        self.path = Path(path)
        self.width, self.height = width, height
        self.frames = 0
        self._temporary = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.part")
        try:
            self._file = open(self._temporary, "wb")  # closed by close()
        except OSError as error:
            raise VideoError(f"cannot write {self.path}: {error.strerror}") from None

    def write(self, i420_u16: npt.ArrayLike) -> None:
        """Appends one frame (3H/2 x W, values 0..1023)."""
        frame = np.asarray(i420_u16)
        if frame.shape != (self.height * 3 // 2, self.width):
            raise VideoError(f"a frame for {self.path} must be {self.height * 3 // 2}x{self.width}, not {frame.shape}")
        self._file.write(frame.astype("<u2", copy=False).tobytes())
        self.frames += 1

    def close(self) -> None:
        """Finishes the file: it appears under its name with every frame written so far."""
        if self._file.closed:
            return
        self._file.close()
        os.replace(self._temporary, self.path)

    def __enter__(self) -> RawYuvWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
