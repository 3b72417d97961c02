"""Video file I/O for the client: read SDR input (``reader``), write HDR10 output (``writer``, ``hdr10``).

numpy + PyAV only (no torch, no ffmpeg CLI). Colour maths comes from
:mod:`sritm_core.colour`; nothing here re-implements a transfer function.

Reading
    :func:`probe_video` describes a file; :func:`read_sdr_frames` decodes its
    first video stream to 8-bit I420 (yuv420p, narrow range). Sources in another
    8-bit layout (yuv444p, yuvj420p, nv12, rgb24, ...) are converted to yuv420p
    by libswscale (full-range "J" sources are moved to narrow range, RGB sources
    are matrixed with BT.709). Sources with more than 8 bits per component raise
    :class:`VideoError`. Frames come back at their decoded size, odd sizes
    included: nothing is padded here (the CLI pads).

Writing
    :class:`Hdr10VideoWriter` encodes 10-bit I420 frames to HEVC Main 10
    (libx265) in ``.mkv`` or ``.mp4`` with the HDR10 signalling: BT.2020
    primaries, PQ transfer, BT.2020 non-constant-luminance matrix, limited range,
    SMPTE ST 2086 mastering-display metadata and CTA-861.3 MaxCLL/MaxFALL, both
    in the HEVC SEI and at container level (Matroska ``Colour`` elements, MP4
    ``mdcv``/``clli`` boxes).

How MaxCLL/MaxFALL get into the file
    They are only known once the last frame is written, and PyAV 18 can
    neither set a stream's container-level side data (it only exposes the
    display matrix) nor change x265's parameters once the encoder is open. So
    the writer

    1. encodes into a hidden temporary MP4 next to the output, x265 emitting
       its HDR10 SEI (mastering display + a placeholder content-light-level
       message), and measures every frame as it goes (:func:`frame_light_levels`);
    2. at :meth:`Hdr10VideoWriter.close`, inserts ``mdcv`` and ``clli`` boxes
       into that file's HEVC sample entry (moov is written after mdat, so only
       moov is rewritten and no chunk offset moves);
    3. remuxes it with PyAV into the final container: FFmpeg's MP4 demuxer
       turns the boxes into stream side data, which travels with the stream
       template (``add_stream_from_template``) and which the Matroska and MP4
       muxers write as container metadata; on the way, the content-light-level
       SEI messages (in ``hvcC`` and at every keyframe) are rewritten with the
       measured values, and the audio of ``audio_source`` is stream-copied and
       interleaved.

    Nothing is encoded twice: the remux is I/O only. The output appears
    atomically (written under a temporary name, then renamed). No ffmpeg CLI
    is needed: Debian's ffmpeg 5.1 could not set the values either (stream
    copy only carries what the input container already has).
"""

from sritm_client.video.common import VideoError
from sritm_client.video.hdr10 import (
    P3D65_1000_NITS,
    ContentLightLevel,
    MasteringDisplay,
    content_light_level,
    frame_light_levels,
    mastering_display_for,
)
from sritm_client.video.reader import SdrVideoFrame, VideoInfo, probe_video, read_sdr_frames
from sritm_client.video.writer import Hdr10VideoWriter

__all__ = [
    "VideoError",
    "VideoInfo",
    "probe_video",
    "SdrVideoFrame",
    "read_sdr_frames",
    "MasteringDisplay",
    "P3D65_1000_NITS",
    "mastering_display_for",
    "ContentLightLevel",
    "frame_light_levels",
    "content_light_level",
    "Hdr10VideoWriter",
]
