"""Probing and reading: :func:`probe_video` describes a file, :func:`read_sdr_frames` decodes its first video stream.

Frames come back as 8-bit I420 (yuv420p, narrow range). Sources in another
8-bit layout (yuv444p, yuvj420p, nv12, rgb24, ...) are converted to yuv420p by
libswscale (full-range "J" sources are moved to narrow range, RGB sources are
matrixed with BT.709). Sources with more than 8 bits per component raise
:class:`VideoError`. Frames come back at their decoded size, odd sizes
included: nothing is padded here (the CLI pads).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Generator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
import numpy as np
from av.container import InputContainer
from av.video.frame import VideoFrame
from av.video.stream import VideoStream

from sritm_client.video.common import PathLike, U8Array, VideoError, ffmpeg_reason
from sritm_core.colour import pack_i420

# --------------------------------------------------------------------------
# Probing and reading


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` found about a file's first video stream.

    Attributes:
        width, height: decoded frame size in pixels (may be odd).
        frame_rate: average frame rate (frames per second).
        frame_count: number of frames recorded by the container, or None when
            the container does not record it (e.g. Matroska).
        pix_fmt: FFmpeg pixel format of the stream, e.g. ``"yuv420p"``.
        bit_depth: bits per component of ``pix_fmt``.
        has_audio: the file has at least one audio stream.
        duration: length in seconds, or None when unknown.
    """

    width: int
    height: int
    frame_rate: Fraction
    frame_count: int | None
    pix_fmt: str
    bit_depth: int
    has_audio: bool
    duration: float | None


def open_input(path: PathLike) -> InputContainer:
    """Opens ``path`` with PyAV for reading.

    Raises:
        VideoError: the file is missing, a directory, empty, unreadable, or not a video FFmpeg can open.
    """
    p = Path(path)
    if not p.exists():
        raise VideoError(f"{p}: no such file")
    if p.is_dir():
        raise VideoError(f"{p}: is a directory, not a video file")
    try:
        size = p.stat().st_size
    except OSError as e:
        raise VideoError(f"{p}: cannot be read ({e.strerror or e})") from e
    if size == 0:
        raise VideoError(f"{p}: file is empty (0 bytes)")
    try:
        return av.open(str(p), mode="r")
    except av.error.FFmpegError as e:
        raise VideoError(f"{p}: not a readable video file ({ffmpeg_reason(e)})") from e
    except OSError as e:
        raise VideoError(f"{p}: cannot be read ({e.strerror or e})") from e


def _video_stream(container: InputContainer, path: PathLike) -> VideoStream:
    if not container.streams.video:
        raise VideoError(f"{path}: has no video stream")
    stream = container.streams.video[0]
    if stream.codec_context is None:
        raise VideoError(f"{path}: video stream uses a codec this build cannot decode")
    if stream.codec_context.format is None or not stream.codec_context.width:
        raise VideoError(f"{path}: video stream has no decodable pictures (truncated or corrupt file?)")
    return stream


def _bit_depth(stream: VideoStream) -> int:
    fmt = stream.codec_context.format
    assert fmt is not None
    bits = [c.bits for c in fmt.components if not c.is_alpha]
    return max(bits) if bits else 8


def _info(container: InputContainer, stream: VideoStream, path: PathLike) -> VideoInfo:
    ctx = stream.codec_context
    fmt = ctx.format
    assert fmt is not None
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate:
        raise VideoError(f"{path}: video stream has no frame rate")
    duration: float | None = None
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / av.time_base
    return VideoInfo(
        width=ctx.width,
        height=ctx.height,
        frame_rate=Fraction(rate),
        frame_count=stream.frames if stream.frames > 0 else None,
        pix_fmt=fmt.name,
        bit_depth=_bit_depth(stream),
        has_audio=bool(container.streams.audio),
        duration=duration,
    )


def probe_video(path: PathLike) -> VideoInfo:
    """Describe the first video stream of ``path`` without decoding it.

    Raises:
        VideoError: the file is missing, empty, unreadable, corrupt, or has no
            decodable video stream.
    """
    with open_input(path) as container:
        return _info(container, _video_stream(container, path), path)


