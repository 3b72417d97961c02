"""The client SDK (``client/sritm_client``) against the real Triton server of the session fixture."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from sritm_client import (
    AsyncSritmClient,
    ContractMismatchError,
    HdrFrame,
    InvalidFrameError,
    RetryPolicy,
    SdrFrame,
    ServerUnavailableError,
    SritmClient,
    TlsOptions,
)
from sritm_client.core import StreamBook, check_contract, connection_arguments
from sritm_client.shm import region_prefix
from sritm_core.contract import INPUT_NAME, OUTPUT_NAME, ensemble_name

ROOT = Path(__file__).resolve().parent.parent
MIXED_SIZES = ((16, 16), (16, 48), (32, 32), (48, 64))


def rgb_scene(height: int, width: int, seed: int) -> np.ndarray:
    """8-bit R'G'B' with gradients, a saturated patch and noise: every frame different."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    rgb = np.stack([0.5 + 0.5 * np.sin(7 * xx + seed), yy, (xx + yy + seed / 10) % 0.5 * 2], axis=-1)
    rgb[height // 3 : height // 2, width // 4 : width // 2] = [0.95, 0.1 * (seed % 5), 0.1]
    rgb = np.clip(rgb + rng.normal(0, 0.03, rgb.shape), 0, 1)
    return np.rint(rgb * 255).astype(np.uint8)


def mixed_frames(count: int, seed: int) -> list[SdrFrame]:
    """Frames of different content and randomly interleaved sizes, so the server's cost varies per frame."""
    sizes = random.Random(seed)
    frames = []
    for index in range(count):
        height, width = sizes.choice(MIXED_SIZES)
        frames.append(SdrFrame.from_rgb8(rgb_scene(height, width, seed=seed + index), pts=1000 + 40 * index))
    return frames


def direct_infer(url: str, scale: int, i420: np.ndarray) -> np.ndarray:
    with grpcclient.InferenceServerClient(url) as client:
        tensor = grpcclient.InferInput(INPUT_NAME, list(i420.shape), "UINT8")
        tensor.set_data_from_numpy(i420)
        return client.infer(ensemble_name(scale), [tensor]).as_numpy(OUTPUT_NAME)


def our_server_regions(url: str) -> list[str]:
    with grpcclient.InferenceServerClient(url) as client:
        return [name for name in client.get_system_shared_memory_status().regions if name.startswith(region_prefix())]


def our_dev_shm_regions() -> list[str]:
    return [name for name in os.listdir("/dev/shm") if name.startswith(region_prefix())]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def assert_same_frames(converted: list[HdrFrame], expected: list[HdrFrame]) -> None:
    assert [frame.pts for frame in converted] == [frame.pts for frame in expected]
    for got, want in zip(converted, expected):
        assert got.i420.shape == want.i420.shape
        assert np.array_equal(got.i420, want.i420), f"frame pts {got.pts} differs"


# --------------------------------------------------------------------------
# frames: no server


def test_from_rgb8_is_bt709_narrow_range_not_opencv_bt601():
    kr, kb = 0.2126, 0.0722  # BT.709-6 item 3.2, independent of sritm_core.colour

    def bt709_codes(r: float, g: float, b: float) -> tuple[int, int, int]:
        y = kr * r + (1 - kr - kb) * g + kb * b
        return (round(16 + 219 * y), round(128 + 224 * (b - y) / (2 * (1 - kb))),
                round(128 + 224 * (r - y) / (2 * (1 - kr))))

    for rgb, expected in [((255, 255, 255), (235, 128, 128)), ((0, 0, 0), (16, 128, 128)),
                          ((255, 0, 0), (63, 102, 240)), ((0, 255, 0), (173, 42, 26)), ((0, 0, 255), (32, 240, 118))]:
        assert bt709_codes(*(c / 255 for c in rgb)) == expected
        frame = SdrFrame.from_rgb8(np.full((4, 6, 3), rgb, np.uint8), pts=7)
        assert (frame.height, frame.width, frame.pts) == (4, 6, 7)
        assert frame.i420.shape == (6, 6) and frame.i420.dtype == np.uint8
        assert [int(frame.y[0, 0]), int(frame.u[0, 0]), int(frame.v[0, 0])] == list(expected), rgb
        assert np.all(frame.y == expected[0]) and np.all(frame.u == expected[1]) and np.all(frame.v == expected[2])
        opencv_bt601 = cv2.cvtColor(np.full((4, 6, 3), rgb, np.uint8), cv2.COLOR_RGB2YUV_I420)
        if len(set(rgb)) > 1:  # grey has Cb = Cr = 128 in every matrix
            assert not np.array_equal(frame.i420, opencv_bt601), rgb


def test_frames_validate_their_layout_in_one_line():
    for array, problem in [(np.zeros((25, 32), np.uint8), "not 3H/2"), (np.zeros((24, 31), np.uint8), "even height"),
                           (np.zeros((24, 32), np.float32), "must be uint8"),
                           (np.zeros((2, 24, 32), np.uint8), "2 dimensions")]:
        with pytest.raises(InvalidFrameError, match=problem) as raised:
            SdrFrame.from_i420(array)
        assert "\n" not in str(raised.value)
    with pytest.raises(InvalidFrameError, match=r"\(H, W, 3\) uint8"):
        SdrFrame.from_rgb8(np.zeros((4, 4, 3), np.float32))  # type: ignore[arg-type]
    with pytest.raises(InvalidFrameError, match="uint16"):
        HdrFrame.from_i420(np.zeros((6, 4), np.uint8))  # type: ignore[arg-type]


def test_hdr_frame_to_rgb_pq16():
    def uniform(y: int, c: int) -> HdrFrame:
        return HdrFrame.from_i420(
            np.concatenate([np.full(16, y), np.full(8, c)]).astype(np.uint16).reshape(6, 4), pts=3
        )

    assert np.all(uniform(940, 512).to_rgb_pq16() == 65535)  # 10-bit reference white: PQ signal 1.0
    assert np.all(uniform(64, 512).to_rgb_pq16() == 0)
    grey = uniform(502, 512).to_rgb_pq16()  # (502 - 64) / 876 = 0.5
    assert grey.shape == (4, 4, 3) and grey.dtype == np.uint16
    assert np.all(grey == 32768)


def test_stream_book_orders_by_request_id_not_arrival():
    """The reorder logic alone, with answers in a shuffled order the CPU server rarely produces."""
    book = StreamBook(window=5)
    frames = [SdrFrame.from_rgb8(np.zeros((2, 2, 3), np.uint8), pts) for pts in range(5)]
    ids = [book.request_id(book.admit(frame)) for frame in frames]
    assert not book.has_room()
    yielded: list[int] = []
    for request_id in [ids[3], ids[1], ids[4], ids[0], ids[2]]:
        sequence = book.sequence_of(request_id)
        assert sequence is not None
        book.answer(sequence, HdrFrame.from_i420(np.zeros((6, 4), np.uint16), frames[sequence].pts))
        yielded += [frame.pts for frame in book.ready()]
    assert yielded == [0, 1, 2, 3, 4]
    assert book.sequence_of(ids[2]) is None  # a late duplicate after a re-send is ignored
    assert book.sequence_of("another-stream:0") is None
    assert book.finished(source_exhausted=True)


def test_tls_options_reach_grpc():
    arguments = connection_arguments("host:8001", TlsOptions("ca.pem", "key.pem", Path("chain.pem")), RetryPolicy())
    assert (arguments["ssl"], arguments["root_certificates"], arguments["private_key"],
            arguments["certificate_chain"]) == (True, "ca.pem", "key.pem", "chain.pem")
    channel = dict(arguments["channel_args"])
    assert (channel["grpc.max_send_message_length"] >= 3840 * 2160 * 3
            and channel["grpc.max_receive_message_length"] >= 2**30)
    assert "grpc.keepalive_time_ms" in channel
    assert "ssl" not in connection_arguments("host:8001", None, RetryPolicy())


def test_import_without_torch():
    blocker = (
        "import sys\n"
        "class BlockTorch:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ImportError('torch is blocked')\n"
        "sys.meta_path.insert(0, BlockTorch())\n"
        "import sritm_client\n"
        "from sritm_client import *\n"
        "import sritm_client.aio, sritm_client.shm\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print(len(sritm_client.__all__))\n"
    )
    completed = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    assert int(completed.stdout) == 11


def test_sdk_passes_mypy_strict(tmp_path):
    """``mypy --strict`` with the project's [tool.mypy] settings, over the whole ``sritm_client`` package."""
    settings = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    lines = ["[mypy]", "strict = True"] + [f"{key} = {value}" for key, value in settings.items() if key != "overrides"]
    for override in settings.get("overrides", []):
        modules = override["module"] if isinstance(override["module"], list) else [override["module"]]
        lines.append(f"[mypy-{','.join(modules)}]")
        lines += [f"{key} = {value}" for key, value in override.items() if key != "module"]
    config = tmp_path / "mypy.ini"
    config.write_text("\n".join(lines) + "\n")
    completed = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(config), "--cache-dir", str(tmp_path / "cache"),
         str(ROOT / "client" / "sritm_client")],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


