"""`sritm convert` and the demo, end to end against the real server, with real files checked by ffprobe."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from sritm_client import SdrFrame, SritmClient
from sritm_client.cli import main
from sritm_client.convert import crop_hdr
from sritm_client.video import content_light_level
from sritm_serving.triton_server import ServerPorts

from media import decoded_frame_count, ffprobe, needs_ffprobe, side_data, write_sdr
from processes import read_until_progress

pytestmark = pytest.mark.server


def rgb_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    rgb = np.stack([xx * 255 // max(width - 1, 1), yy * 255 // max(height - 1, 1), np.full_like(xx, 90)], axis=-1)
    return np.clip(rgb + rng.integers(-20, 20, rgb.shape), 0, 255).astype(np.uint8)


def write_png(path: Path, rgb: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), rgb[:, :, ::-1])
    return path


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sritm_client.cli", *args], capture_output=True, text=True, timeout=120
    )


def sdk_png(triton_server, rgb: np.ndarray, scale: int) -> np.ndarray:
    with SritmClient(triton_server.grpc_url, scale) as client:
        return client.convert(SdrFrame.from_rgb8(rgb)).to_rgb_pq16()


def test_image_to_png_is_16_bit_pq_of_the_served_frame(triton_server, tmp_path):
    rgb = rgb_image(20, 28)
    source, output = write_png(tmp_path / "in.png", rgb), tmp_path / "out.png"
    assert main(["convert", str(source), str(output), "--url", triton_server.grpc_url, "--quiet"]) == 0
    written = cv2.imread(str(output), cv2.IMREAD_UNCHANGED)
    assert written.dtype == np.uint16 and written.shape == (80, 112, 3)
    np.testing.assert_array_equal(written[:, :, ::-1], sdk_png(triton_server, rgb, 4))


def test_image_to_raw_yuv420p10le(triton_server, tmp_path):
    rgb = rgb_image(16, 24, seed=1)
    source, output = write_png(tmp_path / "in.png", rgb), tmp_path / "out.yuv"
    assert main(["convert", str(source), str(output), "--url", triton_server.grpc_url, "--scale", "2", "--quiet"]) == 0
    with SritmClient(triton_server.grpc_url, 2) as client:
        expected = client.convert(SdrFrame.from_rgb8(rgb)).to_numpy()
    assert output.read_bytes() == expected.astype("<u2").tobytes()
    assert output.stat().st_size == 32 * 48 * 3 // 2 * 2


def test_odd_image_is_padded_and_cropped_back(triton_server, tmp_path):
    rgb = rgb_image(17, 23, seed=2)
    source, output = write_png(tmp_path / "odd.png", rgb), tmp_path / "odd_out.png"
    assert main(["convert", str(source), str(output), "--url", triton_server.grpc_url, "--quiet"]) == 0
    written = cv2.imread(str(output), cv2.IMREAD_UNCHANGED)
    assert written.shape == (68, 92, 3)
    padded = np.pad(rgb, ((0, 1), (0, 1), (0, 0)), mode="edge")
    with SritmClient(triton_server.grpc_url, 4) as client:
        served = client.convert(SdrFrame.from_rgb8(padded))
    assert (served.height, served.width) == (72, 96)
    # Cropped as I420 (exact on every plane at an even scale), then turned into R'G'B'.
    np.testing.assert_array_equal(written[:, :, ::-1], crop_hdr(served, 68, 92).to_rgb_pq16())


@needs_ffprobe
def test_video_to_mkv_is_tagged_hdr10_with_measured_light_levels_and_audio(triton_server, tmp_path):
    source, output = tmp_path / "clip.mp4", tmp_path / "clip_hdr.mkv"
    write_sdr(source, n=6, w=48, h=32, audio="aac")
    assert main(["convert", str(source), str(output), "--url", triton_server.grpc_url, "--scale", "2",
                 "--window", "3", "--quiet"]) == 0
    streams = ffprobe(output, "-show_streams")["streams"]
    video = next(s for s in streams if s["codec_type"] == "video")
    audio = next(s for s in streams if s["codec_type"] == "audio")
    assert (video["codec_name"], video["profile"], video["pix_fmt"]) == ("hevc", "Main 10", "yuv420p10le")
    assert (video["color_primaries"], video["color_transfer"], video["color_space"], video["color_range"]) == (
        "bt2020", "smpte2084", "bt2020nc", "tv")
    assert (video["width"], video["height"]) == (96, 64)
    assert audio["codec_name"] == "aac"
    assert decoded_frame_count(output) == 6
    frame = ffprobe(output, "-select_streams", "v:0", "-show_frames", "-read_intervals", "%+#1")["frames"][0]
    side_data(frame["side_data_list"], "Mastering display metadata")
    light = side_data(frame["side_data_list"], "Content light level metadata")
    from sritm_client.video import read_sdr_frames

    with SritmClient(triton_server.grpc_url, 2) as client:
        served = [hdr.to_numpy() for hdr in client.stream(
            SdrFrame.from_planes(f.y, f.u, f.v, f.pts) for f in read_sdr_frames(source))]
    expected = content_light_level(served)
    assert (light["max_content"], light["max_average"]) == (expected.max_cll, expected.max_fall)
    assert light["max_content"] > 0


def test_video_to_raw_yuv_is_every_served_frame_byte_for_byte(triton_server, tmp_path):
    """``.yuv`` for a video: the frames one after another, each exactly the server's answer, nothing else."""
    source, output = tmp_path / "clip.mp4", tmp_path / "clip_hdr.yuv"
    write_sdr(source, n=5, w=48, h=32, audio="aac")
    assert main(["convert", str(source), str(output), "--url", triton_server.grpc_url, "--scale", "2",
                 "--window", "3", "--quiet"]) == 0
    from sritm_client.video import read_sdr_frames

    with SritmClient(triton_server.grpc_url, 2) as client:
        served = [client.convert(SdrFrame.from_planes(f.y, f.u, f.v, f.pts)).to_numpy()
                  for f in read_sdr_frames(source)]
    assert len(served) == 5
    assert output.read_bytes() == b"".join(frame.astype("<u2").tobytes() for frame in served)
    assert not list(tmp_path.glob(".*.part")), "the temporary file was left behind"


