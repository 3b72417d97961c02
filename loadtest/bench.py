#!/usr/bin/env python
"""Benchmarks, all measured in one run on the same frames: served vs raw, ONNX Runtime vs PyTorch vs OpenVINO.

``make bench`` calls this. For each ``--sizes`` (low-resolution, default
68x120, 136x240 and 270x480 at x4) it times, over the same ``--frames`` distinct frames
and in ``--rounds`` rounds whose order rotates (so machine noise hits every
path alike):

* ``served_engine``: the network exactly as the served model runs it (its
  runtime, precision, graph and threads, from its ``config.pbtxt``), outside
  Triton: ensemble ÷ this is the serving overhead at the same precision (goal >= 0.9);

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
  ONNX Runtime is reported beside its speed); ``openvino_int8``: the NNCF int8
  IR of ``build/quantize_int8.py`` (``--int8``; where it exists);
* ``ensemble_unary``: one gRPC request per frame to ``sritm_x{s}`` on a real
  Triton server (``SritmClient.convert``);
* ``ensemble_stream``: the same frames through ``SritmClient.stream`` with
  ``--window`` frames in flight (how a video client drives it).

It reports per path the median ms per frame and frames/s, and the ratios
ensemble ÷ served engine (goal >= 0.9), ensemble ÷ raw ONNX Runtime, ONNX Runtime ÷ PyTorch
eager, OpenVINO ÷ ONNX Runtime (f32 and default precision); per size, Triton's own account of where an
ensemble request's time goes (metrics scraped around the ensemble passes), and
the peak memory (RSS and PSS) of the server and its Python-backend stubs, and
(pre + post) ÷ network compute from Triton's counters (goal <= 0.15). It
also records the server's start-up time. With ``--paper-sizes`` (default) it
then times the served engine and f32 at the paper's sizes (x4 540x960, x2
1080x1920) against the machine's peak, a 4096² matrix product in f32 and bf16
timed in the same run. Writes ``PREFIX.json`` and
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
from sritm_serving.runtimes import compile_openvino, make_network_runner, make_onnx_session
from sritm_serving.triton_server import ServerPorts, TritonServer, TritonServerError

BT2446A = condition_one_hot(Rendering())
"""Every benchmark request asks for the default convention."""
PATHS = (
    "served_engine", "raw_network", "raw_pipeline", "torch_eager", "openvino", "openvino_default", "openvino_int8",
    "ensemble_unary", "ensemble_stream",
)
ENGINE_PATHS = ("served_engine", "torch_eager", "openvino", "openvino_default", "openvino_int8")
"""The paths that run an engine on the pre-processed frames (compared with ONNX Runtime on one frame)."""
THROUGHPUT_GOAL = 0.9
ROOT = Path(__file__).resolve().parent.parent
PREPOST_SHARE_GOAL = 0.15
"""Pre- plus post-processing compute at most this share of the network's, from Triton's own counters."""
PAPER_SIZES = ((4, (540, 960)), (2, (1080, 1920)))
"""The paper's test sizes: x4 from 540x960 and x2 from 1080x1920, both to 2160x3840."""


def served_parameter(model_dir: Path, key: str) -> str:
    """A parameter of the served network's config.pbtxt ("" when it has none)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    config = text_format.Parse((model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    return config.parameters[key].string_value if key in config.parameters else ""


def served_intra_op_threads(model_dir: Path) -> int:
    """The ``intra_op_threads`` parameter of the served network's config.pbtxt (0: every core)."""
    return int(served_parameter(model_dir, "intra_op_threads") or 0)


def machine_description() -> str:
    """The CPU as OpenVINO names it, its core count and what the plugin runs natively."""
    import openvino as ov

    from sritm_serving.runtimes import cpu_capabilities

    name = ov.Core().get_property("CPU", "FULL_DEVICE_NAME")
    return f"{name}, {os.cpu_count()} CPUs, OpenVINO CPU capabilities {' '.join(cpu_capabilities())}"


