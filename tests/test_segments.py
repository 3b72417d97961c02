"""Segment-parallel conversion, run as the Indexed Job runs it.

``sritm convert --segment I/N`` and ``sritm concat`` run as local processes, against two real Triton servers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
import yaml

from sritm_client.segments import Segment, SegmentError, manifest_path
from sritm_client.video import read_sdr_frames
from sritm_client.video.reader import presentation_timestamps
from sritm_serving.triton_server import ServerPorts, TritonServer

from media import decoded_frame_count, ffprobe, needs_ffprobe, side_data, write_sdr

FRAMES, PARTS = 24, 3
CRF = 10  # two encodings of the same frames with other keyframes: near-lossless, so 45 dB holds; a frame out of
# place reads far lower
JOBS = Path(__file__).resolve().parent.parent / "deploy" / "k8s" / "jobs"
HEVC_IDR_NAL_TYPES = (19, 20)  # IDR_W_RADL, IDR_N_LP (H.265 Table 7-1)


def sritm(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sritm_client.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.fixture(scope="module")
def second_server(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    server = TritonServer(model_repository, ServerPorts.free(), log_path=tmp_path_factory.mktemp("second") / "log")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def film(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 frames with a keyframe every 5 (so parts start between keyframes), B-frames and a second of AAC."""
    source = tmp_path_factory.mktemp("film") / "film.mp4"
    write_sdr(source, n=FRAMES, w=64, h=48, audio="aac", audio_seconds=FRAMES / 10, keyframe_every=5)
    return source


def job_script(manifest: str) -> str:
    """The shell script a Job's container runs (deploy/k8s/jobs/), exactly as the cluster would run it."""
    job = yaml.safe_load((JOBS / manifest).read_text())
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:2] == ["sh", "-c"]
    return str(command[2])


def job_environment(films: Path, part_format: str, urls: list[str], **more: str) -> dict[str, str]:
    """The film ConfigMap's variables for a local run: the second URL stands for the Service's second pod."""
    return {
        **os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "FILMS": str(films), "SOURCE": "in/film.mp4", "NAME": "film", "OUTPUT": f"out/film.{part_format}",
        "PARTS": str(PARTS), "PART_FORMAT": part_format, "SCALE": "2", "SRITM_URL": urls[0],
        "SRITM_CONVERT_ARGS": " ".join([*(f"--url {url}" for url in urls[1:]),
                                        f"--window 2 --preset ultrafast --crf {CRF}"]),
        **more,
    }


def films_folder(film: Path, folder: Path) -> Path:
    (folder / "in").mkdir(parents=True)
    (folder / "in" / "film.mp4").symlink_to(film)
    return folder


