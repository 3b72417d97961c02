"""Faults: the server SIGKILLed mid-stream and restarted, a Python-backend stub killed, a server that never returns.

Every test starts its own ``tritonserver`` on free ports over the session's
model repository, so killing it never disturbs the session server. What was
observed with Triton 2.51 (``nvidia-pytriton`` 0.7.0) is written in each
test's docstring.

Reproduce: ``nice -n 10 .venv/bin/python -m pytest tests/test_faults.py -v``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import av
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from sritm_client import AsyncSritmClient, HdrFrame, RetryPolicy, SdrFrame, ServerUnavailableError, SritmClient
from sritm_client.cli import main as sritm
from sritm_core.contract import INPUT_NAME, OUTPUT_NAME
from sritm_serving.triton_server import SHM_DIR, TritonServer

from media import decoded_frame_count, ffprobe, needs_ffprobe, write_sdr
from processes import progress_counts, read_until_progress

pytestmark = pytest.mark.server

RESTART_DELAY_S = 1.0


def scene(index: int, height: int = 16, width: int = 32) -> SdrFrame:
    """Frame ``index`` of a moving pattern: every frame differs, so a lost or repeated frame shows."""
    yy, xx = np.mgrid[0:height, 0:width]
    rgb = np.stack([(xx * 5 + index * 17) % 256, (yy * 7 + index * 3) % 256, np.full_like(xx, 40 + index)], axis=-1)
    return SdrFrame.from_rgb8(rgb.astype(np.uint8), pts=100 + 40 * index)


def assert_same_frames(got: list[HdrFrame], expected: list[HdrFrame]) -> None:
    assert [f.pts for f in got] == [f.pts for f in expected], "frames lost, repeated or out of order"
    for a, b in zip(got, expected):
        assert a.i420.tobytes() == b.i420.tobytes(), f"frame pts {a.pts} differs"


def restart_later(server: TritonServer, errors: list[BaseException]) -> threading.Thread:
    """Starts ``server`` again on its own ports after RESTART_DELAY_S, in the background."""

    def run() -> None:
        try:
            time.sleep(RESTART_DELAY_S)
            server.start()
        except BaseException as error:  # reported by the test
            errors.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def pending_in_server(server: TritonServer) -> int:
    """Requests the server holds unanswered, summed over its models.

    Read from Triton's ``nv_inference_pending_request_count``.
    """
    with urllib.request.urlopen(server.metrics_url, timeout=5) as answer:
        text = answer.read().decode()
    return int(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("nv_inference_pending_request_count{")))


def kill_mid_inference(server: TritonServer, timeout_s: float = 30.0) -> int:
    """SIGKILLs the server once it holds a request unanswered (not merely admitted by the client); returns how many."""
    deadline = time.monotonic() + timeout_s
    while (pending := pending_in_server(server)) < 1:
        assert time.monotonic() < deadline, "no request was ever inside the server: nothing to interrupt"
        time.sleep(0.005)
    server.kill()
    return pending


def stub_regions(server: TritonServer) -> set[str]:
    """The /dev/shm regions of the server's live Python-backend stubs (argument 2 of a stub's command line)."""
    regions = set()
    for pid in server.stub_processes().values():
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        regions.add(argv[2].decode())
    assert regions and all((SHM_DIR / name).exists() for name in regions)
    return regions


def regions_in_dev_shm(names: set[str]) -> set[str]:
    return {name for name in names if (SHM_DIR / name).exists()}


# --------------------------------------------------------------------------
# The server SIGKILLed in the middle of a stream, restarted on the same ports.


def test_stream_survives_sigkill_and_restart_on_the_same_ports(launch):
    """SIGKILL the whole server (stubs included) while frames are in flight; restart it 1 s later on the same ports.

    Done twice on one server: during a ``SritmClient.stream`` and during an
    ``AsyncSritmClient.stream``, each with the default RetryPolicy. Observed:
    the stream's gRPC call fails with UNAVAILABLE; the SDK waits for readiness
    with backoff, re-opens the stream on the new server and re-sends the
    unanswered frames. Every frame comes out once, in order, byte-identical to
    the uninterrupted run: 0 frames lost. The killed server's /dev/shm regions
    are removed by the launcher.
    """
    server = launch()
    ports = server.ports
    # Big enough (~0.2 s each on two cores) that the window's frames queue inside the server.
    frames = [scene(i, height=96, width=160) for i in range(12)]
    kill_at, window = 5, 4
    with SritmClient(server.grpc_url, scale=2) as client:
        expected = list(client.stream(frames, window=window))

    def interrupted_run(flavour: str) -> None:
        received: list[HdrFrame] = []
        errors: list[BaseException] = []
        in_flight: list[int] = []
        restarter: list[threading.Thread] = []
        old_pid, regions = server.pid, stub_regions(server)

        def frame_source() -> Iterator[SdrFrame]:
            for index, frame in enumerate(frames):
                if index == kill_at:
                    in_flight.append(kill_mid_inference(server))
                    restarter.append(restart_later(server, errors))
                yield frame

        if flavour == "sync":
            with SritmClient(server.grpc_url, scale=2) as client:
                for hdr in client.stream(frame_source(), window=window):
                    received.append(hdr)
        else:

            async def source() -> AsyncIterator[SdrFrame]:
                for frame in frame_source():
                    yield frame

            async def run() -> None:
                async with AsyncSritmClient(server.grpc_url, scale=2) as client:
                    async for hdr in client.stream(source(), window=window):
                        received.append(hdr)

            asyncio.run(run())
        restarter[0].join(timeout=60)
        assert not errors, errors
        assert in_flight[0] >= 1, f"{flavour}: the kill came when no frame was inside the server"
        assert server.pid != old_pid and server.ports == ports and server.is_ready()
        assert_same_frames(received, expected)
        assert regions and not regions_in_dev_shm(regions), "the killed server's shared memory was left in /dev/shm"

    interrupted_run("sync")
    interrupted_run("asyncio")


@needs_ffprobe
@pytest.mark.parametrize("transport", ["grpc", "shm"])
def test_cli_convert_survives_sigkill_and_restart_with_an_identical_file(launch, tmp_path, transport):
    """``sritm convert`` (a separate process) while the server is SIGKILLed and restarted on the same ports.

    With ``--shm`` the frames travel in system shared memory: the client must
    register its regions again with the new server before re-sending.

    MP4 output from x265 with fixed settings is deterministic (checked: two
    uninterrupted runs give the same bytes; Matroska is not, its SegmentUID is
    random), so the interrupted run's file must be byte-identical to the
    uninterrupted one: no frame lost, repeated or reordered.
    """
    server = launch()
    source = tmp_path / "clip.mp4"
    write_sdr(source, n=24, w=160, h=96)  # ~0.2 s a frame: the window's frames queue inside the server
    reference, interrupted = tmp_path / "reference.mp4", tmp_path / "interrupted.mp4"
    common = ["--url", server.grpc_url, "--scale", "2", "--window", "3", "--preset", "ultrafast",
              *(["--shm"] if transport == "shm" else [])]
    assert sritm(["convert", str(source), str(reference), *common, "--quiet"]) == 0
    again = tmp_path / "again.mp4"
    assert sritm(["convert", str(source), str(again), *common, "--quiet"]) == 0
    assert again.read_bytes() == reference.read_bytes(), "x265 output is not deterministic here"

    process = subprocess.Popen(
        [sys.executable, "-m", "sritm_client.cli", "convert", str(source), str(interrupted), *common],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    try:
        done_at_kill = wait_for_progress(process, at_least=4)
        assert kill_mid_inference(server) >= 1
        time.sleep(RESTART_DELAY_S)
        server.start()
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert done_at_kill < 24, "the conversion ended before the kill"
    assert "24 frame(s)" in out
    assert interrupted.read_bytes() == reference.read_bytes()
    assert decoded_frame_count(interrupted) == 24


def wait_for_progress(process: subprocess.Popen[str], at_least: int, total: int = 24) -> int:
    """Reads the CLI's progress bar until it shows ``at_least`` of ``total`` frames done; returns the count shown."""
    return progress_counts(read_until_progress(process, total, at_least), total)[-1]


