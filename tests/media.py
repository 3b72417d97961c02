"""Real media files for the tests: small SDR clips written with PyAV, and ffprobe's view of a file."""

from __future__ import annotations

import json
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

FFPROBE = shutil.which("ffprobe")
needs_ffprobe = pytest.mark.skipif(FFPROBE is None, reason="ffprobe is not installed (`make setup` installs ffmpeg)")

W, H, N, FPS = 64, 48, 10, 10


def sdr_rgb(i: int, w: int = W, h: int = H) -> np.ndarray:
    """Frame i of a small test pattern: a red level that rises (and wraps), a green bar that grows."""
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[..., 0] = 20 * i % 256  # wraps on long clips, so frames stay distinct
    rgb[:, : 5 * i + 5, 1] = 200
    return rgb


def write_sdr(
    path: Path,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    n: int = N,
    w: int = W,
    h: int = H,
    audio: str | None = None,
    audio_seconds: float = 1.0,
    keyframe_every: int | None = None,
) -> list[np.ndarray]:
    """Write an n-frame clip with PyAV (x264: B-frames, a keyframe every ``keyframe_every``); returns the RGB frames."""
    frames = [sdr_rgb(i, w, h) for i in range(n)]
    with av.open(str(path), "w") as c:
        vs = c.add_stream(codec, rate=FPS)
        vs.width, vs.height, vs.pix_fmt = w, h, pix_fmt
        if codec == "libx264":
            vs.options = {"crf": "10", "preset": "ultrafast"}
            if keyframe_every:
                vs.options = {**vs.options, "g": str(keyframe_every), "keyint_min": str(keyframe_every), "bf": "2"}
        aus = c.add_stream(audio, rate=48000, layout="mono") if audio else None
        if aus is not None and audio == "tta":
            aus.codec_context.format = "s16"
        for i, rgb in enumerate(frames):
            f = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=pix_fmt)
            f.pts = i
            c.mux(vs.encode(f))
        c.mux(vs.encode(None))
        if aus is not None:
            size = aus.codec_context.frame_size or 1024
            total = int(48000 * audio_seconds)
            t = np.arange(total, dtype=np.float32) / 48000
            tone = (0.05 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            fmt = aus.codec_context.format.name
            samples = (tone * 32767).astype(np.int16) if fmt == "s16" else tone
            for start in range(0, total, size):
                af = av.AudioFrame.from_ndarray(samples[None, start : start + size], format=fmt, layout="mono")
                af.sample_rate, af.pts, af.time_base = 48000, start, Fraction(1, 48000)
                c.mux(aus.encode(af))
            c.mux(aus.encode(None))
    return frames


def ffprobe(path: Path, *args: str) -> dict[str, Any]:
    assert FFPROBE is not None
    out = subprocess.run(
        [FFPROBE, "-v", "error", *args, "-of", "json", str(path)],
        check=True, capture_output=True, text=True, timeout=30,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def side_data(entries: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [e for e in entries if e.get("side_data_type") == kind]
    assert found, f"no {kind!r} in {entries}"
    return found[0]


def decoded_frame_count(path: Path) -> int:
    probe = ffprobe(path, "-count_frames", "-select_streams", "v:0", "-show_entries", "stream=nb_read_frames")
    return int(probe["streams"][0]["nb_read_frames"])