def convert_in_parts(films: Path, part_format: str, urls: list[str]) -> list[Path]:
    """The Indexed Job's pods, all at once: its script with JOB_COMPLETION_INDEX 0..PARTS-1."""
    script = job_script("convert-parts-job.yaml")
    pods = [subprocess.Popen(["sh", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=job_environment(films, part_format, urls, JOB_COMPLETION_INDEX=str(index)))
            for index in range(PARTS)]
    for pod in pods:
        _, err = pod.communicate(timeout=300)
        assert pod.returncode == 0, err
    parts = sorted((films / "parts" / "film").glob(f"part-*.{part_format}"))
    assert [p.name for p in parts] == [f"part-{i:04d}.{part_format}" for i in range(1, PARTS + 1)]
    return parts


def concat_job(films: Path, part_format: str) -> Path:
    """The follow-up Job's script; returns the film it wrote."""
    result = subprocess.run(["sh", "-c", job_script("concat-job.yaml")], capture_output=True, text=True,
                            timeout=300, env=job_environment(films, part_format, ["unused:1"]))
    assert result.returncode == 0, result.stderr
    return films / "out" / f"film.{part_format}"


@pytest.fixture(scope="module")
def raw_run(film: Path, triton_server, second_server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("raw")
    single = folder / "single.yuv"
    result = sritm("convert", film, single, "--url", triton_server.grpc_url, "--scale", "2", "--quiet")
    assert result.returncode == 0, result.stderr
    films = films_folder(film, folder / "films")
    parts = convert_in_parts(films, "yuv", [triton_server.grpc_url, second_server.grpc_url])
    return {"single": single, "films": films, **{f"part{i}": part for i, part in enumerate(parts, start=1)}}


def raw_parts(run: dict[str, Path]) -> list[Path]:
    return [run[f"part{i}"] for i in range(1, PARTS + 1)]


# --------------------------------------------------------------------------
# cutting


def test_parts_cover_every_frame_once_and_differ_by_at_most_one() -> None:
    for total in (3, 7, 24, 1001):
        for count in (1, 2, 3, 7):
            if count > total:
                with pytest.raises(SegmentError, match=f"cannot be cut into {count} parts"):
                    Segment(1, count).frames(total)
                continue
            ranges = [Segment(i, count).frames(total) for i in range(1, count + 1)]
            assert [frame for r in ranges for frame in r] == list(range(total))
            assert max(map(len, ranges)) - min(map(len, ranges)) <= 1


@pytest.mark.parametrize("text", ["0/3", "4/3", "3", "a/b", "1/0", "-1/2"])
def test_a_bad_segment_is_named(text: str) -> None:
    with pytest.raises(SegmentError, match="--segment"):
        Segment.parse(text)


@pytest.mark.parametrize("extension", [".mp4", ".mkv", ".ts"])
def test_reading_a_frame_range_gives_the_whole_reads_frames_there(tmp_path: Path, extension: str) -> None:
    """Seeking to the keyframe before a part and dropping up to its first frame is frame-exact."""
    source = tmp_path / f"clip{extension}"
    write_sdr(source, n=FRAMES, w=64, h=48, keyframe_every=5)
    assert len(presentation_timestamps(source)) == FRAMES
    whole = list(read_sdr_frames(source))
    for frames in (range(0, 8), range(8, 16), range(16, 24), range(6, 7), range(23, 24), range(11, 99)):
        part = list(read_sdr_frames(source, frames))
        expected = whole[frames.start : frames.stop]
        assert [f.index for f in part] == [f.index for f in expected]
        assert all(np.array_equal(a.y, b.y) and np.array_equal(a.v, b.v) for a, b in zip(part, expected))


# --------------------------------------------------------------------------
# joining raw parts: byte for byte


def test_raw_parts_from_two_servers_join_to_the_single_run_bytes(raw_run: dict[str, Path], tmp_path: Path) -> None:
    manifests = [json.loads(manifest_path(part).read_text()) for part in raw_parts(raw_run)]
    assert [(m["segment"], m["first_frame"], m["frames"]) for m in manifests] == [(1, 0, 8), (2, 8, 8), (3, 16, 8)]
    joined = concat_job(raw_run["films"], "yuv")
    assert joined.stat().st_size == FRAMES * 128 * 96 * 3 // 2 * 2
    assert joined.read_bytes() == raw_run["single"].read_bytes()


def test_a_failed_part_rerun_alone_gives_the_same_film(film: Path, raw_run: dict[str, Path], triton_server,
                                                      tmp_path: Path) -> None:
    part2 = tmp_path / "part-2.yuv"
    # An earlier attempt's finished part: a retry that fails must not leave it looking finished.
    shutil.copy(raw_run["part2"], part2)
    shutil.copy(manifest_path(raw_run["part2"]), manifest_path(part2))
    dead = f"127.0.0.1:{ServerPorts.free().grpc}"
    failed = sritm("convert", film, part2, "--segment", f"2/{PARTS}", "--scale", "2", "--url", dead,
                   "--connect-timeout", "2", "--quiet")
    assert failed.returncode == 1 and failed.stderr.startswith("sritm: error:"), failed.stderr
    assert not manifest_path(part2).exists()
    parts = [raw_run["part1"], part2, raw_run["part3"]]
    refused = sritm("concat", tmp_path / "joined.yuv", *parts)
    assert refused.returncode == 1 and "unfinished" in refused.stderr, refused.stderr

    rerun = sritm("convert", film, part2, "--segment", f"2/{PARTS}", "--scale", "2", "--url",
                  triton_server.grpc_url, "--quiet")
    assert rerun.returncode == 0, rerun.stderr
    assert sritm("concat", tmp_path / "joined.yuv", *parts).returncode == 0
    assert (tmp_path / "joined.yuv").read_bytes() == raw_run["single"].read_bytes()


@pytest.mark.parametrize("order, message", [
    ((2, 1, 3), "out of order"),
    ((1, 3), "part(s) 2 of 3 are missing"),
    ((1, 2, 2, 3), "part 2/3 is given twice"),
])
def test_concat_refuses_parts_misordered_missing_or_repeated(raw_run: dict[str, Path], tmp_path: Path,
                                                             order: tuple[int, ...], message: str) -> None:
    result = sritm("concat", tmp_path / "joined.yuv", *(raw_run[f"part{i}"] for i in order))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "joined.yuv").exists()


def test_concat_refuses_parts_of_another_conversion(film: Path, raw_run: dict[str, Path], triton_server,
                                                  tmp_path: Path) -> None:
    other = tmp_path / "other-2.yuv"
    made = sritm("convert", film, other, "--segment", f"2/{PARTS}", "--scale", "2", "--peak-nits", "600",
                 "--url", triton_server.grpc_url, "--quiet")
    assert made.returncode == 0, made.stderr
    result = sritm("concat", tmp_path / "joined.yuv", raw_run["part1"], other, raw_run["part3"])
    assert result.returncode == 1 and "another conversion" in result.stderr and "peak_nits" in result.stderr


def test_segment_of_an_image_or_of_too_few_frames_is_one_line(film: Path, triton_server, tmp_path: Path) -> None:
    image = tmp_path / "frame.png"
    import cv2

    cv2.imwrite(str(image), np.zeros((16, 16, 3), np.uint8))
    for source, output, segment, message in ((image, "o.png", "1/2", "an image is one frame"),
                                             (film, "o.yuv", f"1/{FRAMES + 1}", "cannot be cut")):
        result = sritm("convert", source, tmp_path / output, "--segment", segment, "--scale", "2",
                       "--url", triton_server.grpc_url, "--quiet")
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1 and message in lines[0], result.stderr


# --------------------------------------------------------------------------
# joining HEVC parts: no re-encoding, the film's metadata, the source's audio


def decoded_10_bit(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="yuv420p10le").astype(np.float64) for frame in container.decode(video=0)]