# --------------------------------------------------------------------------
# A Python-backend stub killed; the server itself keeps running.


def infer_status(url: str, model: str) -> str:
    frame = scene(0).i420
    with grpcclient.InferenceServerClient(url) as client:
        tensor = grpcclient.InferInput(INPUT_NAME, list(frame.shape), "UINT8")
        tensor.set_data_from_numpy(frame)
        try:
            client.infer(model, [tensor]).as_numpy(OUTPUT_NAME)
            return "OK"
        except InferenceServerException as error:
            return f"{error.status()}: {error.message()}"


def test_killed_stub_is_not_restarted_and_the_client_fails_clearly(launch):
    """SIGKILL the Python-backend stub of ``gpgmnet_x2`` (the network step of ``sritm_x2``).

    Observed with Triton 2.51: the stub is NOT restarted (the Python backend
    lost its restart logic in 24.06, python_backend PR #360; server issue
    #8604), and nothing says so: ``/v2/health/ready`` and the models'
    readiness stay true, the log stays silent, and every request that reaches
    the dead instance fails at once with ``INTERNAL: in ensemble 'sritm_x2',
    Stub process 'gpgmnet_x2_0_0' is not healthy.`` -- indefinitely, until
    the server is restarted. ``sritm_x4`` (its own network stub; the pre- and
    post-processor stubs are shared) keeps serving. A graceful stop would then
    wait the whole ``--exit-timeout-secs`` (the dead instance never unloads),
    and the dead stub's /dev/shm region would leak (the launcher removes it).

    The SDK's answer: that failure is retried like UNAVAILABLE (another
    instance of the model may be alive, or the server be restarting), then
    reported as ServerUnavailableError naming the dead stub and the remedy, by
    ``convert`` and by ``stream`` (which raises, never hangs). Each request to
    the dead instance takes about 1 s to fail, so with the default RetryPolicy
    (5 attempts) the error comes after about 6 s; this test uses 2 attempts. After a restart on the same
    ports the same client object converts again, byte-identically.
    """
    server = launch()
    frames = [scene(i) for i in range(6)]
    with SritmClient(server.grpc_url, scale=2, retry=RetryPolicy(attempts=2)) as client:
        expected = list(client.stream(frames, window=3))
        stubs = server.stub_processes()
        assert set(stubs) == {f"{m}_0_0" for m in ("gpgmnet_x2", "gpgmnet_x4", "sritm_preprocess", "sritm_postprocess")}
        regions = stub_regions(server)
        os.kill(stubs["gpgmnet_x2_0_0"], signal.SIGKILL)
        time.sleep(1.0)

        assert server.is_ready()
        with grpcclient.InferenceServerClient(server.grpc_url) as raw:
            assert raw.is_model_ready("sritm_x2") and raw.is_model_ready("gpgmnet_x2")
        assert infer_status(server.grpc_url, "sritm_x2") == (
            "StatusCode.INTERNAL: in ensemble 'sritm_x2', Stub process 'gpgmnet_x2_0_0' is not healthy."
        )
        assert infer_status(server.grpc_url, "sritm_x4") == "OK"

        started = time.monotonic()
        with pytest.raises(ServerUnavailableError, match="Stub process 'gpgmnet_x2_0_0' is not healthy") as raised:
            client.convert(frames[0])
        assert "must be restarted" in str(raised.value) and time.monotonic() - started < 10

        received: list[HdrFrame] = []
        started = time.monotonic()
        with pytest.raises(ServerUnavailableError, match="gpgmnet_x2_0_0"):
            for hdr in client.stream(frames, window=1):
                received.append(hdr)
        assert received == [] and time.monotonic() - started < 15
        assert "gpgmnet_x2_0_0" not in server.stub_processes(), "Triton restarted the stub after all"
        assert "Stub process" not in server.log_text()

        server.kill()
        assert not regions_in_dev_shm(regions)
        server.start()
        assert_same_frames([client.convert(frames[0])], expected[:1])
        assert_same_frames(list(client.stream(frames, window=3)), expected)


