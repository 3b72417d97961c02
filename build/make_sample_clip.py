#!/usr/bin/env python3
"""Render the committed demo clip ``client/samples/sdr_sample.mp4`` from a real HDR scene.

A 3 s, 10 fps, 224x128 8-bit SDR BT.709 clip: a slow horizontal pan across
the central latitude band of a CC0 Poly Haven HDRI (equirectangular, linear
BT.709 radiance), made the way SDR is made from an HDR master, entirely with
:mod:`sritm_core.colour`:

1. scale the scene so the log-average luminance of the clip is 26 cd/m^2;
2. linear BT.709 -> BT.2020, PQ inverse EOTF (an HDR master, up to 10000 cd/m^2);
3. BT.2390 EETF down to a 1000 cd/m^2 master;
4. BT.2446-1 Method A HDR -> SDR (BT.2020 gamma R'G'B');
5. BT.1886 decode (100 cd/m^2), BT.2020 -> BT.709 with a hard gamut clip,
   BT.1886 encode; BT.709 Y'CbCr narrow range, 4:2:0 (centre siting), 8 bits;
6. H.264 (libx264, CRF 18, preset medium, yuv420p, tagged BT.709/BT.709/BT.709/tv, chroma
   location centre) with a quiet 440 Hz AAC tone, so audio pass-through can
   be demonstrated.

The input lives in ../shared (developers and CI only); the output is
committed, so users never need it. Run from the repository root:

    .venv/bin/python -m build.make_sample_clip
"""

from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import numpy.typing as npt

from sritm_core.colour import (
    BT709,
    bt709_to_bt2020,
    bt2390_eetf,
    hdr10_to_sdr_bt709,
    pq_inverse_eotf,
    quantize_i420,
    rgb_to_codes,
)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SCENES = ROOT.parent / "shared" / "data" / "hdr-scenes"
DEFAULT_OUT = ROOT / "client" / "samples" / "sdr_sample.mp4"

WIDTH, HEIGHT = 224, 128
FPS = 10
FRAMES = 30
DOWNSCALE = 2  # render at 2x and area-average down: a cleaner image than sampling
PAN_STEP = 3  # source pixels per frame (1.5 output pixels, ~1 degree of longitude)
LOG_AVERAGE_CD_M2 = 26.0
HDR_MASTER_PEAK = 1000.0
SDR_PEAK = 100.0
AUDIO_RATE = 48_000
AUDIO_HZ = 440.0
AUDIO_DBFS = -30.0

FloatArray = npt.NDArray[np.float64]


def load_scene(path: Path) -> FloatArray:
    """Linear RGB (BT.709 primaries, relative radiance) of a Radiance/EXR file."""
    bgr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if bgr is None:
        raise SystemExit(f"cannot read {path}")
    rgb = np.ascontiguousarray(bgr[..., 2::-1], dtype=np.float64)
    return np.maximum(rgb, 0.0)


def pan_windows(scene: FloatArray, start_x: int) -> list[FloatArray]:
    """FRAMES windows of the central latitude band, panning right (wrapping around)."""
    h, w, _ = scene.shape
    win_h, win_w = HEIGHT * DOWNSCALE, WIDTH * DOWNSCALE
    top = (h - win_h) // 2
    band = scene[top : top + win_h]
    frames = []
    for i in range(FRAMES):
        cols = (start_x + i * PAN_STEP + np.arange(win_w)) % w
        window = band[:, cols]
        small = cv2.resize(window, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)
        frames.append(np.asarray(small, dtype=np.float64))
    return frames


def luminance_709(rgb: FloatArray) -> FloatArray:
    """BT.709 luminance of linear RGB (the Y row of the RGB->XYZ matrix)."""
    y: FloatArray = rgb @ np.array([BT709.kr, 1.0 - BT709.kr - BT709.kb, BT709.kb])
    return y


def exposure_for(frames: list[FloatArray], target_cd_m2: float) -> float:
    """Scale that makes the clip's log-average (geometric mean) luminance target_cd_m2."""
    y = np.concatenate([luminance_709(f).ravel() for f in frames])
    eps = 1e-6 * float(y.max())
    log_avg = float(np.exp(np.mean(np.log(y + eps))))
    return target_cd_m2 / log_avg