@needs_ffprobe
def test_odd_sized_video_to_mp4(triton_server, tmp_path):
    source, output = tmp_path / "odd.mkv", tmp_path / "odd_hdr.mp4"
    write_sdr(source, codec="ffv1", pix_fmt="yuv420p", n=3, w=45, h=31)
    assert main(["convert", str(source), str(output), "--url", triton_server.grpc_url, "--scale", "2", "--quiet"]) == 0
    (video,) = ffprobe(output, "-show_streams")["streams"]
    assert (video["codec_name"], video["width"], video["height"]) == ("hevc", 90, 62)
    assert decoded_frame_count(output) == 3


def one_line_error(result: subprocess.CompletedProcess[str], expected: str) -> None:
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sritm: error:"), result.stderr
    assert expected in lines[0]


def error_cases(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    """Path mistakes.

    Bad *content* (corrupt, 10-bit, alpha, greyscale, empty files) is tests/test_malformed.py's table.
    """
    image = tmp_path / "in.png"
    cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
    return {
        "image to video name": ([str(image), str(tmp_path / "o.mkv")], "an image converts to .png or .yuv"),
        "missing output folder": ([str(image), str(tmp_path / "no" / "o.png")], "does not exist"),
        "output overwrites input": ([str(image), str(image)], "overwrite the input"),
    }


def test_cli_errors_are_one_line(triton_server, tmp_path):
    for case, (paths, expected) in error_cases(tmp_path).items():
        result = run_cli("convert", *paths, "--url", triton_server.grpc_url, "--quiet")
        one_line_error(result, expected)


def test_unreachable_server_is_one_line_within_the_deadline(tmp_path):
    source = write_png(tmp_path / "in.png", rgb_image(16, 16))
    nobody = ServerPorts.free().grpc
    started = time.monotonic()
    result = run_cli("convert", str(source), str(tmp_path / "o.png"), "--url", f"127.0.0.1:{nobody}",
                     "--connect-timeout", "2")
    one_line_error(result, f"127.0.0.1:{nobody}")
    assert time.monotonic() - started < 30


@needs_ffprobe
def test_ctrl_c_leaves_a_playable_file(triton_server, tmp_path):
    source, output = tmp_path / "long.mp4", tmp_path / "long_hdr.mkv"
    write_sdr(source, n=30, w=96, h=64)
    process = subprocess.Popen(
        [sys.executable, "-m", "sritm_client.cli", "convert", str(source), str(output),
         "--url", triton_server.grpc_url, "--window", "1"],
        stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"),
        # A job started in the background inherits SIGINT ignored; the CLI must see it as a terminal user's Ctrl-C.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    seen = read_until_progress(process, 30, 3)
    process.send_signal(signal.SIGINT)
    remaining = process.stderr.read()
    assert process.wait(timeout=60) == 130, seen + remaining
    assert "interrupted" in remaining
    frames = decoded_frame_count(output)
    assert 3 <= frames < 30


@needs_ffprobe
def test_demo_writes_video_and_side_by_side(model_repository, tmp_path):
    from demo.convert_sample import main as demo

    source = tmp_path / "tiny.mp4"
    write_sdr(source, n=3, w=32, h=16, audio="aac")
    assert demo(
        ["--input", str(source), "--repository", str(model_repository), "--out-dir", str(tmp_path / "out")]
    ) == 0
    assert decoded_frame_count(tmp_path / "out" / "demo_hdr10.mkv") == 3
    assert decoded_frame_count(tmp_path / "out" / "demo_hdr10_bt2408.mkv") == 3
    picture = cv2.imread(str(tmp_path / "out" / "demo_side_by_side.png"))
    assert picture is not None and picture.shape[1] > picture.shape[0]
    # The default scale's network is told the preset: the two renditions differ.
    from sritm_client.preview import middle_frames

    _, default = middle_frames(source, tmp_path / "out" / "demo_hdr10.mkv", 3)
    _, bt2408 = middle_frames(source, tmp_path / "out" / "demo_hdr10_bt2408.mkv", 3)
    assert default.shape == bt2408.shape and np.abs(default.astype(int) - bt2408.astype(int)).mean() > 1


def test_convention_and_peak_options(triton_server, tmp_path):
    """--convention/--peak-nits reach the server (the PNG changes with the peak); bad values are one line."""
    source = write_png(tmp_path / "in.png", rgb_image(16, 24))
    outputs = {}
    for name, options in {"default": [], "bt2408_600": ["--convention", "bt2408", "--peak-nits", "600"]}.items():
        outputs[name] = tmp_path / f"{name}.png"
        result = run_cli("convert", str(source), str(outputs[name]), "--url", triton_server.grpc_url, "--quiet",
                         *options)
        assert result.returncode == 0, result.stderr
    default = cv2.imread(str(outputs["default"]), cv2.IMREAD_UNCHANGED)
    dimmer = cv2.imread(str(outputs["bt2408_600"]), cv2.IMREAD_UNCHANGED)
    assert dimmer.shape == default.shape and not np.array_equal(dimmer, default)
    one_line_error(run_cli("convert", str(source), str(tmp_path / "x.png"), "--url", triton_server.grpc_url,
                           "--peak-nits", "100"), "between 400 and 4000")
    result = run_cli("convert", str(source), str(tmp_path / "x.png"), "--convention", "youtube")
    assert result.returncode == 2 and "invalid choice: 'youtube'" in result.stderr
