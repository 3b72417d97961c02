#!/usr/bin/env python
"""Benchmarks, all measured in one run on the same frames: served vs raw, ONNX Runtime vs PyTorch vs OpenVINO.

``make bench`` calls this. For each ``--sizes`` (low-resolution, default
68x120 and 136x240 at x4) it times, over the same ``--frames`` distinct frames
and in ``--rounds`` rounds whose order rotates (so machine noise hits every
path alike):

* ``raw_network``: an ONNX Runtime session alone, on the pre-processed frames,
  with the settings the CPU repository uses when its ``runtime`` parameter is
  ``onnxruntime`` (``sritm_serving.runtimes.make_onnx_session``, the
  repository's ``intra_op_threads``); the repository's default runtime is
  OpenVINO f32, which ``openvino`` measures;
* ``raw_pipeline``: pre-processing + that session + post-processing in this process;
* ``torch_eager``: the same network in PyTorch (eager, ``inference_mode``);
* ``openvino``: OpenVINO's CPU plugin on the same ``model.onnx`` in f32, like
  for like (where installed); ``openvino_default``: the plugin's default
  precision, which is bf16 on CPUs with AVX512-BF16 or AMX (its difference from
  ONNX Runtime is reported beside its speed);
* ``ensemble_unary``: one gRPC request per frame to ``sritm_x{s}`` on a real
  Triton server (``SritmClient.convert``);
* ``ensemble_stream``: the same frames through ``SritmClient.stream`` with
  ``--window`` frames in flight (how a video client drives it).

It reports per path the median ms per frame and frames/s, and the ratios
ensemble ÷ raw ONNX Runtime throughput (goal >= 0.9), ONNX Runtime ÷ PyTorch
eager, OpenVINO ÷ ONNX Runtime (f32 and default precision); per size, Triton's own account of where an
ensemble request's time goes (metrics scraped around the ensemble passes), and
the peak memory (RSS and PSS) of the server and its Python-backend stubs. It
also records the server's start-up time. Writes ``PREFIX.json`` and
``PREFIX.md`` under ``--reports-dir``. Needs ``make repository``.

    .venv/bin/python loadtest/bench.py --sizes 68x120,136x240 --frames 4 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from loadkit import (
    DEFAULT_REPOSITORY,
    REPORTS_DIR,
    MemorySampler,
    json_ready,
    metrics_delta,
    mib,
    parse_metrics,
    parse_sizes,
    random_i420_frames,
    scrape_metrics,
    size_label,
    where_time_goes,
    where_time_goes_markdown,
)

from sritm_core.contract import (
    NETWORK_CONDITION_NAME,
    NETWORK_INPUT_NAME,
    NETWORK_OUTPUT_NAME,
    Rendering,
    network_model_name,
)
from sritm_serving.processing import condition_one_hot, network_input_from_i420, postprocess
from sritm_serving.runtimes import compile_openvino, make_onnx_session
from sritm_serving.triton_server import ServerPorts, TritonServer, TritonServerError

BT2446A = condition_one_hot(Rendering())
"""Every benchmark request asks for the default convention."""
PATHS = (
    "raw_network", "raw_pipeline", "torch_eager", "openvino", "openvino_default", "ensemble_unary", "ensemble_stream",
)
THROUGHPUT_GOAL = 0.9


def served_parameter(model_dir: Path, key: str) -> str:
    """A parameter of the served network's config.pbtxt ("" when it has none)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    config = text_format.Parse((model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    return config.parameters[key].string_value if key in config.parameters else ""


def served_intra_op_threads(model_dir: Path) -> int:
    """The ``intra_op_threads`` parameter of the served network's config.pbtxt (0: every core)."""
    return int(served_parameter(model_dir, "intra_op_threads") or 0)