def sdr_i420(scene_cd_m2: FloatArray) -> npt.NDArray[np.uint8]:
    """Linear BT.709 scene light in cd/m^2 -> 8-bit BT.709 SDR I420, via an HDR10 master."""
    hdr_pq = pq_inverse_eotf(bt709_to_bt2020(scene_cd_m2))
    master_pq = bt2390_eetf(hdr_pq, source_peak=10000.0, target_peak=HDR_MASTER_PEAK)
    rgb_709 = np.clip(hdr10_to_sdr_bt709(master_pq, hdr_peak=HDR_MASTER_PEAK, sdr_peak=SDR_PEAK), 0.0, 1.0)
    packed: npt.NDArray[np.uint8] = quantize_i420(rgb_to_codes(rgb_709, BT709, 8), 8).astype(np.uint8, copy=False)
    return packed


def tone(seconds: float) -> npt.NDArray[np.float32]:
    """A quiet sine with 50 ms fades, (1, samples) float32 mono."""
    n = round(seconds * AUDIO_RATE)
    t = np.arange(n) / AUDIO_RATE
    ramp = np.clip(np.minimum(t, seconds - t) / 0.05, 0.0, 1.0)
    amp = 10 ** (AUDIO_DBFS / 20)
    samples: npt.NDArray[np.float32] = (amp * ramp * np.sin(2 * np.pi * AUDIO_HZ * t)).astype(np.float32)
    return samples[None, :]


def write_clip(out: Path, frames: list[npt.NDArray[np.uint8]]) -> None:
    """Encode the I420 ``frames`` as H.264 (tagged BT.709, narrow range) with the tone as AAC, into ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with av.open(
        str(out), mode="w", format="mp4", options={"movflags": "+faststart"}
    ) as c:
        c.metadata["title"] = "sritm demo clip (see client/samples/README.md)"
        vs = c.add_stream("libx264", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        vs.codec_context.color_primaries = 1  # BT.709
        vs.codec_context.color_trc = 1
        vs.codec_context.colorspace = 1
        vs.codec_context.color_range = 1  # tv / narrow
        vs.codec_context.thread_count = 1
        # thread_count=1 and asm=0 make the bitstream reproducible byte for byte:
        # with its assembly on, this x264 build's output varied between runs
        # (it depended on the heap layout). 30 tiny frames encode in no time anyway.
        vs.options = {
            "crf": "18",
            "preset": "medium",
            "x264-params": "colorprim=bt709:transfer=bt709:colormatrix=bt709:range=tv:chromaloc=1:asm=0",
        }
        aus = c.add_stream("aac", rate=AUDIO_RATE, layout="mono")
        aus.bit_rate = 48_000
        for i, buf in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(buf, format="yuv420p")
            vf.pts = i
            vf.time_base = Fraction(1, FPS)
            c.mux(vs.encode(vf))
        c.mux(vs.encode(None))
        samples = tone(FRAMES / FPS)
        frame_size = aus.codec_context.frame_size or 1024
        for start in range(0, samples.shape[1], frame_size):
            chunk = np.ascontiguousarray(samples[:, start : start + frame_size])
            af = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
            af.sample_rate = AUDIO_RATE
            af.pts = start
            af.time_base = Fraction(1, AUDIO_RATE)
            c.mux(aus.encode(af))
        c.mux(aus.encode(None))


def main() -> None:
    """Render the clip from the scene named on the command line."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scene", type=Path, default=DEFAULT_SCENES / "rooitou_park.hdr")
    ap.add_argument("--start-x", type=int, default=380, help="left edge of the first window, source pixels")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()

    windows = pan_windows(load_scene(args.scene), args.start_x)
    scale = exposure_for(windows, LOG_AVERAGE_CD_M2)
    frames = [sdr_i420(w * scale) for w in windows]
    write_clip(args.out, frames)
    print(f"{args.out}: {args.out.stat().st_size} bytes, {FRAMES} frames {WIDTH}x{HEIGHT} "
          f"@ {FPS} fps, exposure x{scale:.4g}")


if __name__ == "__main__":
    main()
