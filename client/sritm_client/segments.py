"""Segment-parallel conversion: ``sritm convert --segment I/N`` makes part files, ``sritm concat`` joins them.

A film is cut into N frame-exact parts, one per process (a Kubernetes Indexed
Job's pods, ``deploy/k8s/jobs/``), each converted against the Service as an
ordinary stream, and joined without re-encoding. Part I holds frames
``[(I-1)*T//N, I*T//N)`` of the T frames of the source's first video stream.

Every part gets a manifest beside it, ``PART.sritm.json``, written only once
the part is complete: it names the segment, the source, the frames, the
settings and the part's MaxCLL/MaxFALL. ``concat`` checks the parts against
one another through their manifests (so a missing, repeated, misordered,
unfinished or mismatched part is one clear error, not a broken film), takes
the film's MaxCLL/MaxFALL as the largest of the parts', and copies the
source's audio once, whole.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from fractions import Fraction
from pathlib import Path

import av
import av.error

from sritm_client.errors import SritmError
from sritm_client.video.common import ffmpeg_reason
from sritm_client.video.hdr10 import ContentLightLevel, insert_hdr_boxes, mastering_display_for, patch_hvcc
from sritm_client.video.reader import open_input, probe_video
from sritm_client.video.writer import remux_hdr10

MANIFEST_SUFFIX = ".sritm.json"
_SEGMENT = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


class SegmentError(SritmError):
    """Parts that cannot be made or joined; the message names the part and the problem."""


@dataclass(frozen=True)
class Segment:
    """The ``index``-th (from 1) of ``count`` equal parts of a video."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Segment:
        """``"I/N"`` (1 <= I <= N), or a SegmentError saying what is wrong."""
        match = _SEGMENT.match(text)
        if not match:
            raise SegmentError(f"--segment takes I/N (e.g. 2/8), not {text!r}")
        index, count = int(match[1]), int(match[2])
        if count < 1 or not 1 <= index <= count:
            raise SegmentError(f"--segment {text}: I must be from 1 to N, and N at least 1")
        return cls(index, count)

    def frames(self, total: int) -> range:
        """This part's frames of a ``total``-frame video."""
        if total < self.count:
            raise SegmentError(f"a {total}-frame video cannot be cut into {self.count} parts")
        return range((self.index - 1) * total // self.count, self.index * total // self.count)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def source_frame_count(source: Path, timestamps: list[int] | None) -> int:
    """The exact number of frames of ``source``'s video, from its presentation ``timestamps``.

    Counted from the packets (headers can be wrong); from the headers only for a file without timestamps.
    """
    if timestamps is not None:
        return len(timestamps)
    count = probe_video(source).frame_count
    if count is None:
        raise SegmentError(f"{source}: its frames cannot be counted without decoding (no timestamps, no count)")
    return count


@dataclass(frozen=True)
class PartManifest:
    """What ``PART.sritm.json`` records about one part (see the module docstring).

    Attributes:
        segment, segments: this is part ``segment`` of ``segments``.
        source: the source video's absolute path (where ``concat`` finds the audio).
        source_frames: the source's frame count.
        first_frame, frames: the part holds source frames ``[first_frame, first_frame + frames)``.
        width, height, frame_rate: the output's size and rate (rate as ``"num/den"``).
        scale, convention, peak_nits: the conversion's settings; every part must share them.
        encoding: ``"hevc"`` (``.mkv``/``.mp4``) or ``"yuv420p10le"`` (``.yuv``).
        max_cll, max_fall: the part's content light level (0 for raw parts).
    """

    segment: int
    segments: int
    source: str
    source_frames: int
    first_frame: int
    frames: int
    width: int
    height: int
    frame_rate: str
    scale: int
    convention: str
    peak_nits: float
    encoding: str
    max_cll: int = 0
    max_fall: int = 0

    def write_beside(self, part: Path) -> None:
        """Writes the manifest next to ``part``, atomically: it exists only for a finished part."""
        path = manifest_path(part)
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        temporary.write_text(json.dumps(asdict(self), indent=2) + "\n")
        os.replace(temporary, path)

    @classmethod
    def read_beside(cls, part: Path) -> PartManifest:
        """The manifest of ``part``, or a SegmentError naming the part."""
        path = manifest_path(part)
        if not part.is_file():
            raise SegmentError(f"{part}: no such part")
        if not path.is_file():
            raise SegmentError(f"{part} has no {path.name}: it is unfinished or not made by sritm convert --segment")
        try:
            data = json.loads(path.read_text())
            return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})
        except (ValueError, TypeError, KeyError) as error:
            raise SegmentError(f"{path} is not a part manifest ({error})") from None

    @property
    def rate(self) -> Fraction:
        """``frame_rate`` as a Fraction."""
        return Fraction(self.frame_rate)


