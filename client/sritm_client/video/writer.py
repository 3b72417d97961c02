"""The HDR10 writer: 10-bit I420 frames to HEVC Main 10 in ``.mkv`` or ``.mp4`` (see the package docstring)."""

from __future__ import annotations

import heapq
import os
import secrets
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeAlias

import av
import av.error
import numpy as np
import numpy.typing as npt
from av.audio.stream import AudioStream
from av.container import InputContainer, OutputContainer
from av.packet import Packet
from av.video.frame import VideoFrame
from av.video.stream import VideoStream

from sritm_client.video.common import PathLike, VideoError, ffmpeg_reason
from sritm_client.video.hdr10 import (
    P3D65_1000_NITS,
    ContentLightLevel,
    MasteringDisplay,
    checked_i420_u16,
    cll_value,
    frame_light_levels,
    insert_hdr_boxes,
    patch_hvcc,
    patch_length_prefixed,
)
from sritm_client.video.reader import open_input

if TYPE_CHECKING:
    AnyPacket: TypeAlias = Packet[Any]  # PyAV's Packet is generic only in its stubs

_HEVC_MAX_10BIT: Final = 1023
_SEI_PREFIX_NAL: Final = 39
_SEI_CONTENT_LIGHT_LEVEL: Final = 144


# --------------------------------------------------------------------------
# Writer


def _first_audio_stream(container: InputContainer) -> AudioStream | None:
    return container.streams.audio[0] if container.streams.audio else None


def _muxer(fmt: str) -> str:
    return "matroska" if fmt == "mkv" else "mp4"


@dataclass
class _Encoder:
    container: OutputContainer
    stream: VideoStream