@dataclass(frozen=True)
class SdrVideoFrame:
    """One decoded 8-bit frame, as planes of narrow-range yuv420p codes.

    ``y`` is ``(height, width)``; ``u`` and ``v`` are
    ``(ceil(height/2), ceil(width/2))``. Height and width are the decoded
    size, odd or even: odd sizes are NOT padded here (pad by edge replication
    of the last luma row/column before use; the chroma planes already have the
    right size for the padded frame).

    Attributes:
        index: 0-based position in decode (presentation) order.
        pts: presentation timestamp in units of ``time_base``.
        time_base: the stream's time base, seconds per ``pts`` unit.
        y, u, v: uint8 planes.
    """

    index: int
    pts: int
    time_base: Fraction
    y: U8Array
    u: U8Array
    v: U8Array

    @property
    def width(self) -> int:
        """The decoded width in pixels."""
        return int(self.y.shape[1])

    @property
    def height(self) -> int:
        """The decoded height in pixels."""
        return int(self.y.shape[0])

    @property
    def time(self) -> float:
        """Presentation time in seconds."""
        return float(self.pts * self.time_base)

    @functools.cached_property
    def i420(self) -> U8Array:
        """The frame as one ``(3H/2, W)`` uint8 I420 buffer (yuv420p byte order).

        Packed from the planes on first access (then cached).

        Raises:
            ValueError: the frame has an odd width or height (pad it first).
        """
        if self.width % 2 or self.height % 2:
            raise ValueError(
                f"I420 needs an even frame size, this frame is {self.width}x{self.height}; "
                "pad it first"
            )
        packed: U8Array = pack_i420(self.y, self.u, self.v)
        return packed


def _plane(frame: VideoFrame, index: int) -> U8Array:
    plane = frame.planes[index]
    rows = np.frombuffer(memoryview(plane), dtype=np.uint8).reshape(-1, plane.line_size)
    return np.array(rows[: plane.height, : plane.width])


def _to_yuv420p(frame: VideoFrame) -> VideoFrame:
    fmt = frame.format
    full_range = frame.color_range == 2 or fmt.name.startswith("yuvj")
    if fmt.name == "yuv420p" and not full_range:
        return frame
    kwargs: dict[str, Any] = {"format": "yuv420p", "dst_color_range": 1}
    if full_range:
        kwargs["src_color_range"] = 2
    if fmt.is_rgb:
        kwargs["dst_colorspace"] = "ITU709"
    return frame.reformat(**kwargs)


def presentation_timestamps(path: PathLike) -> list[int] | None:
    """Every video frame's timestamp in presentation order, by demuxing only (nothing is decoded).

    This is the exact frame count of files whose headers do not record one
    (Matroska) and the map from frame number to timestamp that a frame-exact
    seek needs. None when some packet has no timestamp (raw streams, some AVI).

    Raises:
        VideoError: the file cannot be read (see :func:`probe_video`) or its demuxing fails.
    """
    with open_input(path) as container:
        stream = _video_stream(container, path)
        timestamps: list[int] = []
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                if packet.pts is None:
                    return None
                timestamps.append(packet.pts)
        except av.error.FFmpegError as e:
            raise VideoError(f"{path}: reading failed after {len(timestamps)} packets ({ffmpeg_reason(e)})") from e
    return sorted(timestamps)


Frames = Generator[SdrVideoFrame, None, None]  # closing one closes its file