def manifest_path(part: Path) -> Path:
    """Where the manifest of ``part`` lives."""
    return part.with_name(part.name + MANIFEST_SUFFIX)


# --------------------------------------------------------------------------
# Joining


_SHARED = ("source", "source_frames", "segments", "width", "height", "frame_rate", "scale", "convention",
           "peak_nits", "encoding")


def checked_parts(parts: Sequence[Path]) -> list[PartManifest]:
    """The parts' manifests, once they are shown to be the whole film, each part once, in order.

    Raises:
        SegmentError: a part is missing, repeated, out of order, unfinished, or from another conversion.
    """
    if not parts:
        raise SegmentError("give the parts to join")
    manifests = [PartManifest.read_beside(part) for part in parts]
    first = manifests[0]
    for part, manifest in zip(parts, manifests):
        for name in _SHARED:
            if getattr(manifest, name) != getattr(first, name):
                raise SegmentError(f"{part} is from another conversion than {parts[0]}: its {name} is "
                                   f"{getattr(manifest, name)!r}, not {getattr(first, name)!r}")
    seen: dict[int, Path] = {}
    for part, manifest in zip(parts, manifests):
        if manifest.segment in seen:
            raise SegmentError(f"part {manifest.segment}/{manifest.segments} is given twice: {seen[manifest.segment]} "
                               f"and {part}")
        seen[manifest.segment] = part
    missing = [str(i) for i in range(1, first.segments + 1) if i not in seen]
    if missing:
        raise SegmentError(f"part(s) {', '.join(missing)} of {first.segments} are missing")
    for position, (part, manifest) in enumerate(zip(parts, manifests), start=1):
        if manifest.segment != position:
            raise SegmentError(f"the parts are out of order: {part} is part {manifest.segment}/{manifest.segments} "
                               f"but comes at place {position}; give them as 1..{first.segments}")
    expected_first = 0
    for part, manifest in zip(parts, manifests):
        if manifest.first_frame != expected_first:
            raise SegmentError(f"{part} starts at frame {manifest.first_frame}, not {expected_first}")
        expected_first += manifest.frames
    if expected_first != first.source_frames:
        raise SegmentError(f"the parts hold {expected_first} frames; the source has {first.source_frames}")
    return manifests


def concat_parts(output: Path, parts: Sequence[Path], *, audio_source: Path | None | bool = True) -> int:
    """Joins the parts of one ``--segment`` conversion into ``output`` without re-encoding; returns the frames.

    Args:
        output: ``.mkv``/``.mp4`` for HEVC parts, ``.yuv`` for raw ones.
        parts: every part, in order 1..N.
        audio_source: where the audio comes from: True for the source the parts name, a path for another
            copy of it, False or None for no audio. Raw output never has audio.

    Raises:
        SegmentError: the parts do not make one film (see :func:`checked_parts`), the output does not suit them,
            or joining fails.
    """
    manifests = checked_parts(parts)
    first = manifests[0]
    kind = output.suffix.lower()
    if first.encoding == "yuv420p10le":
        if kind != ".yuv":
            raise SegmentError(f"raw .yuv parts join into a .yuv file, not {output.name}")
        _concat_raw(output, parts, manifests)
        return first.source_frames
    if kind not in (".mkv", ".mp4"):
        raise SegmentError(f"HEVC parts join into .mkv or .mp4, not {output.name}")
    audio = _audio_path(first, audio_source)
    cll = ContentLightLevel(max(m.max_cll for m in manifests), max(m.max_fall for m in manifests))
    tag = secrets.token_hex(4)
    joined = output.with_name(f".{output.name}.{tag}.concat.mp4")
    partial = output.with_name(f".{output.name}.{tag}.partial{kind}")
    try:
        _join_hevc(joined, parts, first.rate, cll)
        insert_hdr_boxes(joined, mastering_display_for(first.peak_nits), cll)
        remux_hdr10(joined, partial, cll, audio, Fraction(first.source_frames) / first.rate)
        os.replace(partial, output)
    except (av.error.FFmpegError, OSError) as error:
        raise SegmentError(f"joining into {output} failed ({ffmpeg_reason(error)})") from None
    finally:
        joined.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)
    return first.source_frames