class Hdr10VideoWriter:
    """Encode 10-bit I420 frames to an HDR10 HEVC Main 10 ``.mkv`` / ``.mp4``.

    Use as a context manager; :meth:`write` frames in presentation order::

        with Hdr10VideoWriter("out.mkv", 3840, 2160, Fraction(24000, 1001),
                              audio_source="in.mp4") as w:
            for frame in frames:          # (3240, 3840) uint16 I420
                w.write(frame)

    The output is tagged BT.2020 / SMPTE ST 2084 (PQ) / BT.2020nc / limited
    range, chroma sited at the centre (the siting of :mod:`sritm_core.colour`),
    with ``mastering_display`` (default :data:`P3D65_1000_NITS`) and the
    MaxCLL/MaxFALL measured from the frames written (see the module notes for
    how they get into the file). The first audio stream of ``audio_source``
    (if it has one) is stream-copied, interleaved with the video, kept in
    sync with the source's video start and cut at the end of the video
    written. Matroska cannot store negative timestamps, so in ``.mkv`` an
    audio stream that starts before 0 (AAC encoder priming, ~21 ms) delays
    both streams by that much (FFmpeg's usual behaviour; sync is kept). MP4
    output gets the ``hvc1`` sample entry and ``+faststart``.

    If the with-block raises (KeyboardInterrupt included) the writer still
    finishes the file with the frames written so far and lets the exception
    propagate. If no frame was written, no file is created. While writing,
    the encoded stream lives in a hidden temporary file next to ``path``
    (``.<name>.<random>.encoding.mp4``); the output appears only when
    complete.

    Args:
        path: output file, ``.mkv`` or ``.mp4``.
        width, height: frame size, both even.
        frame_rate: frames per second; pass a Fraction for NTSC rates
            (``Fraction(24000, 1001)``).
        audio_source: file whose audio is copied, or None.
        crf: x265 constant rate factor (lower = better; ignored if lossless).
        preset: x265 preset ("ultrafast" .. "placebo").
        lossless: encode losslessly (x265 ``lossless=1``); for tests/masters.
        mastering_display: the ST 2086 metadata to signal.
        x265_params: extra x265 options (``key: value``), applied last.

    Raises:
        ValueError: bad extension, size or frame rate.
        VideoError: ``audio_source`` is unreadable, or its audio codec cannot
            be stored in the output container (e.g. PCM in .mp4: use .mkv).
    """

    def __init__(
        self,
        path: PathLike,
        width: int,
        height: int,
        frame_rate: Fraction | int | float,
        *,
        audio_source: PathLike | None = None,
        crf: float = 18.0,
        preset: str = "medium",
        lossless: bool = False,
        mastering_display: MasteringDisplay = P3D65_1000_NITS,
        x265_params: Mapping[str, str] | None = None,
    ) -> None:
        self.path = Path(path)
        self._format = self.path.suffix.lower().lstrip(".")
        if self._format not in ("mkv", "mp4"):
            raise ValueError(f"output must be .mkv or .mp4, got {self.path.name!r}")
        if width <= 0 or height <= 0 or width % 2 or height % 2:
            raise ValueError(f"frame size must be positive and even, got {width}x{height}")
        rate = Fraction(frame_rate).limit_denominator(1_000_000)
        if rate <= 0:
            raise ValueError(f"frame rate must be positive, got {frame_rate}")
        self.width, self.height, self.frame_rate = width, height, rate
        self.mastering_display = mastering_display
        self.audio_source = Path(audio_source) if audio_source is not None else None
        if self.audio_source is not None:
            self._check_audio(self.audio_source)

        params = {
            "log-level": "error",
            "hdr10": "1",
            "master-display": mastering_display.x265(),
            "max-cll": "0,0",  # placeholder SEI; rewritten with the measured values by close()
            "colorprim": "bt2020",
            "transfer": "smpte2084",
            "colormatrix": "bt2020nc",
            "range": "limited",
            "chromaloc": "1",  # centre, as sritm_core.colour samples chroma
        }
        if lossless:
            params["lossless"] = "1"
        params.update(x265_params or {})
        options: dict[str, object] = {
            "preset": preset,
            "x265-params": ":".join(f"{k}={v}" for k, v in params.items()),
        }
        if not lossless:
            options["crf"] = f"{crf:g}"

        tag = secrets.token_hex(4)
        self._encoded = self.path.with_name(f".{self.path.name}.{tag}.encoding.mp4")
        self._partial = self.path.with_name(f".{self.path.name}.{tag}.partial.{self._format}")
        self._frames = 0
        self._last_dts: int | None = None
        self._max_cll = self._max_fall = 0.0
        self._result: ContentLightLevel | None = None
        self._closed = False
        try:
            container = av.open(str(self._encoded), mode="w", format="mp4")
        except (av.error.FFmpegError, OSError) as e:
            raise VideoError(f"{self.path}: cannot create output ({ffmpeg_reason(e)})") from e
        try:
            stream = container.add_stream("libx265", rate=rate)
            stream.width, stream.height = width, height
            stream.pix_fmt = "yuv420p10le"
            stream.time_base = 1 / rate
            stream.codec_context.color_primaries = 9  # AVCOL_PRI_BT2020
            stream.codec_context.color_trc = 16  # AVCOL_TRC_SMPTE2084
            stream.codec_context.colorspace = 9  # AVCOL_SPC_BT2020_NCL
            stream.codec_context.color_range = 1  # AVCOL_RANGE_MPEG (limited)
            stream.options = options
        except BaseException:
            container.close()
            self._encoded.unlink(missing_ok=True)
            raise
        self._encoder: _Encoder | None = _Encoder(container, stream)

    # -- public API --------------------------------------------------------

    @property
    def frames_written(self) -> int:
        """How many frames :meth:`write` has encoded."""
        return self._frames

    @property
    def content_light_level(self) -> ContentLightLevel:
        """MaxCLL/MaxFALL of the frames written so far (what the file got, once closed)."""
        if self._result is not None:
            return self._result
        return ContentLightLevel(cll_value(self._max_cll), cll_value(self._max_fall))

    def write(self, i420_u16: npt.ArrayLike) -> None:
        """Encode one ``(3H/2, W)`` uint16 frame of 10-bit narrow-range codes.

        Raises:
            ValueError: wrong dtype, shape or size, or codes above 1023.
            VideoError: the writer is closed or the encoder failed.
        """
        enc = self._encoder
        if self._closed or enc is None:
            raise VideoError(f"{self.path}: writer is closed")
        a = checked_i420_u16(i420_u16)
        if a.shape != (3 * self.height // 2, self.width):
            raise ValueError(
                f"frame shape {a.shape} does not match {self.width}x{self.height} "
                f"(expected {(3 * self.height // 2, self.width)})"
            )
        if int(a.max()) > _HEVC_MAX_10BIT:
            raise ValueError(f"10-bit codes must be <= 1023, got {int(a.max())}")
        cll, fall = frame_light_levels(a)
        frame = VideoFrame.from_ndarray(np.ascontiguousarray(a), format="yuv420p10le")
        frame.pts = self._frames
        frame.time_base = 1 / self.frame_rate  # the codec's; the muxer may change the stream's
        frame.color_primaries, frame.color_trc, frame.colorspace, frame.color_range = 9, 16, 9, 1
        try:
            self._mux_encoded(enc, enc.stream.encode(frame))
        except av.error.FFmpegError as e:
            raise VideoError(f"{self.path}: encoding failed ({ffmpeg_reason(e)})") from e
        self._frames += 1
        self._max_cll, self._max_fall = max(self._max_cll, cll), max(self._max_fall, fall)

    def close(self) -> None:
        """Finish the file: flush the encoder, add the HDR10 metadata, copy audio.

        Idempotent.

        Raises:
            VideoError: no frame was written (no file is made), or finishing
                failed (the encoded temporary file is then kept and named in
                the message, so hours of encoding are not lost).
        """
        self._finish(aborting=False)

    def __enter__(self) -> Hdr10VideoWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._finish(aborting=exc_type is not None)

    # -- internals ---------------------------------------------------------

    def _mux_encoded(self, enc: _Encoder, packets: list[AnyPacket]) -> None:
        for packet in packets:
            frame_ticks = max(1, round(1 / (self.frame_rate * packet.time_base))) if packet.time_base else 1
            # libx265 leaves packet durations at 0; MP4 needs them for the
            # last sample (and refuses a 2-frame stream without).
            if not packet.duration:
                packet.duration = frame_ticks
            # With a single frame x265 returns an uninitialised DTS. A DTS is
            # never after the PTS and never more than the reorder depth (x265:
            # at most 16 B-frames) before it; repair one that is, keeping DTS
            # increasing.
            pts, dts = packet.pts, packet.dts
            if pts is not None and (dts is None or dts > pts or pts - dts > 64 * frame_ticks):
                packet.dts = pts if self._last_dts is None else max(pts, self._last_dts + 1)
            self._last_dts = packet.dts
        enc.container.mux(packets)

    def _check_audio(self, source: Path) -> None:
        with open_input(source) as src:
            audio = _first_audio_stream(src)
            if audio is None:
                return
            try:
                # add_stream_from_template checks the codec against the muxer.
                with av.open(os.devnull, mode="w", format=_muxer(self._format)) as probe:
                    probe.add_stream_from_template(audio)
            except ValueError as e:
                hint = "; write .mkv instead" if self._format == "mp4" else ""
                raise VideoError(
                    f"{source}: its audio ({audio.codec_context.name}) cannot be copied "
                    f"into .{self._format}{hint}"
                ) from e

    def _finish(self, aborting: bool) -> None:
        if self._closed:
            return
        self._closed = True
        enc, self._encoder = self._encoder, None
        keep_encoded = False
        try:
            if enc is not None:
                try:
                    self._mux_encoded(enc, enc.stream.encode(None))
                finally:
                    enc.container.close()
            if self._frames == 0:
                if not aborting:
                    raise VideoError(f"{self.path}: no frames were written; no file created")
                return
            result = ContentLightLevel(cll_value(self._max_cll), cll_value(self._max_fall))
            keep_encoded = True
            insert_hdr_boxes(self._encoded, self.mastering_display, result)
            self._remux(result)
            os.replace(self._partial, self.path)
            self._result = result
            keep_encoded = False
        except (av.error.FFmpegError, OSError, VideoError) as e:
            if not keep_encoded:
                if isinstance(e, VideoError):
                    raise
                raise VideoError(f"{self.path}: encoding failed ({ffmpeg_reason(e)})") from e
            raise VideoError(
                f"{self.path}: finishing the file failed ({ffmpeg_reason(e)}); "
                f"the encoded video is kept in {self._encoded}"
            ) from e
        finally:
            self._partial.unlink(missing_ok=True)
            if not keep_encoded:
                self._encoded.unlink(missing_ok=True)

    def _remux(self, cll: ContentLightLevel) -> None:
        remux_hdr10(self._encoded, self._partial, cll, self.audio_source, Fraction(self._frames) / self.frame_rate)


def remux_hdr10(
    encoded: Path, output: Path, cll: ContentLightLevel, audio_source: Path | None, video_end: Fraction
) -> None:
    """An MP4 of HEVC with ``mdcv``/``clli`` boxes (+ ``audio_source``'s audio) -> ``output`` (``.mkv``/``.mp4``).

    The content-light-level SEI messages (in ``hvcC`` and at every keyframe)
    are rewritten with ``cll``; the source's first audio stream is copied up
    to ``video_end`` seconds, in sync. Nothing is decoded or encoded.
    """
    fmt = output.suffix.lower().lstrip(".")
    options = {"movflags": "+faststart"} if fmt == "mp4" else {}
    with av.open(str(encoded), mode="r") as src, av.open(
        str(output), mode="w", format=_muxer(fmt), options=options
    ) as out:
        ivideo = src.streams.video[0]
        # The template carries codecpar, including the mdcv/clli side data that
        # the MP4 demuxer read from the boxes added by insert_hdr_boxes.
        ovideo = out.add_stream_from_template(ivideo)
        extradata = ivideo.codec_context.extradata or b""
        length_size = (extradata[21] & 3) + 1 if len(extradata) > 22 else 4
        if extradata:
            ovideo.codec_context.extradata = patch_hvcc(extradata, cll)
        if fmt == "mp4":
            ovideo.codec_tag = "hvc1"  # what Apple players require for HEVC

        def video_packets() -> Iterator[tuple[Fraction, AnyPacket]]:
            for packet in src.demux(ivideo):
                if packet.size == 0:
                    continue
                patched = patch_length_prefixed(memoryview(packet), length_size, cll)
                out_packet: AnyPacket = packet
                if patched is not None:
                    out_packet = av.Packet(patched)
                    out_packet.pts, out_packet.dts = packet.pts, packet.dts
                    out_packet.duration, out_packet.time_base = packet.duration, packet.time_base
                    out_packet.is_keyframe = packet.is_keyframe
                out_packet.stream = ovideo
                yield _packet_time(out_packet), out_packet

        with ExitStack() as stack:
            streams: list[Iterator[tuple[Fraction, AnyPacket]]] = [video_packets()]
            if audio_source is not None:
                audio_in = stack.enter_context(open_input(audio_source))
                iaudio = _first_audio_stream(audio_in)
                if iaudio is not None:
                    oaudio = out.add_stream_from_template(iaudio)
                    streams.append(_audio_packets(audio_in, iaudio, oaudio, video_end))
            # Interleave by decode time, as a muxer expects.
            for _, packet in heapq.merge(*streams, key=lambda item: item[0]):
                out.mux(packet)


def _packet_time(packet: AnyPacket) -> Fraction:
    ts = packet.dts if packet.dts is not None else packet.pts
    return Fraction(ts or 0) * Fraction(packet.time_base)


def _audio_packets(
    src: InputContainer, iaudio: AudioStream, oaudio: AudioStream, video_end: Fraction
) -> Iterator[tuple[Fraction, AnyPacket]]:
    """The source's audio packets for the output, in decode order.

    The output video starts at 0 while the source's video may start later
    (MPEG-TS, edited MP4), so audio is shifted by the source video's start
    time to keep the sync; packets starting at or after ``video_end`` are
    dropped (a cut-short video gets cut-short audio).
    """
    tb = Fraction(iaudio.time_base or Fraction(1, 1))
    shift = Fraction(0)
    if src.streams.video:
        sv = src.streams.video[0]
        if sv.start_time is not None and sv.time_base is not None:
            shift = sv.start_time * Fraction(sv.time_base)
    elif src.start_time is not None:
        shift = Fraction(src.start_time, av.time_base)
    offset = round(shift / tb)
    for packet in src.demux(iaudio):
        if packet.size == 0 or packet.pts is None:
            continue
        if (packet.pts - offset) * tb >= video_end:
            break
        packet.pts -= offset
        if packet.dts is not None:
            packet.dts -= offset
        packet.stream = oaudio
        yield _packet_time(packet), packet