def first_packet_nal_types(path: Path) -> list[int]:
    with av.open(str(path)) as container:
        packet = next(p for p in container.demux(video=0) if p.size)
        data, types, at = bytes(packet), [], 0
        while at + 4 <= len(data):  # length-prefixed NAL units (hvcC, 4-byte lengths)
            length = int.from_bytes(data[at : at + 4], "big")
            types.append((data[at + 4] >> 1) & 0x3F)
            at += 4 + length
        return types


@needs_ffprobe
@pytest.mark.parametrize("extension", [".mkv", ".mp4"])
def test_hevc_parts_join_to_the_single_runs_frames_light_levels_and_audio(
    film: Path, triton_server, second_server, tmp_path: Path, extension: str,
) -> None:
    single = tmp_path / f"single{extension}"
    result = sritm("convert", film, single, "--url", triton_server.grpc_url, "--scale", "2", "--preset",
                   "ultrafast", "--crf", str(CRF), "--quiet")
    assert result.returncode == 0, result.stderr
    films = films_folder(film, tmp_path / "films")
    parts = convert_in_parts(films, extension[1:], [triton_server.grpc_url, second_server.grpc_url])
    for part in parts:
        assert any(t in HEVC_IDR_NAL_TYPES for t in first_packet_nal_types(part)), part
        assert not [s for s in ffprobe(part, "-show_streams")["streams"] if s["codec_type"] == "audio"]
    started = time.monotonic()
    joined = concat_job(films, extension[1:])
    print(f"concat of {PARTS} parts: {time.monotonic() - started:.2f} s")

    assert decoded_frame_count(joined) == decoded_frame_count(single) == FRAMES
    psnr = [10 * np.log10(1023**2 / max(np.mean((ours - theirs) ** 2), 1e-12))
            for ours, theirs in zip(decoded_10_bit(joined), decoded_10_bit(single))]
    print(f"joined vs single run: {min(psnr):.1f} dB at worst")
    assert min(psnr) >= 45, psnr
    light = {}
    for name, path in (("joined", joined), ("single", single)):
        video = next(s for s in ffprobe(path, "-show_streams")["streams"] if s["codec_type"] == "video")
        container = side_data(video["side_data_list"], "Content light level metadata")
        frame = ffprobe(path, "-select_streams", "v:0", "-show_frames", "-read_intervals", "%+#1")["frames"][0]
        sei = side_data(frame["side_data_list"], "Content light level metadata")
        assert (container["max_content"], container["max_average"]) == (sei["max_content"], sei["max_average"])
        light[name] = (container["max_content"], container["max_average"])
    assert light["joined"] == light["single"] and light["single"][0] > 0
    assert audio_duration(joined) == pytest.approx(audio_duration(single), abs=1e-3)
    assert audio_duration(single) == pytest.approx(FRAMES / 10, abs=0.05)


def audio_duration(path: Path) -> float:
    """Seconds of audio, summed from the audio packets' durations."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        return float(sum(p.duration or 0 for p in container.demux(stream) if p.size) * stream.time_base)
