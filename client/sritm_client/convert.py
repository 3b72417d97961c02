"""Whole-file conversion on top of the SDK: images and SDR videos in, HDR10 files out.

``sritm convert`` is a thin argument parser over :func:`convert_file`. Odd
frame sizes are padded to even by repeating the last row/column (I420 needs
even sizes) and the output is cropped back; the scale is even, so the crop is
exact on every plane.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from numpy.typing import NDArray

from sritm_client.client import SritmClient
from sritm_client.errors import SritmError
from sritm_client.frames import HdrFrame, SdrFrame
from sritm_client.segments import PartManifest, Segment, manifest_path, source_frame_count
from sritm_client.video import (
    ContentLightLevel,
    Hdr10VideoWriter,
    VideoError,
    VideoInfo,
    mastering_display_for,
    probe_video,
    read_sdr_frames,
)
from sritm_client.video.raw import RawYuvWriter
from sritm_client.video.reader import presentation_timestamps
from sritm_core import colour
from sritm_core.contract import Rendering

IMAGE_INPUTS = frozenset({".png", ".jpg", ".jpeg"})
IMAGE_OUTPUTS = frozenset({".png", ".yuv"})
VIDEO_OUTPUTS = frozenset({".mkv", ".mp4", ".yuv"})


class ConversionError(SritmError):
    """A file that cannot be converted; the message names the file and the problem."""


@dataclass(frozen=True)
class ConversionResult:
    """What :func:`convert_file` wrote.

    Attributes:
        output: the file written.
        frames: how many frames it holds.
        input_size: the input's (height, width).
        output_size: the output's (height, width).
        interrupted: whether Ctrl-C stopped the conversion; ``output`` then holds the frames converted so far.
    """

    output: Path
    frames: int
    input_size: tuple[int, int]
    output_size: tuple[int, int]
    interrupted: bool = False


ProgressFactory = Callable[..., Any]


def _even(n: int) -> int:
    return n + n % 2


def pad_planes_to_even(
    y: NDArray[np.uint8], u: NDArray[np.uint8], v: NDArray[np.uint8]
) -> tuple[NDArray[np.uint8], NDArray[np.uint8], NDArray[np.uint8]]:
    """Pads a (possibly odd) 4:2:0 frame to even size; chroma planes already span ceil(H/2)×ceil(W/2)."""
    height, width = y.shape
    if height % 2 or width % 2:
        y = np.pad(y, ((0, height % 2), (0, width % 2)), mode="edge")
    return y, u, v


def crop_hdr(frame: HdrFrame, height: int, width: int) -> HdrFrame:
    """The top-left ``height``×``width`` of an HDR frame (both even)."""
    if (frame.height, frame.width) == (height, width):
        return frame
    cropped = colour.pack_i420(
        frame.y[:height, :width], frame.u[: height // 2, : width // 2], frame.v[: height // 2, : width // 2]
    )
    return HdrFrame.from_i420(cropped, frame.pts)


def read_image_rgb8(path: Path) -> NDArray[np.uint8]:
    """An 8-bit RGB image (PNG or JPEG, taken as BT.709), or a ConversionError naming the problem."""
    import cv2  # OpenCV only decodes here; colour conversion is sritm_core.colour's

    if path.stat().st_size == 0:
        raise ConversionError(f"{path} is empty (0 bytes)")
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ConversionError(f"{path} is not a readable PNG or JPEG image")
    if image.dtype != np.uint8:
        raise ConversionError(f"{path} has {image.dtype.itemsize * 8}-bit samples; sritm takes 8-bit SDR images")
    if image.ndim == 2 or image.shape[2] == 1:
        raise ConversionError(f"{path} is greyscale; sritm takes 8-bit RGB images")
    if image.shape[2] == 4:
        raise ConversionError(f"{path} has an alpha channel; flatten it to 8-bit RGB first")
    rgb: NDArray[np.uint8] = np.ascontiguousarray(image[:, :, ::-1])
    return rgb


def write_hdr_image(frame: HdrFrame, path: Path) -> None:
    """``.png``: 16-bit full-range PQ BT.2020 R'G'B' (value/65535 = PQ); ``.yuv``: raw yuv420p10le."""
    if path.suffix.lower() == ".yuv":
        frame.to_numpy().astype("<u2", copy=False).tofile(path)
        return
    import cv2

    if not cv2.imwrite(str(path), np.ascontiguousarray(frame.to_rgb_pq16()[:, :, ::-1])):
        raise ConversionError(f"could not write {path}")


