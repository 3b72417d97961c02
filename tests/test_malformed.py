"""Malformed input, in one table: each case is its own test, against the session's real Triton server.

Each case asserts (a) a clear error that names the problem -- a gRPC status with
a readable message from the server, or a one-line message from the SDK or the
CLI -- and (b) that the server keeps serving: the next valid frame's answer is
byte-identical to the known-good answer computed once per session.

``where`` says who answers:

* ``Triton core`` -- the server checks the request against the ensemble's
  config (data type, rank, names, byte size, model, version) before any model
  runs;
* ``sritm_preprocess`` -- the pre-processor checks the frame's shape (layout and
  the frame limits of its config) before it touches the buffer;
* ``gRPC client`` -- a channel's message-size limit, enforced on the client side
  (Triton's own gRPC limit is fixed at INT32_MAX, 2 GiB, and not configurable in
  2.51; the SDK raises its channel limits to the same);
* ``SDK`` -- ``sritm_client`` (frame validation, scale, the server's answer
  translated into ``InvalidFrameError``);
* ``CLI`` -- ``sritm convert``: one line ``sritm: error: …`` and exit status 1.

Requests go through raw gRPC (``service_pb2``), not tritonclient, so that a
request can say what tritonclient would refuse to build (a declared shape that
does not match the bytes, for instance).

Reproduce: ``nice -n 10 .venv/bin/python -m pytest tests/test_malformed.py -v``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import cv2
import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc

from sritm_client import InvalidFrameError, SdrFrame, SritmClient
from sritm_client.cli import main as sritm
from sritm_core.contract import INPUT_NAME, OUTPUT_NAME, FrameLimits

from media import write_sdr

pytestmark = pytest.mark.server

LIMITS = FrameLimits()
GOOD_HEIGHT, GOOD_WIDTH = 16, 24


def good_frame() -> np.ndarray:
    """A legal 16×24 I420 frame with structure (gradients and noise), the same in every session."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:GOOD_HEIGHT, 0:GOOD_WIDTH] / GOOD_WIDTH
    rgb = np.clip(np.stack([xx, yy, (xx + yy) / 2], axis=-1) + rng.normal(0, 0.05, (GOOD_HEIGHT, GOOD_WIDTH, 3)), 0, 1)
    return SdrFrame.from_rgb8(np.rint(rgb * 255).astype(np.uint8)).i420


def serve_good_frame(url: str) -> bytes:
    with grpcclient.InferenceServerClient(url) as client:
        frame = good_frame()
        tensor = grpcclient.InferInput(INPUT_NAME, list(frame.shape), "UINT8")
        tensor.set_data_from_numpy(frame)
        return bytes(client.infer("sritm_x4", [tensor]).as_numpy(OUTPUT_NAME).tobytes())


@pytest.fixture(scope="session")
def known_good(triton_server) -> bytes:
    """The session server's answer to the good frame, before any malformed request."""
    return serve_good_frame(triton_server.grpc_url)


# --------------------------------------------------------------------------
# How a case acts: raw gRPC, the SDK, or the CLI. Each returns (error kind, message).


@dataclass
class Env:
    url: str
    tmp: Path
    capfd: Any


Tensor = tuple[str, str, Sequence[int], bytes]


def frame(rows: int, cols: int, dtype: Any = np.uint8, datatype: str = "UINT8", shape: Sequence[int] | None = None,
          payload_rows: int | None = None) -> Tensor:
    """An SDR_I420 tensor: ``shape`` as declared (default rows×cols), bytes of ``payload_rows``×cols (default rows)."""
    data = np.full((rows if payload_rows is None else payload_rows, cols), 100, dtype)
    return INPUT_NAME, datatype, list(shape if shape is not None else (rows, cols)), data.tobytes()


def raw_infer(
    url: str, inputs: Sequence[Tensor], *, model: str = "sritm_x4", version: str = "", outputs: Sequence[str] = (),
    options: Sequence[tuple[str, int]] = (),
) -> tuple[str, str]:
    channel = grpc.insecure_channel(url, options=list(options))
    try:
        request = service_pb2.ModelInferRequest(model_name=model, model_version=version)
        for name, datatype, shape, payload in inputs:
            tensor = request.inputs.add()
            tensor.name, tensor.datatype = name, datatype
            tensor.shape.extend(shape)
            request.raw_input_contents.append(payload)
        for name in outputs:
            request.outputs.add().name = name
        service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=60)
    except grpc.RpcError as error:
        return error.code().name, str(error.details())
    finally:
        channel.close()
    return "OK", ""


