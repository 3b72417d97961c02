#!/usr/bin/env python
"""Streaming throughput of the SDK: window 1 vs 8, shared memory vs plain gRPC, in one run.

Prints JSON to stdout: frames/s of each configuration and their ratios, all
measured against the same server in the same run, so the ratios hold even
where the absolute numbers depend on the machine. Not a test.

Without ``--url`` it starts its own Triton server on free loopback ports, on
``--model-repository`` or else on a CPU repository assembled in a temporary
folder the way the test suite does it (ONNX exported from the current code;
that path needs the ``net`` extra). Shared memory needs the server on this host.

    python loadtest/bench_streaming.py --height 64 --width 112 --scale 4 --frames 16
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from sritm_client import SdrFrame, SritmClient
from sritm_core.contract import SCALES, network_model_name
from sritm_serving.triton_server import ServerPorts, TritonServer

ROOT = Path(__file__).resolve().parent.parent
CONFIGURATIONS = ((1, False), (8, False), (1, True), (8, True))


def assembled_repository(work: Path) -> Path:
    """The CPU repository with both networks exported from the current code (what tests/conftest.py does)."""
    from build.assemble_repository import assemble
    from build.export_onnx import export_onnx
    from gpgmnet.checkpoint import load_network

    repository = work / "model_repository"
    for scale in SCALES:
        network = load_network(None, scale, random_weights=True)[0]
        export_onnx(network, work / "artifacts" / f"{network_model_name(scale)}.onnx")
    assemble("cpu", SCALES, work / "artifacts", repository)
    return repository


@contextlib.contextmanager
def server_url(args: argparse.Namespace) -> Iterator[str]:
    """The gRPC address of ``--url``, or of a server started for the block (see the module docstring)."""
    if args.url:
        yield args.url
        return
    with tempfile.TemporaryDirectory(prefix="sritm-bench-") as work:
        repository = args.model_repository or assembled_repository(Path(work))
        with TritonServer(repository, ServerPorts.free(), log_path=Path(work) / "tritonserver.log") as server:
            yield server.grpc_url


def synthetic_frames(count: int, height: int, width: int) -> list[SdrFrame]:
    """Distinct frames (a moving gradient with noise), so no stage can cache an answer."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    frames = []
    for index in range(count):
        rgb = np.stack([0.5 + 0.5 * np.sin(6 * xx + index / 3), yy, (xx + yy + index / count) % 1.0], axis=-1)
        rgb = np.clip(rgb + rng.normal(0, 0.02, rgb.shape), 0, 1)
        frames.append(SdrFrame.from_rgb8(np.rint(rgb * 255).astype(np.uint8), pts=index))
    return frames


def frames_per_second(client: SritmClient, frames: list[SdrFrame], window: int, repeats: int) -> float:
    """The median over ``repeats`` whole streams, after one warm-up stream (connection, regions, engine buffers)."""
    for _ in client.stream(frames[: min(len(frames), window + 1)], window=window):
        pass
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        count = sum(1 for _ in client.stream(frames, window=window))
        rates.append(count / (time.perf_counter() - started))
    return statistics.median(rates)


def main(argv: list[str] | None = None) -> int:
    """Measure every configuration against one server and print the JSON report; returns 0."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="an already running server's gRPC address (default: start one)")
    parser.add_argument("--model-repository", type=Path,
                        help="repository for the started server (default: assemble one)")
    parser.add_argument("--scale", type=int, choices=(2, 4), default=4)
    parser.add_argument("--height", type=int, default=64, help="low-resolution frame height")
    parser.add_argument("--width", type=int, default=112, help="low-resolution frame width")
    parser.add_argument("--frames", type=int, default=16, help="frames per stream")
    parser.add_argument("--repeats", type=int, default=3, help="streams per configuration (the median is reported)")
    parser.add_argument("--no-shm", action="store_true", help="skip shared memory (a server on another host)")
    args = parser.parse_args(argv)

    frames = synthetic_frames(args.frames, args.height, args.width)
    configurations = [(w, shm) for w, shm in CONFIGURATIONS if not (shm and args.no_shm)]
    results: dict[tuple[int, bool], float] = {}
    with server_url(args) as url:
        for window, shared_memory in configurations:
            with SritmClient(url, scale=args.scale, use_shared_memory=shared_memory) as client:
                results[window, shared_memory] = frames_per_second(client, frames, window, args.repeats)

    def ratio(numerator: tuple[int, bool], denominator: tuple[int, bool]) -> float | None:
        if numerator in results and denominator in results:
            return round(results[numerator] / results[denominator], 3)
        return None

    report = {
        "server": args.url or "started by the benchmark",
        "scale": args.scale,
        "lr_size": [args.height, args.width],
        "hdr_size": [args.scale * args.height, args.scale * args.width],
        "frames_per_stream": args.frames,
        "repeats": args.repeats,
        "frames_per_s": [
            {"window": w, "shared_memory": shm, "frames_per_s": round(rate, 2)} for (w, shm), rate in results.items()
        ],
        "ratios": {
            "window8_over_window1_plain": ratio((8, False), (1, False)),
            "window8_over_window1_shm": ratio((8, True), (1, True)),
            "shm_over_plain_window1": ratio((1, True), (1, False)),
            "shm_over_plain_window8": ratio((8, True), (8, False)),
        },
    }
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
