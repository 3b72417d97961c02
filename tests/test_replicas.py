"""The SDK and the CLI across two real Triton replicas: frames spread over both, one SIGKILLed and left dead."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import urllib.request

import numpy as np
import pytest

from sritm_client import AsyncSritmClient, RetryPolicy, SdrFrame, SritmClient
from sritm_serving.triton_server import TritonServer

from media import write_sdr
from processes import read_until_progress

pytestmark = pytest.mark.server

QUICK = RetryPolicy(attempts=3, initial_backoff_s=0.1, max_backoff_s=0.5, deadline_s=3.0)
"""A dead replica is given up after ~3 s, so the test does not wait out the default 30 s."""


def frame(index: int) -> SdrFrame:
    yy, xx = np.mgrid[0:48, 0:80]
    rgb = np.stack([(xx * 3 + index * 11) % 256, (yy * 5 + index * 7) % 256, np.full_like(xx, 30 + index)], axis=-1)
    return SdrFrame.from_rgb8(rgb.astype(np.uint8), pts=index)


def successes(server: TritonServer, model: str = "sritm_x2") -> int:
    with urllib.request.urlopen(server.metrics_url, timeout=5) as answer:
        text = answer.read().decode()
    return int(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("nv_inference_request_success{") and f'model="{model}"' in line))


def test_stream_spreads_over_two_replicas_and_survives_losing_one(launch):
    first, second = launch(), launch()
    frames = [frame(i) for i in range(16)]
    with SritmClient(first.grpc_url, scale=2) as single:
        expected = [hdr.to_numpy().tobytes() for hdr in single.stream(frames, window=2)]
    before = successes(first)
    received = []
    with SritmClient([first.grpc_url, second.grpc_url], scale=2, retry=QUICK) as client:
        for hdr in client.stream(frames, window=2):
            received.append(hdr)
            if len(received) == 6:
                assert successes(first) > before and successes(second) > 0, "the frames did not spread"
                second.kill()  # and it stays dead
    assert [hdr.pts for hdr in received] == list(range(16)), "frames lost, repeated or out of order"
    assert [hdr.to_numpy().tobytes() for hdr in received] == expected


def test_async_stream_spreads_and_survives_losing_one(launch):
    first, second = launch(), launch()
    frames = [frame(i) for i in range(12)]
    with SritmClient(first.grpc_url, scale=2) as single:
        expected = [hdr.to_numpy().tobytes() for hdr in single.stream(frames, window=2)]

    async def run() -> list[bytes]:
        received = []
        async with AsyncSritmClient([first.grpc_url, second.grpc_url], scale=2, retry=QUICK) as client:
            async for hdr in client.stream(frames, window=2):
                received.append(hdr)
                if len(received) == 5:
                    first.kill()
        assert [hdr.pts for hdr in received] == list(range(12))
        return [hdr.to_numpy().tobytes() for hdr in received]

    assert asyncio.run(run()) == expected
    assert successes(second) > 0


def test_convert_falls_over_to_the_replica_that_answers(launch):
    first, second = launch(), launch()
    with SritmClient([first.grpc_url, second.grpc_url], scale=2, retry=QUICK) as client:
        reference = client.convert(frame(1)).to_numpy()
        first.kill()
        for _ in range(3):  # whichever replica's turn it is, the answer comes from the live one
            assert np.array_equal(client.convert(frame(1)).to_numpy(), reference)


def test_cli_with_two_urls_writes_the_single_server_bytes_after_a_sigkill(launch, tmp_path):
    first, second = launch(), launch()
    source = tmp_path / "clip.mp4"
    write_sdr(source, n=20, w=160, h=96)
    single, spread = tmp_path / "single.yuv", tmp_path / "spread.yuv"
    common = ["--scale", "2", "--window", "2", "--connect-timeout", "3"]
    subprocess.run([sys.executable, "-m", "sritm_client.cli", "convert", str(source), str(single),
                    "--url", first.grpc_url, *common, "--quiet"], check=True, capture_output=True, timeout=300)
    process = subprocess.Popen(
        [sys.executable, "-m", "sritm_client.cli", "convert", str(source), str(spread), "--url", first.grpc_url,
         "--url", second.grpc_url, *common], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        read_until_progress(process, 20, 5)
        first.kill()
        out, err = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert "20 frame(s)" in out
    assert spread.read_bytes() == single.read_bytes()