def server(*inputs: Tensor, **options: Any) -> Callable[[Env], tuple[str, str]]:
    return lambda env: raw_infer(env.url, inputs, **options)


def sdk(call: Callable[[Env], object]) -> Callable[[Env], tuple[str, str]]:
    def act(env: Env) -> tuple[str, str]:
        try:
            call(env)
        except Exception as error:  # the type is what the case checks
            return type(error).__name__, str(error)
        return "OK", ""

    return act


def cli(make_input: Callable[[Path], Path], output: str = "out.mkv") -> Callable[[Env], tuple[str, str]]:
    """``sritm convert INPUT OUTPUT`` in this process; stdout and stderr captured at the file-descriptor level."""

    def act(env: Env) -> tuple[str, str]:
        source = make_input(env.tmp)
        env.capfd.readouterr()
        code = sritm(["convert", str(source), str(env.tmp / output), "--url", env.url, "--quiet"])
        err = env.capfd.readouterr().err.strip()
        if code == 0:
            return "OK", err
        lines = err.splitlines()
        assert code == 1 and len(lines) == 1 and lines[0].startswith("sritm: error: "), (code, err)
        return "sritm: error", lines[0]

    return act


# --------------------------------------------------------------------------
# Media for the CLI cases.


def video(path: Path, **kwargs: Any) -> Path:
    write_sdr(path, **kwargs)
    return path


def cut(path: Path, keep: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def damaged(path: Path) -> Path:
    data = bytearray(path.read_bytes())
    start = len(data) // 3
    data[start : start + 2000] = np.random.default_rng(3).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


def audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000, layout="mono")
        samples = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        samples.sample_rate, samples.pts = 8000, 0
        container.mux(stream.encode(samples))
        container.mux(stream.encode(None))
    return path


def image(path: Path, array: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), array)
    return path


def empty(path: Path) -> Path:
    path.touch()
    return path


def with_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------
# SDK cases.


def reshaped_after_construction(env: Env) -> object:
    sdr = SdrFrame.from_i420(good_frame(), pts=7)
    sdr.i420.shape = (16, 36)  # a valid array, no longer a valid I420 frame (16 rows are not 3H/2 of even H)
    with SritmClient(env.url, scale=4) as client:
        return client.convert(sdr)


def convert(i420: np.ndarray, pts: int = 0) -> Callable[[Env], object]:
    def call(env: Env) -> object:
        with SritmClient(env.url, scale=4) as client:
            return client.convert(SdrFrame.from_i420(i420, pts=pts))

    return call


