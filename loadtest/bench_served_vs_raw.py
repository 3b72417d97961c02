#!/usr/bin/env python
"""Per-frame latency of the served ensemble vs. the raw ONNX Runtime session, on the same frames, in one run.

Three ways through the same frames, interleaved frame by frame so that machine
noise hits them alike:

* ``raw_network``: the ONNX Runtime session alone (the served network's settings);
* ``raw_pipeline``: pre-processing + that session + post-processing in this process;
* ``ensemble``: a gRPC request to ``sritm_x{s}`` on a real Triton server.

It prints a Markdown table and JSON with medians and the ratios
ensemble/raw_network and ensemble/raw_pipeline. Needs ``make repository``.

    .venv/bin/python loadtest/bench_served_vs_raw.py --scale 4 --size 135x240 --frames 7
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

from gpgmnet.contract import INPUT_NAME, NETWORK_INPUT_NAME, NETWORK_OUTPUT_NAME, OUTPUT_NAME, ensemble_name, network_model_name
from gpgmnet.serving import bicubic_upsample, i420_from_network_output, make_onnx_session, network_input_from_i420
from gpgmnet.triton_server import ServerPorts, TritonServer

ROOT = Path(__file__).resolve().parent.parent


def random_i420(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(16, 236, size=(height * 3 // 2, width), dtype=np.uint8)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, choices=(2, 4), default=4)
    parser.add_argument("--size", default="135x240", help="low-resolution HEIGHTxWIDTH (even numbers are rounded up)")
    parser.add_argument("--frames", type=int, default=7)
    parser.add_argument("--repository", type=Path, default=ROOT / "model_repository")
    args = parser.parse_args(argv)
    height, width = (int(v) + int(v) % 2 for v in args.size.split("x"))
    onnx_path = args.repository / network_model_name(args.scale) / "1" / "model.onnx"
    if not onnx_path.is_file():
        print(f"error: {onnx_path} does not exist: run `make repository`", file=sys.stderr)
        return 2

    session = make_onnx_session(onnx_path)
    rng = np.random.default_rng(0)
    frames = [random_i420(height, width, rng) for _ in range(args.frames)]
    timings: dict[str, list[float]] = {"raw_network": [], "raw_pipeline": [], "ensemble": []}
    server = TritonServer(args.repository, ServerPorts.free())
    with server:
        client = grpcclient.InferenceServerClient(server.grpc_url)

        def ensemble(frame: np.ndarray) -> np.ndarray:
            request = grpcclient.InferInput(INPUT_NAME, list(frame.shape), "UINT8")
            request.set_data_from_numpy(frame)
            return client.infer(ensemble_name(args.scale), [request]).as_numpy(OUTPUT_NAME)

        def raw_network(frame: np.ndarray) -> np.ndarray:
            return session.run([NETWORK_OUTPUT_NAME], {NETWORK_INPUT_NAME: prepared[id(frame)]})[0]

        def raw_pipeline(frame: np.ndarray) -> np.ndarray:
            network_input = network_input_from_i420(frame)
            (residual,) = session.run([NETWORK_OUTPUT_NAME], {NETWORK_INPUT_NAME: network_input})
            return i420_from_network_output(residual + bicubic_upsample(network_input, args.scale))

        prepared = {id(frame): network_input_from_i420(frame) for frame in frames}
        ensemble(frames[0]), raw_pipeline(frames[0])  # warm-up: first-run allocations and graph caches
        for frame in frames:
            for name, run in (("raw_network", raw_network), ("raw_pipeline", raw_pipeline), ("ensemble", ensemble)):
                started = time.perf_counter()
                run(frame)
                timings[name].append(time.perf_counter() - started)

    medians = {name: statistics.median(values) for name, values in timings.items()}
    result = {
        "scale": args.scale,
        "input": f"{height}x{width}",
        "output": f"{height * args.scale}x{width * args.scale}",
        "frames": args.frames,
        "server_start_s": round(server.startup_seconds or 0.0, 2),
        "median_ms": {name: round(value * 1e3, 1) for name, value in medians.items()},
        "ensemble_over_raw_network": round(medians["ensemble"] / medians["raw_network"], 3),
        "ensemble_over_raw_pipeline": round(medians["ensemble"] / medians["raw_pipeline"], 3),
    }
    print(f"| path | median ms/frame ({height}x{width} -> x{args.scale}) |\n|---|---|")
    for name, value in result["median_ms"].items():  # type: ignore[union-attr]
        print(f"| {name} | {value} |")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