def served_engine(model_dir: Path, threads: int) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    """The network exactly as ``gpgmnet_x{s}`` runs it: its runtime, precision, graph and threads, outside Triton."""
    precision = served_parameter(model_dir, "precision") or "f32"
    runtime = served_parameter(model_dir, "runtime") or "openvino"
    graph = served_parameter(model_dir, "int8_file") if precision == "int8" else ""
    runner = make_network_runner(model_dir / "1" / (graph or "model.onnx"), runtime, threads, precision)
    return (lambda network_input: runner(network_input, BT2446A)), (
        f"the served engine outside Triton: {runtime}, precision {precision}, intra-op threads {threads or 'all'} "
        "(sritm_serving.runtimes.make_network_runner, as the network model builds it)")


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
    parser.add_argument("--sizes", default="68x120,136x240,270x480",
                        help="low-resolution HEIGHTxWIDTH, comma-separated")
    parser.add_argument("--frames", type=int, default=4, help="distinct frames per size")
    parser.add_argument("--rounds", type=int, default=3, help="passes over the frames per path (medians reported)")
    parser.add_argument("--window", type=int, default=4, help="frames in flight for ensemble_stream")
    parser.add_argument("--raw-threads", type=int, help="intra-op threads of the raw ONNX Runtime session "
                        "(default: the served config's intra_op_threads)")
    parser.add_argument("--skip", default="", help=f"paths to leave out, comma-separated ({', '.join(PATHS)})")
    parser.add_argument("--int8", type=Path, help="the int8 IR timed as openvino_int8 "
                        "(default: build/artifacts/gpgmnet_x{scale}_int8.xml, where it exists)")
    parser.add_argument("--paper-sizes", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the served engine at x4 540x960 and x2 1080x1920 against the machine's peak")
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
    engines["served_engine"] = (None, "skipped") if "served_engine" in skip else served_engine(model_dir, threads)
    engines["torch_eager"] = (None, "skipped") if "torch_eager" in skip else torch_model(args.scale)
    engines["openvino"] = (None, "skipped") if "openvino" in skip else openvino_model(onnx_path, "f32")
    engines["openvino_default"] = (None, "skipped") if "openvino_default" in skip else openvino_model(onnx_path, None)
    int8_path = args.int8 or ROOT / "build" / "artifacts" / f"gpgmnet_x{args.scale}_int8.xml"
    engines["openvino_int8"] = ((None, "skipped") if "openvino_int8" in skip
                                else openvino_model(int8_path, "int8") if int8_path.is_file()
                                else (None, f"no {int8_path}: python -m build.quantize_int8 --scale {args.scale}"))
    reports = args.reports_dir
    reports.mkdir(parents=True, exist_ok=True)

    from sritm_client import SdrFrame, SritmClient

    results: dict[str, Any] = {
        "scale": args.scale, "frames_per_size": args.frames, "rounds": args.rounds, "window": args.window,
        "machine": machine_description(), "onnx": str(onnx_path),
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
    if args.paper_sizes:
        results["paper_sizes"] = bench_paper_sizes(args.repository, threads)

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
    for name in ENGINE_PATHS:
        if engines[name][0] is not None:
            paths[name] = (lambda engine: lambda i: engine(prepared[i]))(engines[name][0])
    paths = {name: run for name, run in paths.items() if name not in skip}

    # Agreement with ONNX Runtime on one frame (a speed-up that changes the answer is no speed-up).
    reference = run_network(prepared[0])
    agreement = {
        name: float(np.abs(engines[name][0](prepared[0]) - reference).max())
        for name in ENGINE_PATHS if name in paths
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
    served_ratio = ratio(ensemble_best, "served_engine")
    return {
        "lr": size_label(size),
        "hr": size_label((size[0] * scale, size[1] * scale)),
        "median_ms_per_frame": median_ms,
        "frames_per_s": fps,
        "ratios": {
            "ensemble_over_served_engine": served_ratio,
            "ensemble_over_raw_network": ratio(ensemble_best, "raw_network"),
            "ensemble_unary_over_raw_network": ratio("ensemble_unary", "raw_network"),
            "ensemble_stream_over_raw_network": ratio("ensemble_stream", "raw_network"),
            "ensemble_over_raw_pipeline": ratio(ensemble_best, "raw_pipeline"),
            "raw_pipeline_over_raw_network": ratio("raw_pipeline", "raw_network"),
            "onnxruntime_over_torch_eager": ratio("raw_network", "torch_eager"),
            "openvino_over_onnxruntime": ratio("openvino", "raw_network"),
            "openvino_default_over_onnxruntime": ratio("openvino_default", "raw_network"),
            "openvino_int8_over_openvino_f32": ratio("openvino_int8", "openvino"),
            "openvino_default_over_openvino_f32": ratio("openvino_default", "openvino"),
        },
        "ensemble_best": ensemble_best,
        "meets_goal": (served_ratio or ratio(ensemble_best, "raw_network") or 0.0) >= THROUGHPUT_GOAL,
        "prepost_share_of_network": prepost_share(server, scale),
        "max_abs_difference_vs_onnxruntime": agreement,
        "server_time_ms_per_request": server,
        "server_peak_rss_mib": mib(sampler.peak_rss(start_t)),
        "server_peak_pss_mib": mib(sampler.peak_pss(start_t)),
    }


def prepost_share(server: dict[str, dict[str, float]], scale: int) -> float | None:
    """(pre-processor + post-processor) ÷ network compute time per request, from Triton's counters."""
    network = server.get(network_model_name(scale), {}).get("compute_infer_ms")
    steps = [server.get(name, {}).get("compute_infer_ms") for name in ("sritm_preprocess", "sritm_postprocess")]
    if not network or any(step is None for step in steps):
        return None
    return sum(steps) / network  # type: ignore[arg-type]


def machine_peak_gflops(seconds: float = 2.0) -> dict[str, float]:
    """GFLOP/s of a 4096² matrix product in f32 and bf16 (PyTorch, every core): the machine's practical peak."""
    import torch

    n = 4096
    peaks = {}
    for name, dtype in (("f32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        torch.mm(a, b)
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds or count < 2:
            torch.mm(a, b)
            count += 1
        peaks[name] = 2 * n**3 * count / (time.perf_counter() - started) / 1e9
    return peaks


def network_tflop(scale: int, size: tuple[int, int]) -> float:
    """GPGMNet's TFLOP for one ``size`` frame (:func:`gpgmnet.flops.count_flops`, the meta device: no compute)."""
    from gpgmnet.arch import GPGMNet
    from gpgmnet.flops import count_flops

    return float(count_flops(GPGMNet(scale=scale), size)["total"]) / 1e12


def bench_paper_sizes(repository: Path, threads: int, seconds_per_engine: float = 10.0) -> dict[str, Any]:
    """Seconds per frame at the paper's sizes, served precision and f32, beside the machine's measured peak."""
    peaks = machine_peak_gflops()
    rows = []
    for scale, size in PAPER_SIZES:
        model_dir = repository / network_model_name(scale)
        if not (model_dir / "1" / "model.onnx").is_file():
            continue
        precision = served_parameter(model_dir, "precision") or "f32"
        tflop = network_tflop(scale, size)
        network_input = np.random.default_rng(scale).uniform(16 / 255, 235 / 255, (1, 3, *size)).astype(np.float32)
        for engine_precision in dict.fromkeys((precision, "f32")):
            graph = served_parameter(model_dir, "int8_file") if engine_precision == "int8" else ""
            runner = make_network_runner(model_dir / "1" / (graph or "model.onnx"), "openvino", threads,
                                         engine_precision)
            runner(network_input, BT2446A)
            times = []
            while sum(times) < seconds_per_engine or len(times) < 2:
                started = time.perf_counter()
                runner(network_input, BT2446A)
                times.append(time.perf_counter() - started)
            per_frame = statistics.median(times)
            peak = peaks["f32" if engine_precision == "f32" else "bf16"]
            rows.append({"scale": scale, "lr": size_label(size), "precision": engine_precision,
                         "s_per_frame": per_frame, "tflop": tflop, "gflops": tflop * 1e3 / per_frame,
                         "share_of_peak": tflop * 1e3 / per_frame / peak,
                         "peak_used": "f32" if engine_precision == "f32" else "bf16"})
    return {"peak_gflops": peaks, "rows": rows}


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

    def show(value: float | None) -> str:
        return "—" if value is None else f"{value:.2f}"

    lines.append(f"* served network precision: {results.get('served_precision', 'f32')}"
                 + gate_summary(results.get("precision_gate")))
    lines += ["", "| LR size | path | median ms/frame | frames/s |", "|---|---|---:|---:|"]
    for label, size in results["sizes"].items():
        for name in PATHS:
            if name in size["frames_per_s"]:
                lines.append(f"| {label} | {name} | {size['median_ms_per_frame'][name]:.0f} "
                             f"| {size['frames_per_s'][name]:.2f} |")
    lines += ["", "| LR size | ensemble ÷ served engine (goal ≥ 0.9) | (pre + post) ÷ network compute (goal ≤ 0.15) "
              "| OpenVINO default ÷ f32 | OpenVINO int8 ÷ f32 |", "|---|---:|---:|---:|---:|"]
    for label, size in results["sizes"].items():
        r = size["ratios"]
        lines.append(f"| {label} | {show(r.get('ensemble_over_served_engine'))} "
                     f"| {show(size.get('prepost_share_of_network'))} "
                     f"| {show(r.get('openvino_default_over_openvino_f32'))} "
                     f"| {show(r.get('openvino_int8_over_openvino_f32'))} |")
    lines += ["", "| LR size | ensemble ÷ raw ORT | unary ÷ raw ORT | stream ÷ raw ORT "
              "| ensemble ÷ raw pipeline | ORT ÷ PyTorch eager | OpenVINO f32 ÷ ORT | OpenVINO default ÷ ORT "
              "| peak server RSS / PSS MiB |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]

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
    paper = results.get("paper_sizes")
    if paper:
        peaks = paper["peak_gflops"]
        lines += ["", "## The paper's sizes (the served engine outside Triton)", "",
                  f"Machine peak, 4096² matrix product in the same run: f32 {peaks['f32']:.0f} GFLOP/s, "
                  f"bf16 {peaks['bf16']:.0f} GFLOP/s.", "",
                  "| scale | LR size | precision | s/frame | TFLOP/frame | GFLOP/s | ÷ peak |",
                  "|---|---|---|---:|---:|---:|---:|"]
        lines += [f"| x{row['scale']} | {row['lr']} | {row['precision']} | {row['s_per_frame']:.2f} "
                  f"| {row['tflop']:.3f} | {row['gflops']:.0f} | {row['share_of_peak']:.2f} ({row['peak_used']}) |"
                  for row in paper["rows"]]
    for label, size in results["sizes"].items():
        lines += ["", f"## Where an ensemble request's time goes at {label} (Triton's metrics, mean ms per request)",
                  "", *where_time_goes_markdown(size["server_time_ms_per_request"])]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