def read_sdr_frames(path: PathLike, frames: range | None = None, timestamps: list[int] | None = None) -> Frames:
    """Decode the first video stream of an 8-bit SDR file to yuv420p planes.

    The file is opened and checked when this is called (not on the first
    ``next()``), so a bad file raises here. Frames are yielded in presentation
    order; a frame without a timestamp gets one extrapolated from the previous
    frame and the frame rate. A file cut short (but with intact headers)
    yields the frames that can still be decoded, as players do; compare with
    :attr:`VideoInfo.frame_count` when the container records it.

    Args:
        path: the video.
        frames: only these frames (numbered from 0 in presentation order, step 1): decoding starts at the
            keyframe before the first of them, and the frames before it are dropped, so the frames yielded
            are exactly those a whole-file read yields at these positions, with the same indices.
        timestamps: :func:`presentation_timestamps` of ``path`` when the caller has read them already
            (a film's demuxing pass is not repeated).

    Raises:
        VideoError: the file cannot be read (see :func:`probe_video`), its video
            has more than 8 bits per component ("10-bit input is not
            supported: ..."), or decoding fails part-way (raised from the
            iterator).
    """
    if frames is not None and (frames.step != 1 or frames.start < 0):
        raise ValueError(f"frames must be a range from 0 upwards in steps of 1, not {frames}")
    if frames is not None and frames.start > 0 and timestamps is None:
        timestamps = presentation_timestamps(path)  # None again, at its first packet, for a file without any
    container = open_input(path)
    try:
        stream = _video_stream(container, path)
        info = _info(container, stream, path)
        if info.bit_depth > 8:
            raise VideoError(
                f"{info.bit_depth}-bit input is not supported: {path} is "
                f"{info.pix_fmt} ({info.bit_depth} bits per component); sritm takes 8-bit SDR"
            )
    except BaseException:
        container.close()
        raise
    every = _iter_frames(container, stream, info, path)
    if frames is None:
        return every
    if timestamps is None or frames.start >= len(timestamps):
        return _frames_by_count(every, frames)
    return _frames_from_seek(container, stream, every, timestamps, frames, path)


def _frames_by_count(every: Frames, frames: range) -> Frames:
    with contextlib.closing(every):
        for frame in every:
            if frame.index >= frames.stop:
                return
            if frame.index >= frames.start:
                yield frame


def _frames_from_seek(
    container: InputContainer, stream: VideoStream, every: Frames, timestamps: list[int], frames: range,
    path: PathLike,
) -> Frames:
    """``frames`` decoded from the keyframe before the first, numbered by their timestamps' positions."""
    first = timestamps[frames.start]
    after = timestamps[frames.stop] if frames.stop < len(timestamps) else None
    position = {pts: index for index, pts in enumerate(timestamps)}
    try:
        container.seek(first, backward=True, any_frame=False, stream=stream)
    except av.error.FFmpegError as e:
        every.close()
        raise VideoError(f"{path}: cannot seek to frame {frames.start} ({ffmpeg_reason(e)})") from e
    started = False
    with contextlib.closing(every):
        for frame in every:
            if frame.pts < first:
                continue
            if not started and frame.pts != first:
                break  # the demuxer seeked past the first frame (imprecise index): decode from the start instead
            started = True
            if after is not None and frame.pts >= after:
                return
            index = position.get(frame.pts)
            if index is None:
                raise VideoError(f"{path}: decoded a frame at timestamp {frame.pts} that no packet announced")
            yield dataclasses.replace(frame, index=index)
    if not started:
        yield from _frames_by_count(read_sdr_frames(path), frames)


def _iter_frames(
    container: InputContainer, stream: VideoStream, info: VideoInfo, path: PathLike
) -> Frames:
    time_base = stream.time_base or Fraction(1, 1) / info.frame_rate
    step = max(1, round(1 / (info.frame_rate * time_base)))
    stream.thread_type = "AUTO"
    index = 0
    last_pts: int | None = None
    try:
        try:
            for frame in container.decode(stream):
                pts = frame.pts
                if pts is None:
                    pts = 0 if last_pts is None else last_pts + step
                last_pts = pts
                yuv = _to_yuv420p(frame)
                yield SdrVideoFrame(
                    index=index,
                    pts=pts,
                    time_base=Fraction(time_base),
                    y=_plane(yuv, 0),
                    u=_plane(yuv, 1),
                    v=_plane(yuv, 2),
                )
                index += 1
        except av.error.FFmpegError as e:
            raise VideoError(
                f"{path}: decoding failed after {index} frames ({ffmpeg_reason(e)})"
            ) from e
    finally:
        container.close()