def stream_with_a_bad_frame(env: Env) -> object:
    good = SdrFrame.from_i420(good_frame(), pts=0)
    bad = SdrFrame.from_i420(np.zeros((3 * (LIMITS.max_height + 2) // 2, 32), np.uint8), pts=80)
    with SritmClient(env.url, scale=4) as client:
        done = []
        try:
            for hdr in client.stream([good, good, bad, good], window=4):
                done.append(hdr.pts)
        except InvalidFrameError as error:
            assert done == [0, 0] and error.pts == 80
            raise
    return done


# --------------------------------------------------------------------------
# The table.


@dataclass(frozen=True)
class Case:
    where: str
    error: str
    says: str
    act: Callable[[Env], tuple[str, str]]


OVER_HEIGHT = 3 * (LIMITS.max_height + 2) // 2
CASES: dict[str, Case] = {
    # --- data type and rank (Triton core, from the ensemble's config)
    "dtype FP32": Case("Triton core", "INVALID_ARGUMENT", "data-type is 'FP32', but model 'sritm_x4' expects 'UINT8'",
                       server(frame(24, 16, np.float32, "FP32"))),
    "dtype UINT16 (10-bit samples)": Case("Triton core", "INVALID_ARGUMENT", "data-type is 'UINT16'",
                                          server(frame(24, 16, np.uint16, "UINT16"))),
    "rank 3": Case("Triton core", "INVALID_ARGUMENT", "Expected [-1,-1], got [2,24,16]",
                   server(frame(48, 16, shape=[2, 24, 16]))),
    "rank 1": Case("Triton core", "INVALID_ARGUMENT", "Expected [-1,-1], got [384]",
                   server(frame(24, 16, shape=[384]))),
    # --- layout and limits (sritm_preprocess, from the shape alone)
    "zero rows": Case("sritm_preprocess", "INVALID_ARGUMENT", "the frame is empty (0×32)", server(frame(0, 32))),
    "zero columns": Case("sritm_preprocess", "INVALID_ARGUMENT", "the frame is empty (24×0)", server(frame(24, 0))),
    "odd width": Case("sritm_preprocess", "INVALID_ARGUMENT", "even height and width, got 16×31",
                      server(frame(24, 31))),
    "odd height (H=17: 26 rows)": Case("sritm_preprocess", "INVALID_ARGUMENT", "row count 26 is not 3H/2",
                                       server(frame(26, 32))),
    "rows not 3H/2": Case("sritm_preprocess", "INVALID_ARGUMENT", "row count 25 is not 3H/2", server(frame(25, 32))),
    "smaller than the minimum": Case("sritm_preprocess", "INVALID_ARGUMENT", "8×8 is smaller than the minimum 16×16",
                                     server(frame(12, 8))),
    "height over the maximum": Case("sritm_preprocess", "INVALID_ARGUMENT",
                                    f"{LIMITS.max_height + 2}×64 is larger than the maximum 1088×1920",
                                    server(frame(OVER_HEIGHT, 64))),
    "width over the maximum": Case("sritm_preprocess", "INVALID_ARGUMENT",
                                   "16×1922 is larger than the maximum 1088×1920", server(frame(24, 1922))),
    # --- bytes that do not match the declared shape (Triton core, before any model)
    "truncated payload": Case("Triton core", "INVALID_ARGUMENT", "byte size mismatch for input 'SDR_I420' for model "
                              "'sritm_x4'. Expected 384, got 320", server(frame(24, 16, payload_rows=20))),
    "payload longer than the shape": Case("Triton core", "INVALID_ARGUMENT", "Expected 384, got 480",
                                          server(frame(24, 16, payload_rows=30))),
    "huge declared shape, small payload": Case("Triton core", "INVALID_ARGUMENT", "Expected 15000000000, got 384",
                                               server(frame(24, 16, shape=[150_000, 100_000]))),
    # --- inputs, outputs, models
    "missing input": Case("Triton core", "INVALID_ARGUMENT", "missing required input(s) ['SDR_I420']", server()),
    "extra input": Case("Triton core", "INVALID_ARGUMENT", "unexpected inference input 'EXTRA'",
                        server(frame(24, 16), ("EXTRA", "UINT8", [1], b"\0"))),
    "misnamed input": Case("Triton core", "INVALID_ARGUMENT", "unexpected inference input 'FRAME'",
                           server(("FRAME", "UINT8", [24, 16], bytes(384)))),
    "unknown output requested": Case("Triton core", "INVALID_ARGUMENT", "unexpected inference output 'HDR'",
                                     server(frame(24, 16), outputs=["HDR"])),
    "unknown model": Case("Triton core", "NOT_FOUND", "unknown model: 'sritm_x3' is not found",
                          server(frame(24, 16), model="sritm_x3")),
    "unknown version": Case("Triton core", "NOT_FOUND", "'sritm_x4' version 2 is not found",
                            server(frame(24, 16), version="2")),
    # --- gRPC message limits
    "request above the channel's send limit": Case(
        "gRPC client", "RESOURCE_EXHAUSTED", "Sent message larger than max",
        server(frame(24, 16), options=[("grpc.max_send_message_length", 256)])),
    "answer above the channel's receive limit": Case(
        "gRPC client", "RESOURCE_EXHAUSTED", "Received message larger than max",
        server(frame(24, 16), options=[("grpc.max_receive_message_length", 1024)])),
    # --- the SDK
    "SDK: float frame": Case("SDK", "InvalidFrameError", "the I420 buffer must be uint8, not float32",
                             sdk(lambda env: SdrFrame.from_i420(np.zeros((24, 16), np.float32)))),  # type: ignore[arg-type]
    "SDK: RGBA image": Case("SDK", "InvalidFrameError", "needs an (H, W, 3) uint8 array",
                            sdk(lambda env: SdrFrame.from_rgb8(np.zeros((16, 16, 4), np.uint8)))),
    "SDK: frame reshaped after construction": Case("SDK", "InvalidFrameError", "invalid SdrFrame (pts 7)",
                                                   sdk(reshaped_after_construction)),
    "SDK: frame over the server's maximum": Case(
        "SDK (server's message)", "InvalidFrameError",
        "the server rejected the frame (pts 5): in ensemble 'sritm_x4', SDR_I420: "
        f"the frame {LIMITS.max_height + 2}×32 is larger than the maximum",
        sdk(convert(np.zeros((OVER_HEIGHT, 32), np.uint8), pts=5))),
    "SDK: bad frame inside a stream": Case("SDK (server's message)", "InvalidFrameError", "(pts 80)",
                                           sdk(stream_with_a_bad_frame)),
    "SDK: unknown scale": Case("SDK", "ValueError", "scale must be one of (2, 4), not 3",
                               sdk(lambda env: SritmClient(env.url, scale=3))),
    # --- the CLI
    "CLI: missing file": Case("CLI", "sritm: error", "does not exist", cli(lambda d: d / "nowhere.mp4")),
    "CLI: zero-byte video": Case("CLI", "sritm: error", "file is empty (0 bytes)",
                                 cli(lambda d: empty(d / "empty.mp4"))),
    "CLI: zero-byte image": Case("CLI", "sritm: error", "is empty (0 bytes)",
                                 cli(lambda d: empty(d / "e.png"), "o.png")),
    "CLI: corrupt video (random bytes)": Case(
        "CLI", "sritm: error", "not a readable video file",
        cli(lambda d: with_bytes(d / "garbage.mkv", np.random.default_rng(1).bytes(4096)))),
    "CLI: truncated MP4 (index lost)": Case("CLI", "sritm: error", "not a readable video file",
                                            cli(lambda d: cut(video(d / "clip.mp4"), 0.5))),
    "CLI: truncated Matroska": Case("CLI", "sritm: error",
                                    "only 4 of its 10 frames could be decoded (truncated or corrupt",
                                    cli(lambda d: cut(video(d / "clip.mkv", codec="ffv1"), 0.5))),
    "CLI: Matroska damaged mid-file": Case("CLI", "sritm: error", "of its 10 frames could be decoded",
                                           cli(lambda d: damaged(video(d / "clip.mkv", codec="ffv1")))),
    "CLI: 10-bit video": Case("CLI", "sritm: error", "10-bit input is not supported",
                              cli(lambda d: video(d / "ten.mkv", codec="ffv1", pix_fmt="yuv420p10le", n=2))),
    "CLI: no video stream": Case("CLI", "sritm: error", "has no video stream", cli(lambda d: audio_only(d / "a.mka"))),
    "CLI: image with alpha": Case("CLI", "sritm: error", "has an alpha channel",
                                  cli(lambda d: image(d / "rgba.png", np.zeros((16, 16, 4), np.uint8)), "o.png")),
    "CLI: greyscale image": Case("CLI", "sritm: error", "is greyscale",
                                 cli(lambda d: image(d / "grey.png", np.zeros((16, 16), np.uint8)), "o.png")),
    "CLI: 16-bit image": Case("CLI", "sritm: error", "has 16-bit samples",
                              cli(lambda d: image(d / "deep.png", np.zeros((16, 16, 3), np.uint16)), "o.png")),
    "CLI: not an image": Case("CLI", "sritm: error", "is not a readable PNG or JPEG image",
                              cli(lambda d: with_bytes(d / "text.png", b"not a picture"), "o.png")),
    "CLI: image over the server's maximum": Case(
        "CLI (server's message)", "sritm: error", f"{LIMITS.max_height + 2}×16 is larger than the maximum 1088×1920",
        cli(lambda d: image(d / "tall.png", np.zeros((LIMITS.max_height + 2, 16, 3), np.uint8)), "o.png")),
}


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_input_is_named_and_the_server_keeps_serving(case, triton_server, known_good, tmp_path, capfd):
    spec = CASES[case]
    kind, message = spec.act(Env(triton_server.grpc_url, tmp_path, capfd))
    assert kind == spec.error, f"{case}: got {kind}: {message}"
    assert spec.says in message, message
    assert message.strip() and "\n" not in message.strip(), message
    assert serve_good_frame(triton_server.grpc_url) == known_good, f"{case}: the server's answers changed"


# --------------------------------------------------------------------------
# A frame over the limit is refused before anything is allocated for it.


def group_rss(pgid: int) -> int:
    """Resident bytes of every process in the server's group (tritonserver and its stubs; shared pages count twice)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == pgid:
                    total += memory(int(entry.name))["VmRSS"]
            except (ProcessLookupError, FileNotFoundError):
                pass
    return total


def memory(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024
    return fields


def reset_peak(pid: int) -> None:
    """Resets the process's VmHWM (peak RSS) to its current RSS (proc(5), clear_refs "5")."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def peak_growth(pid: int, request: Callable[[], tuple[str, str]]) -> tuple[int, tuple[str, str]]:
    reset_peak(pid)
    before = memory(pid)["VmRSS"]
    answer = request()
    return memory(pid)["VmHWM"] - before, answer


def test_a_frame_over_the_limit_is_refused_before_anything_is_allocated(triton_server, known_good):
    """Honestly: Triton must receive a frame's bytes before anyone can look at its shape.

    A frame just over the limit (1090×1920: 3.1 MB of I420) crosses gRPC and
    is copied into the pre-processor stub's shared memory like any other; what
    the check saves is everything after that. The pre-processor rejects it from
    its shape, before it reads the buffer or allocates the 25 MB float tensor
    (3×H×W×4 bytes) that the frame would need first, let alone the network's
    activations. Measured on the pre-processor stub's peak RSS (VmHWM, reset
    just before): the rejected frame raises it by at most a few times its own
    bytes (6 MB on a fresh stub: the copy into its shared memory), while
    the largest accepted frame (1088×1920, sent to ``sritm_preprocess`` alone as
    a control) raises it by more than that float tensor. And three more
    rejected frames grow the server group (tritonserver and its stubs) by less
    than that one tensor: measured 0-10 MB per three, in tritonserver itself
    (gRPC's received messages, kept by malloc), plateauing about 25 MB above
    idle after ~60 rejected 3 MB frames -- a cache, not a leak.
    """
    url = triton_server.grpc_url
    stub = triton_server.stub_processes()["sritm_preprocess_0_0"]
    height, width = LIMITS.max_height, LIMITS.max_width
    over = frame(3 * (height + 2) // 2, width)
    float_tensor = 3 * height * width * 4
    frame_bytes = len(over[3])

    rejected_growth, answer = peak_growth(stub, lambda: raw_infer(url, [over]))
    assert answer[0] == "INVALID_ARGUMENT" and "larger than the maximum" in answer[1], answer
    accepted_growth, answer = peak_growth(
        stub, lambda: raw_infer(url, [frame(3 * height // 2, width)], model="sritm_preprocess", outputs=["LR_YUV"],
                               options=[("grpc.max_receive_message_length", 2**31 - 1)]))
    assert answer == ("OK", ""), answer
    assert accepted_growth > float_tensor, f"the control allocated only {accepted_growth} bytes"
    # Measured: twice the frame's bytes on a fresh stub (Triton's copy into the stub's shared memory), 0 once warm.
    assert rejected_growth <= 3 * frame_bytes < float_tensor, f"the rejected frame took {rejected_growth} bytes"

    group = triton_server.pid
    raw_infer(url, [over])
    before = group_rss(group)
    for _ in range(3):
        assert raw_infer(url, [over])[0] == "INVALID_ARGUMENT"
    grown = group_rss(group) - before
    assert grown < float_tensor, f"three rejected frames grew the server by {grown / 2**20:.1f} MiB"
    assert serve_good_frame(url) == known_good