def openvino_model(onnx_path: Path, precision: str | None) -> tuple[Callable[[np.ndarray], np.ndarray] | None, str]:
    """OpenVINO's CPU plugin compiled from ``onnx_path`` (latency hint), or None and why not.

    ``precision="f32"`` is like for like with ONNX Runtime; ``None`` keeps the
    plugin's default, which is bf16 on CPUs with AVX512-BF16 or AMX.
    """
    try:
        import openvino as ov
    except ImportError as error:
        return None, f"not installed ({error}); `pip install openvino==2026.4.1` (the serve extra) supports numpy < 2"
    compiled = compile_openvino(onnx_path, precision)
    request = compiled.create_infer_request()
    threads = compiled.get_property("INFERENCE_NUM_THREADS")
    hint = compiled.get_property("INFERENCE_PRECISION_HINT")
    chosen = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)

    def run(network_input: np.ndarray) -> np.ndarray:
        request.infer({NETWORK_INPUT_NAME: network_input, NETWORK_CONDITION_NAME: BT2446A})
        return np.array(request.get_output_tensor(0).data)

    how = "set" if precision else "the plugin's default on this CPU"
    return run, (f"OpenVINO {ov.get_version().split('-')[0]}, CPU plugin, PERFORMANCE_HINT=LATENCY, "
                 f"{threads} inference threads, inference precision {chosen} ({how})")