# --------------------------------------------------------------------------
# against the server



@pytest.fixture(scope="module")
def clients(triton_server) -> Iterator[dict[int, SritmClient]]:
    with SritmClient(triton_server.grpc_url, scale=2) as x2, SritmClient(triton_server.grpc_url, scale=4) as x4:
        yield {2: x2, 4: x4}


@pytest.mark.server
@pytest.mark.parametrize("scale, height, width", [(2, 30, 44), (4, 24, 40)])
def test_convert_equals_direct_tritonclient_infer(triton_server, clients, scale, height, width):
    frame = SdrFrame.from_rgb8(rgb_scene(height, width, seed=scale), pts=123)
    converted = clients[scale].convert(frame)
    assert isinstance(converted, HdrFrame)
    assert converted.pts == 123
    assert converted.i420.dtype == np.uint16
    assert converted.i420.shape == (scale * height * 3 // 2, scale * width)
    assert (converted.height, converted.width) == (scale * height, scale * width)
    assert converted.to_numpy().tobytes() == direct_infer(triton_server.grpc_url, scale, frame.i420).tobytes()
    assert (converted.y.shape == (scale * height, scale * width)
            and converted.u.shape == (scale * height // 2, scale * width // 2))


@pytest.mark.server
def test_a_frame_over_4_mb_goes_through_the_sdk_and_the_ensemble(clients, served_networks):
    """x2 from 540x960: a 6.2 MB answer (gRPC's default limit is 4 MB), equal to PyTorch within one code."""
    import torch

    from sritm_serving import processing

    frame = SdrFrame.from_rgb8(rgb_scene(540, 960, seed=21), pts=7)
    converted = clients[2].convert(frame)
    assert converted.i420.nbytes > 4 * 2**20 and (converted.height, converted.width) == (1080, 1920)
    network = served_networks[2]
    network.bicubic_skip = True
    with torch.no_grad():
        output = network(torch.from_numpy(processing.network_input_from_i420(frame.i420))).numpy()
    expected = processing.i420_from_network_output(output)
    assert np.abs(converted.i420.astype(np.int32) - expected.astype(np.int32)).max() <= 1


@pytest.mark.server
@pytest.mark.parametrize("window", [1, 8])
def test_stream_keeps_input_order_and_frame_identity(clients, window):
    frames = mixed_frames(12, seed=window)
    assert len({(f.height, f.width) for f in frames}) >= 3
    expected = [clients[4].convert(frame) for frame in frames]
    assert_same_frames(list(clients[4].stream(iter(frames), window=window)), expected)


@pytest.mark.server
def test_stream_with_shared_memory_is_identical_and_cleans_up(triton_server, clients):
    frames = mixed_frames(10, seed=21)
    plain = list(clients[2].stream(frames, window=4))
    with SritmClient(triton_server.grpc_url, scale=2, use_shared_memory=True) as client:
        assert_same_frames(list(client.stream(frames, window=4)), plain)
        assert our_server_regions(triton_server.grpc_url) == [] and our_dev_shm_regions() == []

        too_small = SdrFrame.from_i420(np.zeros((12, 8), np.uint8), pts=666)  # a valid layout the server refuses
        converted: list[HdrFrame] = []
        with pytest.raises(InvalidFrameError, match="smaller than the minimum") as raised:
            for frame in client.stream(frames[:4] + [too_small] + frames[4:], window=3):
                converted.append(frame)
        assert raised.value.pts == 666
        assert_same_frames(converted, plain[:4])
        assert our_server_regions(triton_server.grpc_url) == [] and our_dev_shm_regions() == []

        assert_same_frames([client.convert(frame) for frame in frames[:3]], plain[:3])
        assert len(our_server_regions(triton_server.grpc_url)) == 2  # convert's own pair, kept for reuse
    assert our_server_regions(triton_server.grpc_url) == [] and our_dev_shm_regions() == []


@pytest.mark.server
def test_invalid_frame_carries_the_server_message_and_client_keeps_working(clients):
    good = SdrFrame.from_rgb8(rgb_scene(16, 24, seed=5), pts=1)
    before = clients[4].convert(good)
    with pytest.raises(InvalidFrameError) as raised:
        clients[4].convert(SdrFrame.from_i420(np.zeros((12, 8), np.uint8), pts=9))
    assert raised.value.server_message is not None
    assert "SDR_I420: the frame 8×8 is smaller than the minimum 16×16" in raised.value.server_message
    assert raised.value.server_message in str(raised.value) and raised.value.pts == 9
    assert np.array_equal(clients[4].convert(good).i420, before.i420)
    with pytest.raises(TypeError, match="SdrFrame"):
        clients[4].convert(np.zeros((24, 16), np.uint8))  # type: ignore[arg-type]


@pytest.mark.server
def test_unreachable_server_is_unavailable_within_the_deadline():
    url = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(ServerUnavailableError, match="not ready within 2 s"):
        SritmClient(url, ready_timeout_s=2.0, retry=RetryPolicy(deadline_s=2.0))
    assert time.monotonic() - started < 3.5

    async def connect() -> None:
        async with AsyncSritmClient(url, ready_timeout_s=1.0):
            pass

    started = time.monotonic()
    with pytest.raises(ServerUnavailableError):
        asyncio.run(connect())
    assert time.monotonic() - started < 2.5


@pytest.mark.server
def test_every_call_has_a_deadline(triton_server):
    frame = SdrFrame.from_rgb8(rgb_scene(48, 64, seed=3))  # ~0.3 s on the CPU server
    with SritmClient(triton_server.grpc_url, scale=4, timeout_s=0.02, retry=RetryPolicy(attempts=2)) as client:
        with pytest.raises(ServerUnavailableError):
            client.convert(frame)


@pytest.mark.server
def test_contract_mismatch_is_reported(triton_server):
    with grpcclient.InferenceServerClient(triton_server.grpc_url) as client:
        check_contract(client.get_model_metadata("sritm_x4"), "sritm_x4")
        with pytest.raises(ContractMismatchError, match="LR_YUV"):
            check_contract(client.get_model_metadata("sritm_preprocess"), "sritm_preprocess")


@pytest.mark.server
def test_async_client_converts_and_streams_in_order(triton_server, clients):
    frames = mixed_frames(9, seed=33)
    expected = [clients[4].convert(frame) for frame in frames]

    async def source() -> AsyncIterator[SdrFrame]:
        for frame in frames:
            await asyncio.sleep(0)
            yield frame

    async def run() -> tuple[HdrFrame, list[HdrFrame], list[HdrFrame], list[HdrFrame]]:
        async with AsyncSritmClient(triton_server.grpc_url, scale=4) as client:
            single = await client.convert(frames[0])
            from_async = [frame async for frame in client.stream(source(), window=4)]
            from_list = [frame async for frame in client.stream(frames, window=1)]
            with pytest.raises(InvalidFrameError, match="smaller than the minimum"):
                await client.convert(SdrFrame.from_i420(np.zeros((12, 8), np.uint8)))
        async with AsyncSritmClient(triton_server.grpc_url, scale=4, use_shared_memory=True) as client:
            shared = [frame async for frame in client.stream(frames, window=8)]
        return single, from_async, from_list, shared

    single, from_async, from_list, shared = asyncio.run(run())
    assert_same_frames([single], expected[:1])
    assert_same_frames(from_async, expected)
    assert_same_frames(from_list, expected)
    assert_same_frames(shared, expected)
    assert our_server_regions(triton_server.grpc_url) == [] and our_dev_shm_regions() == []
