"""client/sritm_client/video.py on real files: PyAV writes the inputs, Debian's ffprobe checks the outputs."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from sritm_client.video import (
    P3D65_1000_NITS,
    ContentLightLevel,
    Hdr10VideoWriter,
    VideoError,
    content_light_level,
    frame_light_levels,
    probe_video,
    read_sdr_frames,
)
from sritm_core.colour import pack_i420

from media import FPS, H, N, W, decoded_frame_count, ffprobe, needs_ffprobe, side_data, write_sdr

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "client" / "samples" / "sdr_sample.mp4"


# --------------------------------------------------------------------------
# helpers


def hdr_frame(i: int, w: int = W, h: int = H) -> np.ndarray:
    """A (3H/2, W) uint16 10-bit I420 frame: ramp, a moving bright block, varying chroma."""
    y = np.tile(np.linspace(64, 700, w), (h, 1)).astype(np.uint16)
    y[8:20, 4 * i : 4 * i + 12] = 900
    u = np.full((h // 2, w // 2), 512 + 10 * i, np.uint16)
    v = np.tile(np.linspace(300, 700, w // 2), (h // 2, 1)).astype(np.uint16)
    return pack_i420(y, u, v)


def hvcc_content_light_levels(hvcc: bytes) -> list[tuple[int, int]]:
    """(MaxCLL, MaxFALL) of the content-light-level SEI NAL units stored in an hvcC record."""
    from sritm_client.video.hdr10 import rbsp_from_ebsp

    found, pos = [], 23
    for _ in range(hvcc[22]):
        nal_type, count = hvcc[pos] & 0x3F, int.from_bytes(hvcc[pos + 1 : pos + 3], "big")
        pos += 3
        for _ in range(count):
            size = int.from_bytes(hvcc[pos : pos + 2], "big")
            rbsp = rbsp_from_ebsp(hvcc[pos + 4 : pos + 2 + size])
            if nal_type == 39 and rbsp[:2] == bytes([144, 4]):
                found.append((int.from_bytes(rbsp[2:4], "big"), int.from_bytes(rbsp[4:6], "big")))
            pos += 2 + size
    return found


# --------------------------------------------------------------------------
# reading


def test_probe_and_read_8bit(tmp_path: Path) -> None:
    path = tmp_path / "in.mp4"
    rgb = write_sdr(path)
    info = probe_video(path)
    assert (info.width, info.height, info.frame_rate) == (W, H, Fraction(FPS))
    assert info.frame_count == N
    assert (info.pix_fmt, info.bit_depth, info.has_audio) == ("yuv420p", 8, False)
    assert info.duration == pytest.approx(N / FPS, abs=0.05)

    frames = list(read_sdr_frames(path))
    assert [f.index for f in frames] == list(range(N))
    assert all(b.pts > a.pts for a, b in zip(frames, frames[1:]))
    assert [f.time for f in frames] == pytest.approx([i / FPS for i in range(N)])
    for f, src in zip(frames, rgb):
        assert f.i420.shape == (3 * H // 2, W) and f.i420.dtype == np.uint8
        assert f.y.shape == (H, W) and f.u.shape == f.v.shape == (H // 2, W // 2)
        expected = av.VideoFrame.from_ndarray(src, format="rgb24").reformat(format="yuv420p").to_ndarray()
        assert np.abs(f.i420.astype(int) - expected).mean() < 2.0


def test_read_mkv_with_audio(tmp_path: Path) -> None:
    path = tmp_path / "in.mkv"
    write_sdr(path, audio="aac")
    info = probe_video(path)
    assert info.has_audio
    assert info.frame_count is None  # Matroska does not record it
    assert len(list(read_sdr_frames(path))) == N


def test_other_8bit_layouts_are_converted_to_narrow_yuv420p(tmp_path: Path) -> None:
    # Odd size, 4:4:4: planes come back at the decoded size, chroma ceil(H/2) x ceil(W/2).
    odd = tmp_path / "odd.mkv"
    write_sdr(odd, codec="ffv1", pix_fmt="yuv444p", w=63, h=47, n=3)
    assert probe_video(odd).pix_fmt == "yuv444p"
    frames = list(read_sdr_frames(odd))
    assert len(frames) == 3
    f = frames[2]
    assert (f.width, f.height) == (63, 47)
    assert f.y.shape == (47, 63) and f.u.shape == f.v.shape == (24, 32)
    with pytest.raises(ValueError, match="odd|even"):
        _ = f.i420
    # RGB input is matrixed with BT.709 (not swscale's default BT.601): pure red is Y'CbCr (63, 102, 240).
    rgb = tmp_path / "rgb.mkv"
    with av.open(str(rgb), "w") as c:
        vs = c.add_stream("ffv1", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = W, H, "bgr0"
        red = np.zeros((H, W, 3), np.uint8)
        red[..., 0] = 255
        c.mux(vs.encode(av.VideoFrame.from_ndarray(red, format="rgb24").reformat(format="bgr0")))
        c.mux(vs.encode(None))
    f = next(read_sdr_frames(rgb))
    assert (int(f.y[0, 0]), int(f.u[0, 0]), int(f.v[0, 0])) == (63, 102, 240)
    # Full-range JPEG input is moved to narrow range: black -> 16, never below.
    jpeg = tmp_path / "j.mkv"
    write_sdr(jpeg, codec="mjpeg", pix_fmt="yuvj420p", n=2)
    y0 = next(read_sdr_frames(jpeg)).y
    assert 14 <= int(y0[:, -8:].min()) <= 18  # black area (red level 0 in frame 0)


def test_ten_bit_input_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "ten.mkv"
    write_sdr(path, codec="ffv1", pix_fmt="yuv420p10le", n=2)
    info = probe_video(path)
    assert (info.pix_fmt, info.bit_depth) == ("yuv420p10le", 10)
    with pytest.raises(VideoError, match="10-bit input is not supported"):
        read_sdr_frames(path)


def test_unreadable_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.touch()
    garbage = tmp_path / "garbage.mkv"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n" * 50)
    good = tmp_path / "good.mp4"
    write_sdr(good)
    truncated = tmp_path / "truncated.mp4"  # moov is at the end: cut in half, nothing is left
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    audio_only = tmp_path / "audio.m4a"
    with av.open(str(audio_only), "w") as c:
        s = c.add_stream("aac", rate=48000, layout="mono")
        af = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="flt", layout="mono")
        af.sample_rate, af.pts = 48000, 0
        c.mux(s.encode(af))
        c.mux(s.encode(None))
    cases = {
        empty: "empty",
        garbage: "not a readable video",
        text: "not a readable video",
        truncated: "not a readable video",
        audio_only: "no video stream",
        tmp_path / "missing.mp4": "no such file",
        tmp_path: "directory",
    }
    for path, message in cases.items():
        for fn in (probe_video, read_sdr_frames):
            with pytest.raises(VideoError, match=message) as err:
                fn(path)
            assert isinstance(err.value, ValueError)
            assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_truncated_matroska_yields_the_decodable_frames(tmp_path: Path) -> None:
    good = tmp_path / "good.mkv"
    write_sdr(good)
    data = good.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: int(len(data) * 0.85)])
    frames = list(read_sdr_frames(cut))
    assert 0 < len(frames) < N
    headers_only = tmp_path / "headers_only.mkv"
    headers_only.write_bytes(data[: int(len(data) * 0.3)])
    with pytest.raises(VideoError, match="truncated or corrupt"):
        probe_video(headers_only)


def test_sample_clip() -> None:
    info = probe_video(SAMPLE)
    assert (info.width, info.height, info.frame_rate, info.frame_count) == (224, 128, Fraction(10), 30)
    assert info.has_audio and info.bit_depth == 8
    assert SAMPLE.stat().st_size < 300_000
    first = next(read_sdr_frames(SAMPLE))
    assert first.i420.shape == (192, 224)
    assert 40 < first.y.mean() < 200  # a real, exposed picture


# --------------------------------------------------------------------------
# light levels


def test_frame_light_levels() -> None:
    h, w = 8, 8
    neutral = np.full((h // 2, w // 2), 512, np.uint16)
    white = pack_i420(np.full((h, w), 940, np.uint16), neutral, neutral)
    assert frame_light_levels(white) == pytest.approx((10000.0, 10000.0))
    half = np.full((h, w), 64, np.uint16)
    half[:, : w // 2] = 940
    lo, avg = frame_light_levels(pack_i420(half, neutral, neutral))
    assert lo == pytest.approx(10000.0) and avg == pytest.approx(5000.0, rel=0.02)
    # Narrow-range code 723 is PQ 0.7523, i.e. about 1003 cd/m^2 (1000 cd/m^2 is PQ 0.7518).
    grey = pack_i420(np.full((h, w), 723, np.uint16), neutral, neutral)
    assert frame_light_levels(grey)[0] == pytest.approx(1003.0, abs=5.0)
    # Saturated red: max(R, G, B) counts, not luminance.
    red = pack_i420(np.full((h, w), 300, np.uint16), neutral, np.full((h // 2, w // 2), 900, np.uint16))
    cll, fall = frame_light_levels(red)
    assert cll == pytest.approx(fall, rel=1e-4) and cll > 1000.0
    assert content_light_level([white, grey]) == ContentLightLevel(10000, 10000)
    assert content_light_level([]) == ContentLightLevel(0, 0)


# --------------------------------------------------------------------------
# writing


@needs_ffprobe
@pytest.mark.parametrize("ext", ["mkv", "mp4"])
def test_hdr10_writer(tmp_path: Path, ext: str) -> None:
    source = tmp_path / "source.mp4"
    write_sdr(source, audio="aac", audio_seconds=1.0)
    frames = [hdr_frame(i) for i in range(6)]
    out = tmp_path / f"out.{ext}"
    with Hdr10VideoWriter(out, W, H, Fraction(FPS), audio_source=source, lossless=True, preset="ultrafast") as w:
        for f in frames:
            w.write(f)
    expected = content_light_level(frames)
    assert w.content_light_level == expected
    assert expected.max_cll > expected.max_fall > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["source.mp4", out.name])  # no temp left

    probe = ffprobe(out, "-show_streams", "-show_frames", "-read_intervals", "%+#1")
    video = [s for s in probe["streams"] if s["codec_type"] == "video"][0]
    assert video["codec_name"] == "hevc" and video["profile"] == "Main 10"
    assert video["pix_fmt"] == "yuv420p10le"
    assert (video["color_primaries"], video["color_transfer"], video["color_space"], video["color_range"]) == (
        "bt2020",
        "smpte2084",
        "bt2020nc",
        "tv",
    )
    assert (video["width"], video["height"], video["r_frame_rate"]) == (W, H, f"{FPS}/1")
    times = ffprobe(out, "-select_streams", "v:0", "-show_entries", "frame=pts_time")["frames"]
    # In .mkv (no negative timestamps) AAC priming (1024 samples) delays both streams alike.
    t0 = float(times[0]["pts_time"])
    assert t0 == pytest.approx(0.0 if ext == "mp4" else 1024 / 48000, abs=1e-3)
    assert [float(f["pts_time"]) - t0 for f in times] == pytest.approx([i / FPS for i in range(len(frames))])
    frame = [f for f in probe["frames"] if f["media_type"] == "video"][0]
    # The HEVC SEI (what decoders and TVs read) and the container (mdcv/clli boxes,
    # Matroska Colour elements) both carry the metadata.
    for where in (frame["side_data_list"], video["side_data_list"]):
        cll = side_data(where, "Content light level metadata")
        assert (cll["max_content"], cll["max_average"]) == (expected.max_cll, expected.max_fall)
        mdcv = side_data(where, "Mastering display metadata")
        assert Fraction(mdcv["max_luminance"]) == 1000 and Fraction(mdcv["min_luminance"]) == Fraction(1, 10000)
        assert Fraction(mdcv["green_x"]) == Fraction(P3D65_1000_NITS.green[0], 50000)
        assert Fraction(mdcv["white_point_y"]) == Fraction(16450, 50000)

    audio = [s for s in probe["streams"] if s["codec_type"] == "audio"]
    assert len(audio) == 1 and audio[0]["codec_name"] == "aac"  # copied, as in the source
    packets = ffprobe(out, "-show_entries", "packet=codec_type,pts_time")["packets"]  # in file order
    kinds = [p["codec_type"] for p in packets]
    audio_times = [float(p["pts_time"]) for p in packets if p["codec_type"] == "audio"]
    assert 0 < audio_times[-1] < len(frames) / FPS + 0.05  # cut at the end of the video
    assert kinds.index("audio") < len(kinds) - 1 - kinds[::-1].index("video")  # interleaved

    # Lossless x265: every decoded sample equals what was written, in order.
    with av.open(str(out)) as c:
        assert hvcc_content_light_levels(c.streams.video[0].codec_context.extradata or b"") == [
            (expected.max_cll, expected.max_fall)
        ]
        decoded = [f.to_ndarray(format="yuv420p10le") for f in c.decode(video=0)]
    assert len(decoded) == len(frames)
    for got, want in zip(decoded, frames):
        np.testing.assert_array_equal(got, want)


@needs_ffprobe
def test_lossy_writer_is_close(tmp_path: Path) -> None:
    frames = [hdr_frame(i) for i in range(4)]
    out = tmp_path / "lossy.mkv"
    with Hdr10VideoWriter(out, W, H, Fraction(24000, 1001), crf=12, preset="ultrafast") as w:
        for f in frames:
            w.write(f)
    assert ffprobe(out, "-show_streams")["streams"][0]["r_frame_rate"] == "24000/1001"
    times = ffprobe(out, "-show_entries", "frame=pts_time")["frames"]
    assert [float(f["pts_time"]) for f in times] == pytest.approx([i * 1001 / 24000 for i in range(4)], abs=1e-3)
    with av.open(str(out)) as c:
        decoded = [f.to_ndarray(format="yuv420p10le") for f in c.decode(video=0)]
    assert len(decoded) == 4
    for got, want in zip(decoded, frames):
        assert np.abs(got.astype(int) - want.astype(int)).mean() < 4.0


@needs_ffprobe
@pytest.mark.parametrize(("ext", "error"), [("mkv", RuntimeError), ("mp4", KeyboardInterrupt)])
def test_interrupted_write_leaves_a_playable_file(tmp_path: Path, ext: str, error: type[BaseException]) -> None:
    out = tmp_path / f"cut.{ext}"
    source = tmp_path / "source.mkv"
    write_sdr(source, audio="aac", audio_seconds=1.0)
    with pytest.raises(error):
        with Hdr10VideoWriter(out, W, H, FPS, audio_source=source, preset="ultrafast") as w:
            for i in range(10):
                if i == 3:
                    raise error("stop")
                w.write(hdr_frame(i))
    assert decoded_frame_count(out) == 3
    cll = side_data(ffprobe(out, "-show_streams")["streams"][0]["side_data_list"], "Content light level metadata")
    assert cll["max_content"] == content_light_level(hdr_frame(i) for i in range(3)).max_cll
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, source.name])


@pytest.mark.parametrize("values", [(0, 0), (256, 2), (1000, 400), (65535, 3)])
def test_content_light_level_sei_rewrite(values: tuple[int, int]) -> None:
    from sritm_client.video.hdr10 import ebsp_from_rbsp, patch_length_prefixed, rbsp_from_ebsp

    # A prefix SEI NAL (type 39) with a placeholder CLL message and a mastering-display one after it.
    rbsp = bytes([144, 4, 0, 0, 0, 0, 137, 24]) + bytes(range(24)) + b"\x80"
    nal = b"\x4e\x01" + ebsp_from_rbsp(rbsp)
    slice_nal = b"\x02\x01" + bytes(10)
    sample = b"".join(len(n).to_bytes(4, "big") + n for n in (nal, slice_nal))
    patched = patch_length_prefixed(sample, 4, ContentLightLevel(*values))
    assert patched is not None
    n = int.from_bytes(patched[:4], "big")
    new_nal = patched[4 : 4 + n]
    got = rbsp_from_ebsp(new_nal[2:])
    assert got[2:6] == values[0].to_bytes(2, "big") + values[1].to_bytes(2, "big")
    assert got[6:] == rbsp[6:]
    for i in range(len(new_nal) - 2):  # no start-code emulation left
        assert not (new_nal[i] == new_nal[i + 1] == 0 and new_nal[i + 2] <= 2)
    assert patched[4 + n :] == sample[4 + len(nal) :]  # other NAL units untouched
    only_slice = len(slice_nal).to_bytes(4, "big") + slice_nal
    assert patch_length_prefixed(only_slice, 4, ContentLightLevel(1, 1)) is None  # nothing to patch


@needs_ffprobe
@pytest.mark.parametrize("ext", ["mkv", "mp4"])
def test_single_frame(tmp_path: Path, ext: str) -> None:
    # x265 hands back an uninitialised DTS when it only ever saw one frame.
    out = tmp_path / f"one.{ext}"
    with Hdr10VideoWriter(out, W, H, FPS, preset="ultrafast") as w:
        w.write(hdr_frame(0))
    assert decoded_frame_count(out) == 1


def test_writer_without_frames_makes_no_file(tmp_path: Path) -> None:
    out = tmp_path / "none.mkv"
    with pytest.raises(VideoError, match="no frames"):
        with Hdr10VideoWriter(out, W, H, FPS):
            pass
    with pytest.raises(RuntimeError, match="boom"):
        with Hdr10VideoWriter(out, W, H, FPS):
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_audio_that_mp4_cannot_carry(tmp_path: Path) -> None:
    source = tmp_path / "tta.mkv"
    write_sdr(source, audio="tta", n=2)
    with pytest.raises(VideoError, match=r"audio \(tta\) cannot be copied into \.mp4"):
        Hdr10VideoWriter(tmp_path / "out.mp4", W, H, FPS, audio_source=source)
    out = tmp_path / "out.mkv"
    with Hdr10VideoWriter(out, W, H, FPS, audio_source=source, preset="ultrafast") as w:
        w.write(hdr_frame(0))
        w.write(hdr_frame(1))
    with av.open(str(out)) as c:
        assert [s.codec_context.name for s in c.streams.audio] == ["tta"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mkv", "tta.mkv"]


def test_writer_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mkv or .mp4"):
        Hdr10VideoWriter(tmp_path / "x.avi", W, H, FPS)
    with pytest.raises(ValueError, match="even"):
        Hdr10VideoWriter(tmp_path / "x.mkv", 63, H, FPS)
    with pytest.raises(VideoError, match="no such file"):
        Hdr10VideoWriter(tmp_path / "x.mkv", W, H, FPS, audio_source=tmp_path / "missing.mp4")
    with Hdr10VideoWriter(tmp_path / "x.mkv", W, H, FPS, preset="ultrafast") as w:
        with pytest.raises(ValueError, match="uint16"):
            w.write(hdr_frame(0).astype(np.int32))
        with pytest.raises(ValueError, match="does not match"):
            w.write(hdr_frame(0, w=32))
        bad = hdr_frame(0)
        bad[0, 0] = 1024
        with pytest.raises(ValueError, match="1023"):
            w.write(bad)
        w.write(hdr_frame(0))
    assert w.frames_written == 1
    with pytest.raises(VideoError, match="closed"):
        w.write(hdr_frame(1))
    assert sorted(os.listdir(tmp_path)) == ["x.mkv"]