def torch_model(scale: int) -> tuple[Callable[[np.ndarray], np.ndarray] | None, str]:
    """The network of ``scale`` in eager PyTorch, as it is exported (residual only), or None and why not.

    It has the shipped weights, or seeded random ones where none are shipped.
    """
    try:
        import torch

        from gpgmnet.checkpoint import load_network
    except ImportError as error:
        return None, f"not installed ({error})"
    network, metadata = load_network(None, scale, random_weights=True)
    network.bicubic_skip = False  # the served graph: the residual only

    def run(network_input: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return network(torch.from_numpy(network_input)).numpy()  # type: ignore[no-any-return]

    return run, (f"PyTorch {torch.__version__} eager, {torch.get_num_threads()} threads, "
                 f"weights: {metadata.get('source')}")


def timed_pass(run: Callable[[int], Any], count: int) -> tuple[float, list[float]]:
    """Frames 0..count-1 through ``run`` one after another: (seconds in all, seconds per frame)."""
    per_frame = []
    started = time.perf_counter()
    for index in range(count):
        began = time.perf_counter()
        run(index)
        per_frame.append(time.perf_counter() - began)
    return time.perf_counter() - started, per_frame


def main(argv: list[str] | None = None) -> int:
    """Build the engines, start a server, benchmark every size and write the reports.

    Returns:
        The exit status: 0, or 2 when the repository has no network or the server does not start.
    """
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    parser.add_argument("--scale", type=int, choices=(2, 4), default=4)
    parser.add_argument("--sizes", default="68x120,136x240", help="low-resolution HEIGHTxWIDTH, comma-separated")
    parser.add_argument("--frames", type=int, default=4, help="distinct frames per size")
    parser.add_argument("--rounds", type=int, default=3, help="passes over the frames per path (medians reported)")
    parser.add_argument("--window", type=int, default=4, help="frames in flight for ensemble_stream")
    parser.add_argument("--raw-threads", type=int, help="intra-op threads of the raw ONNX Runtime session "
                        "(default: the served config's intra_op_threads)")
    parser.add_argument("--skip", default="", help=f"paths to leave out, comma-separated ({', '.join(PATHS)})")
    parser.add_argument("--reports-dir", type=Path, default=REPORTS_DIR)
    parser.add_argument("--prefix", default="bench")
    args = parser.parse_args(argv)

    sizes = parse_sizes(args.sizes)
    model_dir = args.repository / network_model_name(args.scale)
    onnx_path = model_dir / "1" / "model.onnx"
    if not onnx_path.is_file():
        print(f"error: {onnx_path} does not exist: run `make repository`", file=sys.stderr)
        return 2
    skip = {p.strip() for p in args.skip.split(",") if p.strip()}
    threads = served_intra_op_threads(model_dir) if args.raw_threads is None else args.raw_threads
    session = make_onnx_session(onnx_path, threads)
    engines: dict[str, tuple[Callable[[np.ndarray], np.ndarray] | None, str]] = {
        "raw_network": (lambda x: session.run([NETWORK_OUTPUT_NAME], {NETWORK_INPUT_NAME: x,
                                                                      NETWORK_CONDITION_NAME: BT2446A})[0],
                        f"ONNX Runtime {__import__('onnxruntime').__version__}, intra_op_threads={threads} "
                        f"({'the served config' if args.raw_threads is None else '--raw-threads'}), inter_op 1, "
                        "sequential, ORT_ENABLE_ALL"),
    }
    engines["torch_eager"] = (None, "skipped") if "torch_eager" in skip else torch_model(args.scale)
    engines["openvino"] = (None, "skipped") if "openvino" in skip else openvino_model(onnx_path, "f32")
    engines["openvino_default"] = (None, "skipped") if "openvino_default" in skip else openvino_model(onnx_path, None)
    reports = args.reports_dir
    reports.mkdir(parents=True, exist_ok=True)

    from sritm_client import SdrFrame, SritmClient

    results: dict[str, Any] = {
        "scale": args.scale, "frames_per_size": args.frames, "rounds": args.rounds, "window": args.window,
        "machine": f"{os.cpu_count()} CPUs", "onnx": str(onnx_path),
        "engines": {name: note for name, (_, note) in engines.items()}, "sizes": {},
        "served_precision": served_parameter(model_dir, "precision") or "f32",
        "precision_gate": (json.loads((model_dir / "precision_gate.json").read_text())
                           if (model_dir / "precision_gate.json").is_file() else None),
    }
    server = TritonServer(args.repository, ServerPorts.free(), log_path=reports / f"{args.prefix}_tritonserver.log")
    try:
        server.start()
    except TritonServerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        results["server_start_s"] = round(server.startup_seconds or 0.0, 2)
        sampler = MemorySampler(server.pid, interval_s=0.25).start()
        sampler.mark("idle")
        results["server_idle"] = {"rss_mib": mib(sampler.samples[-1][1]), "pss_mib": mib(sampler.samples[-1][2])}
        with SritmClient(server.grpc_url, scale=args.scale, timeout_s=600) as client:
            for size in sizes:
                results["sizes"][size_label(size)] = bench_size(
                    size, args, engines, client, SdrFrame, server.metrics_url, sampler, skip)
        sampler.stop()
    finally:
        server.stop()

    (reports / f"{args.prefix}.json").write_text(json.dumps(json_ready(results), indent=2) + "\n")
    text = markdown(results)
    (reports / f"{args.prefix}.md").write_text(text)
    print(text)
    print(f"reports: {reports}/{args.prefix}.json, {args.prefix}.md")
    return 0


def bench_size(size: tuple[int, int], args: argparse.Namespace, engines: dict[str, Any], client: Any,
               sdr_frame: Any, metrics_url: str, sampler: MemorySampler, skip: set[str]) -> dict[str, Any]:
    """Time every path not in ``skip`` on ``args.frames`` frames of one size, in ``args.rounds`` rotating rounds.

    Args:
        size: the low-resolution HEIGHTxWIDTH.
        args: the command line (``scale``, ``frames``, ``rounds``, ``window``).
        engines: per engine path, its function of the network input (None where unavailable) and its note.
        client: an ``SritmClient`` connected to the server.
        sdr_frame: the ``SdrFrame`` class.
        metrics_url: the server's Prometheus endpoint.
        sampler: the server's memory sampler; the size's start and end are marked on it.
        skip: the paths to leave out.

    Returns:
        The size's entry in the report: medians, frames/s, ratios, agreement with ONNX Runtime, Triton's
        account of the ensemble's time and the server's peak memory.
    """
    scale = args.scale
    buffers = random_i420_frames(size, args.frames, seed=5)
    frames = [sdr_frame.from_i420(buffer, pts) for pts, buffer in enumerate(buffers)]
    prepared = [network_input_from_i420(buffer) for buffer in buffers]
    run_network = engines["raw_network"][0]

    def raw_pipeline(index: int) -> np.ndarray:
        network_input = network_input_from_i420(buffers[index])
        residual = run_network(network_input)
        return postprocess(network_input, residual, scale)

    paths: dict[str, Callable[[int], Any]] = {
        "raw_network": lambda i: run_network(prepared[i]),
        "raw_pipeline": raw_pipeline,
        "ensemble_unary": lambda i: client.convert(frames[i]),
    }
    for name in ("torch_eager", "openvino", "openvino_default"):
        if engines[name][0] is not None:
            paths[name] = (lambda engine: lambda i: engine(prepared[i]))(engines[name][0])
    paths = {name: run for name, run in paths.items() if name not in skip}

    # Agreement with ONNX Runtime on one frame (a speed-up that changes the answer is no speed-up).
    reference = run_network(prepared[0])
    agreement = {
        name: float(np.abs(engines[name][0](prepared[0]) - reference).max())
        for name in ("torch_eager", "openvino", "openvino_default") if name in paths
    }
    for run in paths.values():  # warm-up: first-run allocations and graph caches of this shape
        run(0)
    for _ in client.stream(frames[:2], window=args.window):
        pass

    time.sleep(0.5)  # an ensemble answers before its steps' statistics are recorded
    sampler.mark(f"{size_label(size)} start")
    before = parse_metrics(scrape_metrics(metrics_url))
    totals: dict[str, list[float]] = {name: [] for name in (*paths, "ensemble_stream")}
    per_frame: dict[str, list[float]] = {name: [] for name in paths}
    order = list(totals)
    for round_index in range(args.rounds):
        rotated = order[round_index % len(order):] + order[: round_index % len(order)]
        for name in rotated:
            if name == "ensemble_stream":
                started = time.perf_counter()
                delivered = sum(1 for _ in client.stream(frames, window=args.window))
                assert delivered == len(frames)
                totals[name].append(time.perf_counter() - started)
            else:
                total, times = timed_pass(paths[name], len(frames))
                totals[name].append(total)
                per_frame[name] += times
    time.sleep(0.5)
    after = parse_metrics(scrape_metrics(metrics_url))
    sampler.mark(f"{size_label(size)} end")
    start_t = next(t for t, label in sampler.marks if label == f"{size_label(size)} start")

    fps = {name: len(frames) / statistics.median(values) for name, values in totals.items()}
    median_ms = {name: statistics.median(values) * 1e3 for name, values in per_frame.items()}
    median_ms["ensemble_stream"] = 1e3 / fps["ensemble_stream"]

    def ratio(numerator: str, denominator: str) -> float | None:
        return fps[numerator] / fps[denominator] if numerator in fps and denominator in fps else None

    ensemble_best = max((n for n in ("ensemble_unary", "ensemble_stream") if n in fps), key=lambda n: fps[n])
    server = where_time_goes(metrics_delta(before, after))
    return {
        "lr": size_label(size),
        "hr": size_label((size[0] * scale, size[1] * scale)),
        "median_ms_per_frame": median_ms,
        "frames_per_s": fps,
        "ratios": {
            "ensemble_over_raw_network": ratio(ensemble_best, "raw_network"),
            "ensemble_unary_over_raw_network": ratio("ensemble_unary", "raw_network"),
            "ensemble_stream_over_raw_network": ratio("ensemble_stream", "raw_network"),
            "ensemble_over_raw_pipeline": ratio(ensemble_best, "raw_pipeline"),
            "raw_pipeline_over_raw_network": ratio("raw_pipeline", "raw_network"),
            "onnxruntime_over_torch_eager": ratio("raw_network", "torch_eager"),
            "openvino_over_onnxruntime": ratio("openvino", "raw_network"),
            "openvino_default_over_onnxruntime": ratio("openvino_default", "raw_network"),
        },
        "ensemble_best": ensemble_best,
        "meets_goal": (ratio(ensemble_best, "raw_network") or 0.0) >= THROUGHPUT_GOAL,
        "max_abs_difference_vs_onnxruntime": agreement,
        "server_time_ms_per_request": server,
        "server_peak_rss_mib": mib(sampler.peak_rss(start_t)),
        "server_peak_pss_mib": mib(sampler.peak_pss(start_t)),
    }


def gate_summary(gate: dict[str, Any] | None) -> str:
    """The precision gate's figures (``precision_gate.json`` beside the model) in words; "" without a gate."""
    if not gate:
        return ""
    psnr = "∞" if gate["psnr_db"] is None else f"{gate['psnr_db']:.1f}"
    verdict = "passed" if gate["passed"] else "failed, f32 served"
    return (f" (precision gate, {gate['requested']} → {gate['precision']}: {psnr} dB, "
            f"max {gate['max_code_difference']} codes vs f32, {verdict})")


def markdown(results: dict[str, Any]) -> str:
    """The Markdown report of :func:`main`'s results."""
    scale = results["scale"]
    lines = [
        f"# Benchmarks (x{scale}): served vs raw, ONNX Runtime vs PyTorch vs OpenVINO",
        "",
        f"{results['machine']}; {results['frames_per_size']} distinct frames per size, {results['rounds']} rounds "
        f"(medians), ensemble_stream window {results['window']}; server start-up {results['server_start_s']} s; "
        f"idle server RSS {results['server_idle']['rss_mib']} MiB.",
        "",
    ]
    lines += [f"* `{name}`: {note}" for name, note in results["engines"].items()]
    lines.append(f"* served network precision: {results.get('served_precision', 'f32')}"
                 + gate_summary(results.get("precision_gate")))
    lines += ["", "| LR size | path | median ms/frame | frames/s |", "|---|---|---:|---:|"]
    for label, size in results["sizes"].items():
        for name in PATHS:
            if name in size["frames_per_s"]:
                lines.append(f"| {label} | {name} | {size['median_ms_per_frame'][name]:.0f} "
                             f"| {size['frames_per_s'][name]:.2f} |")
    lines += ["", "| LR size | ensemble ÷ raw ORT (goal ≥ 0.9) | unary ÷ raw ORT | stream ÷ raw ORT "
              "| ensemble ÷ raw pipeline | ORT ÷ PyTorch eager | OpenVINO f32 ÷ ORT | OpenVINO default ÷ ORT "
              "| peak server RSS / PSS MiB |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def show(value: float | None) -> str:
        return "—" if value is None else f"{value:.2f}"

    for label, size in results["sizes"].items():
        r = size["ratios"]
        lines.append(
            f"| {label} | {show(r['ensemble_over_raw_network'])} ({size['ensemble_best']}) "
            f"| {show(r['ensemble_unary_over_raw_network'])} | {show(r['ensemble_stream_over_raw_network'])} "
            f"| {show(r['ensemble_over_raw_pipeline'])} | {show(r['onnxruntime_over_torch_eager'])} "
            f"| {show(r['openvino_over_onnxruntime'])} | {show(r['openvino_default_over_onnxruntime'])} "
            f"| {size['server_peak_rss_mib']} / {size['server_peak_pss_mib']} |")
    lines += ["", "Max |difference| vs ONNX Runtime on one frame: " + "; ".join(
        f"{label}: " + ", ".join(f"{k} {v:.1e}" for k, v in size["max_abs_difference_vs_onnxruntime"].items())
        for label, size in results["sizes"].items())]
    for label, size in results["sizes"].items():
        lines += ["", f"## Where an ensemble request's time goes at {label} (Triton's metrics, mean ms per request)",
                  "", *where_time_goes_markdown(size["server_time_ms_per_request"])]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