def convert_image(
    client: SritmClient, source: Path, output: Path, rendering: Rendering = Rendering()
) -> ConversionResult:
    """Converts an 8-bit image to an HDR10 ``.png`` or ``.yuv`` with one call; odd sizes are padded, then cropped."""
    rgb = read_image_rgb8(source)
    height, width = rgb.shape[:2]
    padded = np.pad(rgb, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
    converted = client.convert(
        SdrFrame.from_rgb8(padded), convention=rendering.convention, peak_nits=rendering.peak_nits
    )
    hdr = crop_hdr(converted, client.scale * height, client.scale * width)
    write_hdr_image(hdr, output)
    return ConversionResult(output, 1, (height, width), (hdr.height, hdr.width))


def convert_video(
    client: SritmClient, source: Path, output: Path, *, window: int, progress: ProgressFactory | None = None,
    crf: float = 18.0, preset: str = "medium", rendering: Rendering = Rendering(), segment: Segment | None = None,
) -> ConversionResult:
    """Converts an SDR video to HEVC Main10 with HDR10 metadata over one stream, copying its audio.

    A ``.yuv`` output is raw ``yuv420p10le`` instead (no container, metadata or audio): byte for byte what
    the server answered, for comparisons.

    With ``segment``, only that part of the video's frames is converted, to a part file without audio that
    gets its manifest once complete (see :mod:`sritm_client.segments`; ``sritm concat`` joins the parts).

    Ctrl-C ends the conversion early with a file of the frames converted so far
    (the result's ``interrupted`` is set).

    Raises:
        ConversionError: the video has no decodable frame, or fewer than its headers announce.
    """
    info = probe_video(source)
    part: range | None = None
    timestamps: list[int] | None = None
    if segment is not None:
        manifest_path(output).unlink(missing_ok=True)  # the part is unfinished until its manifest is back
        timestamps = presentation_timestamps(source)  # one demuxing pass: the count and the seek both use it
        total = source_frame_count(source, timestamps)
        part = segment.frames(total)
    frames = read_sdr_frames(source, part, timestamps)  # raises for >8-bit input before anything is written
    scale = client.scale
    out_height, out_width = scale * info.height, scale * info.width

    def sdr_frames() -> Iterator[SdrFrame]:
        for decoded in frames:
            yield SdrFrame.from_planes(*pad_planes_to_even(decoded.y, decoded.u, decoded.v), pts=decoded.pts)

    expected = expected_frame_count(source, info) if part is None else len(part)
    bar = progress(total=expected, unit="frame", desc=source.name + (f" part {segment}" if segment else "")) \
        if progress else None
    written = 0
    interrupted = False
    try:
        writer_context: Hdr10VideoWriter | RawYuvWriter = (
            RawYuvWriter(output, out_width, out_height) if output.suffix.lower() == ".yuv" else Hdr10VideoWriter(
                output, out_width, out_height, info.frame_rate,
                audio_source=source if info.has_audio and segment is None else None,
                crf=crf, preset=preset, mastering_display=mastering_display_for(rendering.peak_nits),
            )
        )
        with writer_context as writer:
            for hdr in client.stream(sdr_frames(), window=window, convention=rendering.convention,
                                     peak_nits=rendering.peak_nits):
                writer.write(crop_hdr(hdr, out_height, out_width).to_numpy())
                written += 1
                if bar is not None:
                    bar.update(1)
    except KeyboardInterrupt:
        # The writer has already finished the file with the frames done so far.
        interrupted = True
    except SritmError as error:
        # The writer has finished the file with the frames done so far; say so.
        if written:
            error.add_note(f"{output} keeps the {written} frame(s) converted before the failure")
        raise
    finally:
        if bar is not None:
            bar.close()
    if written == 0 and not interrupted:
        raise ConversionError(f"{source} has no decodable video frames")
    if not interrupted and expected is not None and written < expected - 1:
        # The demuxer stops quietly at a cut or a damaged stretch; a player would too, a converter must not.
        raise ConversionError(
            f"{source}: only {written} of its {expected} frames could be decoded (truncated or corrupt file?); "
            f"{output} keeps the {written} frame(s) converted"
        )
    if segment is not None and part is not None and not interrupted:
        if written != len(part):
            raise ConversionError(f"{source}: part {segment} should hold {len(part)} frames, {written} were decoded")
        cll = writer.content_light_level if isinstance(writer, Hdr10VideoWriter) else ContentLightLevel(0, 0)
        PartManifest(
            segment=segment.index, segments=segment.count, source=str(source.resolve()), source_frames=total,
            first_frame=part.start, frames=written, width=out_width, height=out_height,
            frame_rate=str(info.frame_rate), scale=scale, convention=rendering.convention,
            peak_nits=rendering.peak_nits, encoding="yuv420p10le" if isinstance(writer, RawYuvWriter) else "hevc",
            max_cll=cll.max_cll, max_fall=cll.max_fall,
        ).write_beside(output)
    return ConversionResult(output, written, (info.height, info.width), (out_height, out_width), interrupted)


def expected_frame_count(source: Path, info: VideoInfo) -> int | None:
    """How many frames ``source`` says its video has; None if it does not say.

    The container's count (MP4), else the video track's ``DURATION`` tag (Matroska,
    written by FFmpeg and mkvmerge) times the frame rate. Read from the headers, so
    a truncated file still tells.
    """
    if info.frame_count is not None:
        return info.frame_count
    try:
        with av.open(str(source)) as container:
            tag = container.streams.video[0].metadata.get("DURATION")
    except (av.error.FFmpegError, OSError, IndexError):
        return None
    if not tag:
        return None
    try:
        hours, minutes, seconds = str(tag).split(":")
        duration = Fraction(seconds) + 60 * int(minutes) + 3600 * int(hours)
    except ValueError:
        return None
    return round(duration * info.frame_rate)


def check_paths(source: Path, output: Path) -> str:
    """``"image"`` or ``"video"``, or a ConversionError naming what is wrong with the paths."""
    if not source.exists():
        raise ConversionError(f"{source} does not exist")
    if not source.is_file():
        raise ConversionError(f"{source} is not a file")
    if not os.access(source, os.R_OK):
        raise ConversionError(f"{source} is not readable")
    if not output.parent.is_dir():
        raise ConversionError(f"the output folder {output.parent} does not exist")
    kind = "image" if source.suffix.lower() in IMAGE_INPUTS else "video"
    allowed = IMAGE_OUTPUTS if kind == "image" else VIDEO_OUTPUTS
    if output.suffix.lower() not in allowed:
        raise ConversionError(
            f"{'an image' if kind == 'image' else 'a video'} converts to {' or '.join(sorted(allowed))}, "
            f"not {output.suffix or 'a name without extension'}"
        )
    if output.resolve() == source.resolve():
        raise ConversionError("the output would overwrite the input")
    return kind


def convert_file(
    client: SritmClient, source: Path, output: Path, *, window: int = 8, progress: ProgressFactory | None = None,
    crf: float = 18.0, preset: str = "medium", rendering: Rendering = Rendering(), segment: Segment | None = None,
) -> ConversionResult:
    """Converts ``source``, an SDR image or video, to the HDR10 file ``output`` on ``client``'s server.

    Args:
        client: a connected client; its scale is the conversion's.
        source: the SDR image (PNG/JPEG) or video.
        output: ``.png`` or ``.yuv`` for an image, ``.mkv`` or ``.mp4`` for a video.
        window: frames in flight while streaming a video.
        progress: a ``tqdm``-like factory for a progress bar over a video's frames; ``None`` for none.
        crf: the x265 quality of a video output (lower is better).
        preset: the x265 preset of a video output.
        rendering: the SDR convention and the target display's peak, for every frame.
        segment: convert only this part of a video, to a part file for ``sritm concat``.

    Raises:
        ConversionError: a path, image or video that cannot be converted.
    """
    kind = check_paths(source, output)
    if kind == "image":
        if segment is not None:
            raise ConversionError("--segment cuts videos; an image is one frame")
        return convert_image(client, source, output, rendering)
    try:
        return convert_video(client, source, output, window=window, progress=progress, crf=crf, preset=preset,
                             rendering=rendering, segment=segment)
    except VideoError as error:
        raise ConversionError(str(error)) from None