def _audio_path(first: PartManifest, audio_source: Path | None | bool) -> Path | None:
    if audio_source is False or audio_source is None:
        return None
    path = Path(first.source) if audio_source is True else Path(audio_source)
    if not path.is_file():
        raise SegmentError(f"the source {path} (for the audio) is not there; give --audio PATH or --no-audio")
    return path


def _concat_raw(output: Path, parts: Sequence[Path], manifests: Sequence[PartManifest]) -> None:
    frame_bytes = manifests[0].width * manifests[0].height * 3 // 2 * 2
    for part, manifest in zip(parts, manifests):
        if part.stat().st_size != manifest.frames * frame_bytes:
            raise SegmentError(f"{part} has {part.stat().st_size} bytes, not the {manifest.frames} frames its "
                               f"manifest names: re-run part {manifest.segment}/{manifest.segments}")
    temporary = output.with_name(f".{output.name}.{secrets.token_hex(4)}.part")
    try:
        with open(temporary, "wb") as out:
            for part in parts:
                with open(part, "rb") as source:
                    while chunk := source.read(1 << 24):
                        out.write(chunk)
        os.replace(temporary, output)
    finally:
        temporary.unlink(missing_ok=True)


def _part_positions(part: Path, rate: Fraction) -> tuple[list[int], bytes]:
    """A part's packets' presentation positions in frames, in decode order, and its hvcC (demuxed only)."""
    with open_input(part) as container:
        stream = container.streams.video[0]
        time_base = Fraction(stream.time_base or Fraction(1, 1))
        timestamps, keyframe = [], None
        for packet in container.demux(stream):
            if not packet.size:
                continue
            if packet.pts is None:
                raise SegmentError(f"{part} has a video packet without a timestamp")
            keyframe = packet.is_keyframe if keyframe is None else keyframe
            timestamps.append(packet.pts)
        if not timestamps:
            raise SegmentError(f"{part} has no video packets")
        if not keyframe:
            raise SegmentError(f"{part} does not start with a keyframe")
        start = min(timestamps)
        return [round((pts - start) * time_base * rate) for pts in timestamps], bytes(
            stream.codec_context.extradata or b"")


def _join_hevc(joined: Path, parts: Sequence[Path], rate: Fraction, cll: ContentLightLevel) -> None:
    """Every part's HEVC packets, renumbered as one stream, into the MP4 ``joined`` (no decoding or encoding).

    Decode timestamps are rebuilt for the joined stream: the presentation
    positions in order, delayed by the deepest reordering of any part, so they
    increase across the joins and never pass a presentation time. Two
    demuxing passes, so only one packet is held at a time.
    """
    layouts = [_part_positions(part, rate) for part in parts]
    reference = patch_hvcc(layouts[0][1], cll)
    for part, (_, extradata) in zip(parts, layouts):
        if patch_hvcc(extradata, cll) != reference:
            raise SegmentError(f"{part} was encoded with other settings than {parts[0]} (its HEVC parameter "
                               "sets differ): re-run it with the same --crf and --preset")
    delay = max(max(shown - position for shown, position in zip(sorted(positions), positions))
                for positions, _ in layouts)
    with av.open(str(joined), mode="w", format="mp4") as out:
        ostream = None
        offset = 0
        for part, (positions, _) in zip(parts, layouts):
            with open_input(part) as source:
                stream = source.streams.video[0]
                if ostream is None:
                    ostream = out.add_stream_from_template(stream)
                packets = (packet for packet in source.demux(stream) if packet.size)
                for packet, position, shown in zip(packets, positions, sorted(positions)):
                    packet.time_base = 1 / rate
                    packet.pts, packet.dts, packet.duration = offset + position, offset + shown - delay, 1
                    packet.stream = ostream
                    out.mux(packet)
            offset += len(positions)