# --------------------------------------------------------------------------
# The server never comes back.


@needs_ffprobe
def test_server_that_never_returns_fails_within_the_deadline_and_leaves_a_playable_file(launch, tmp_path):
    """SIGKILL the server during ``sritm convert --connect-timeout 3`` and leave it down.

    Observed: the CLI retries for its 3 s deadline, then prints one line
    (``sritm: error: 127.0.0.1:PORT: the stream broke and could not be
    re-opened (… attempts in 3.0 s): …``) and exits 1; the HDR10 file holds
    the frames converted before the kill and ffprobe reads it.
    """
    server = launch()
    source, output = tmp_path / "clip.mp4", tmp_path / "partial.mkv"
    write_sdr(source, n=24, w=48, h=32)
    process = subprocess.Popen(
        [sys.executable, "-m", "sritm_client.cli", "convert", str(source), str(output), "--url", server.grpc_url,
         "--scale", "2", "--window", "1", "--preset", "ultrafast", "--connect-timeout", "3", "--timeout", "10"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    try:
        done_at_kill = wait_for_progress(process, at_least=3)
        server.kill()
        killed = time.monotonic()
        _, err = process.communicate(timeout=60)
        gave_up_after = time.monotonic() - killed
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("sritm: error:") and server.grpc_url in last, err
    assert "could not be re-opened" in last or "unavailable" in last, last
    assert 2.5 < gave_up_after < 20, gave_up_after
    frames = decoded_frame_count(output)
    assert done_at_kill <= frames < 24
    (video,) = ffprobe(output, "-show_streams")["streams"]
    assert (video["codec_name"], video["pix_fmt"], video["color_transfer"]) == ("hevc", "yuv420p10le", "smpte2084")
    with av.open(str(output)) as container:
        assert sum(1 for _ in container.decode(video=0)) == frames
    assert not list(tmp_path.glob(".partial.mkv.*")), "temporary files left beside the output"
