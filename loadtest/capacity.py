#!/usr/bin/env python
"""Capacity report: throughput and latency vs concurrency, for the ensemble and for the network model alone.

``make capacity`` calls this. On a Triton server it starts (or ``--url`` /
``--metrics-url`` of a running one) it sweeps ``--concurrency`` (1, 2, 4, 8)
with closed-loop clients, one thread and one connection each, for

* ``ensemble``: ``sritm_x{s}`` through the SDK (``SritmClient.convert``: I420 in,
  pre-processing, GPGMNet, post-processing, I420 out), and
* ``network``: ``gpgmnet_x{s}`` alone, sent the FP32 ``[1, 3, h, w]`` ``LR_YUV``
  the pre-processor makes of the same frames (and the default ``CONDITION``).

Each point runs for ``--seconds`` (and at least ``--min-requests`` requests);
Triton's Prometheus metrics are scraped before and after every point, so the
report shows per model where a request's time goes (queue, compute in the
pre-processor, the network, the post-processor). Where a working
``perf_analyzer`` is on PATH it measures the same points as a cross-check;
where not, the report says why.

Writes under ``--reports-dir`` (``loadtest/reports``): ``PREFIX.md`` (tables),
``PREFIX.json``, ``PREFIX.png`` (throughput and p50/p95 latency vs concurrency)
and ``PREFIX_metrics_before.txt`` / ``_after.txt`` (the raw scrapes around the sweep).

    .venv/bin/python loadtest/capacity.py --size 68x120 --concurrency 1,2,4,8 --seconds 20
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from loadkit import (
    DEFAULT_REPOSITORY,
    REPORTS_DIR,
    json_ready,
    metrics_delta,
    parse_metrics,
    parse_size,
    percentile,
    random_i420_frames,
    scrape_metrics,
    sdr_frames,
    size_label,
    where_time_goes,
    where_time_goes_markdown,
)

from sritm_core.contract import (
    NETWORK_CONDITION_NAME,
    NETWORK_INPUT_NAME,
    NETWORK_OUTPUT_NAME,
    POSTPROCESS_MODEL,
    PREPROCESS_MODEL,
    Rendering,
    ensemble_name,
    network_model_name,
)
from sritm_serving.processing import condition_one_hot, network_input_from_i420
from sritm_serving.triton_server import ServerPorts, TritonServer, TritonServerError

TARGETS = ("ensemble", "network")
BT2446A = condition_one_hot(Rendering())
"""The ``CONDITION`` the network target is sent: the default convention, as the ensemble sends it."""
DISTINCT_FRAMES = 4
# An ensemble answers before its steps' statistics are recorded: scrape a moment later.
STATISTICS_SETTLE_S = 0.3


@dataclass
class Point:
    """One point of the sweep: one target at one concurrency.

    Attributes:
        target: ``ensemble`` or ``network`` (:data:`TARGETS`).
        model: the Triton model the requests went to.
        requests: the requests that succeeded; ``failures`` those that raised.
        seconds: how long the closed loop ran.
        throughput: successful requests per second over ``seconds``.
        server: Triton's account per model, from :func:`loadkit.where_time_goes`.
        perf_analyzer: perf_analyzer's measurement of the same point, where it ran.
    """

    target: str
    model: str
    concurrency: int
    requests: int
    failures: int
    seconds: float
    throughput: float
    p50_ms: float
    p95_ms: float
    mean_ms: float
    server: dict[str, dict[str, float]]
    perf_analyzer: dict[str, Any] | None = None


# --------------------------------------------------------------------------- load


def make_caller(
    target: str, url: str, scale: int, size: tuple[int, int]
) -> tuple[Callable[[int], None], Callable[[], None]]:
    """A function sending request number ``i`` on a connection of its own, and its closer."""
    if target == "ensemble":
        from sritm_client import SritmClient

        frames = sdr_frames(size, DISTINCT_FRAMES, seed=3)
        client = SritmClient(url, scale=scale, timeout_s=600)

        def call(index: int) -> None:
            client.convert(frames[index % len(frames)])

        return call, client.close

    import tritonclient.grpc as grpcclient

    inputs = [network_input_from_i420(frame) for frame in random_i420_frames(size, DISTINCT_FRAMES, seed=3)]
    triton = grpcclient.InferenceServerClient(url)  # tritonclient raises gRPC's message limits to 2 GB itself
    model = network_model_name(scale)

    def call_network(index: int) -> None:
        tensor = grpcclient.InferInput(NETWORK_INPUT_NAME, list(inputs[0].shape), "FP32")
        tensor.set_data_from_numpy(inputs[index % len(inputs)])
        condition = grpcclient.InferInput(NETWORK_CONDITION_NAME, list(BT2446A.shape), "FP32")
        condition.set_data_from_numpy(BT2446A)
        result = triton.infer(model, [tensor, condition],
                              outputs=[grpcclient.InferRequestedOutput(NETWORK_OUTPUT_NAME)], client_timeout=600)
        residual = result.as_numpy(NETWORK_OUTPUT_NAME)
        expected = (1, 3, scale * size[0], scale * size[1])
        if residual is None or residual.shape != expected:
            raise RuntimeError(f"{model} answered {None if residual is None else residual.shape}, not {expected}")

    return call_network, triton.close


def closed_loop(callers: list[Callable[[int], None]], seconds: float, min_requests: int) -> dict[str, Any]:
    """Each caller on its own thread, back to back, until ``seconds`` have passed and ``min_requests`` are done."""
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    start_gate = threading.Barrier(len(callers) + 1)
    counter = iter(range(10**9))
    state = {"deadline": 0.0, "started": 0.0}

    def worker(call: Callable[[int], None]) -> None:
        start_gate.wait()
        while True:
            with lock:
                done = len(latencies) + len(failures)
                if time.perf_counter() >= state["deadline"] and done >= min_requests:
                    return
                index = next(counter)
            began = time.perf_counter()
            try:
                call(index)
            except Exception as error:  # counted, and the point is reported as failed
                with lock:
                    failures.append(f"{type(error).__name__}: {error}")
                continue
            with lock:
                latencies.append(time.perf_counter() - began)

    threads = [threading.Thread(target=worker, args=(call,), daemon=True) for call in callers]
    for thread in threads:
        thread.start()
    state["started"] = time.perf_counter()
    state["deadline"] = state["started"] + seconds
    start_gate.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - state["started"]
    return {"latencies": latencies, "failures": failures, "seconds": elapsed}


def measure_point(target: str, url: str, metrics_url: str, scale: int, size: tuple[int, int], concurrency: int,
                  seconds: float, min_requests: int) -> Point:
    """Measure one point: ``concurrency`` closed-loop connections to ``target``, with Triton's metrics around it."""
    connections = [make_caller(target, url, scale, size) for _ in range(concurrency)]
    try:
        connections[0][0](0)  # warm-up: first-run allocations of this size in every model instance
        time.sleep(STATISTICS_SETTLE_S)
        before = parse_metrics(scrape_metrics(metrics_url))
        run = closed_loop([call for call, _ in connections], seconds, max(min_requests, concurrency))
        time.sleep(STATISTICS_SETTLE_S)
        after = parse_metrics(scrape_metrics(metrics_url))
    finally:
        for _, close in connections:
            close()
    latencies_ms = [value * 1e3 for value in run["latencies"]]
    model = ensemble_name(scale) if target == "ensemble" else network_model_name(scale)
    return Point(
        target=target, model=model, concurrency=concurrency, requests=len(latencies_ms),
        failures=len(run["failures"]), seconds=run["seconds"],
        throughput=len(latencies_ms) / run["seconds"] if run["seconds"] else 0.0,
        p50_ms=percentile(latencies_ms, 50), p95_ms=percentile(latencies_ms, 95),
        mean_ms=float(np.mean(latencies_ms)) if latencies_ms else float("nan"),
        server=where_time_goes(metrics_delta(before, after)),
    )


# --------------------------------------------------------------------------- perf_analyzer


def find_perf_analyzer() -> tuple[list[str] | None, str]:
    """How to run perf_analyzer 2.60 here (directly, or via Debian 13's loader: perf_analyzer.py), or why not."""
    import perf_analyzer

    try:
        prefix = perf_analyzer.command_prefix()
    except (perf_analyzer.PerfAnalyzerError, OSError, subprocess.TimeoutExpired) as error:
        return None, str(error)
    glibc = ".".join(map(str, perf_analyzer.system_glibc()))
    old_glibc = perf_analyzer.system_glibc() < perf_analyzer.GLIBC_NEEDED
    how = "through Debian 13's dynamic loader and libraries" if old_glibc else "directly"
    return prefix, f"perf_analyzer {perf_analyzer.VERSION}, glibc {glibc}, run {how}"


def perf_input_data(target: str, lr: tuple[int, int], work: Path) -> Path:
    """perf_analyzer's ``--input-data`` for a target: a real-layout frame and valid rendering/condition inputs.

    Random data would not do: perf_analyzer fills every input, and a random
    ``CONVENTION`` or ``CONDITION`` is (rightly) INVALID_ARGUMENT.
    """
    import perf_analyzer

    if target == "ensemble":
        return perf_analyzer.input_data(work / f"pa_input_ensemble_{size_label(lr)}.json", *lr)
    rng = np.random.default_rng(0)
    path = work / f"pa_input_network_{size_label(lr)}.json"
    path.write_text(json.dumps({"data": [{
        NETWORK_INPUT_NAME: {"content": rng.random(3 * lr[0] * lr[1], dtype=np.float32).tolist(),
                             "shape": [1, 3, lr[0], lr[1]]},
        NETWORK_CONDITION_NAME: {"content": BT2446A.reshape(-1).tolist(), "shape": list(BT2446A.shape)},
    }]}))
    return path


def run_perf_analyzer(prefix: list[str], model: str, url: str, data: Path, concurrency: int,
                      seconds: float, work: Path) -> dict[str, Any]:
    """One concurrency point measured by perf_analyzer (gRPC, the inputs of ``data``)."""
    report = work / f"pa_{model}_{concurrency}.csv"
    interval_ms = max(1000, int(seconds * 1000 / 3))
    command = [
        *prefix, "-m", model, "-u", url, "-i", "grpc", "--input-data", str(data),
        "--concurrency-range", f"{concurrency}:{concurrency}", "--measurement-interval", str(interval_ms),
        "--stability-percentage", "50", "--max-trials", "4", "-f", str(report),
    ]
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=seconds * 6 + 120)
    except subprocess.TimeoutExpired:
        return {"error": "timed out", "command": " ".join(command)}
    if completed.returncode != 0 or not report.is_file():
        return {"error": (completed.stdout + completed.stderr).strip()[-400:], "command": " ".join(command)}
    with open(report, newline="") as handle:
        row = next(csv.DictReader(handle))
    return {
        "throughput": float(row["Inferences/Second"]),
        "p50_ms": float(row["p50 latency"]) / 1e3,
        "p95_ms": float(row["p95 latency"]) / 1e3,
        "server_queue_ms": float(row.get("Server Queue", 0) or 0) / 1e3,
        "server_compute_infer_ms": float(row.get("Server Compute Infer", 0) or 0) / 1e3,
    }


# --------------------------------------------------------------------------- report


def plot(points: list[Point], path: Path, title: str) -> None:
    """Plot throughput and p50/p95 latency against concurrency, per target, into the PNG ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for target, colour in zip(TARGETS, ("tab:blue", "tab:orange")):
        chosen = [p for p in points if p.target == target]
        if not chosen:
            continue
        xs = [p.concurrency for p in chosen]
        label = chosen[0].model
        left.plot(xs, [p.throughput for p in chosen], "o-", color=colour, label=label)
        right.plot(xs, [p.p50_ms for p in chosen], "o-", color=colour, label=f"{label} p50")
        right.plot(xs, [p.p95_ms for p in chosen], "s--", color=colour, label=f"{label} p95")
        with_pa = [p for p in chosen if p.perf_analyzer and "throughput" in p.perf_analyzer]
        if with_pa:
            left.plot([p.concurrency for p in with_pa], [p.perf_analyzer["throughput"] for p in with_pa],  # type: ignore[index]
                      "x:", color=colour, label=f"{label} (perf_analyzer)")
    for axis in (left, right):
        axis.set_xscale("log", base=2)
        axis.set_xticks(sorted({p.concurrency for p in points}))
        axis.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        axis.set_xlabel("concurrent requests")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    left.set_ylim(bottom=0)
    left.set_ylabel("frames / s")
    left.set_title("throughput")
    right.set_ylabel("ms per request")
    right.set_title("latency")
    right.set_yscale("log")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def markdown(report: dict[str, Any], points: list[Point], scale: int) -> str:
    """The Markdown report: the table of points, then where the time goes at each point."""
    size = report["lr_size"]
    lines = [
        f"# Capacity: {size} at x{scale} ({report['hr_size']} out)",
        "",
        f"{report['machine']}; {report['seconds_per_point']} s per point "
        f"(at least {report['min_requests']} requests); server: {report['server']}.",
        "",
        "| target | model | concurrency | requests | failures | frames/s | p50 ms | p95 ms "
        "| perf_analyzer frames/s | perf_analyzer p95 ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in points:
        pa = p.perf_analyzer or {}
        pa_fps = f"{pa['throughput']:.2f}" if "throughput" in pa else "—"
        pa_p95 = f"{pa['p95_ms']:.0f}" if "p95_ms" in pa else "—"
        lines.append(f"| {p.target} | {p.model} | {p.concurrency} | {p.requests} | {p.failures} | {p.throughput:.2f} "
                     f"| {p.p50_ms:.0f} | {p.p95_ms:.0f} | {pa_fps} | {pa_p95} |")
    lines += ["", f"perf_analyzer: {report['perf_analyzer']}", ""]
    lines += ["## Where the time goes (Triton's metrics, per point, mean ms per request)", ""]
    for p in points:
        lines += [f"### {p.target}, concurrency {p.concurrency}", "", *where_time_goes_markdown(p.server), ""]
    lines += [
        "`queue` is the wait for a free model instance, `compute infer` the model's own work "
        f"(`{PREPROCESS_MODEL}`: I420 to YUV 4:4:4; `{network_model_name(scale)}`: GPGMNet, in OpenVINO by default "
        f"in the CPU repository, TensorRT in the GPU one; `{POSTPROCESS_MODEL}`: bicubic skip, 10-bit 4:2:0), "
        "`compute input/output` the copies in and out of the Python backend's shared memory. "
        "The ensemble's `request ms` is the whole pipeline as the server sees it.",
        "",
    ]
    return "\n".join(lines)


@contextlib.contextmanager
def server_endpoints(args: argparse.Namespace, log_path: Path) -> Iterator[tuple[str, str, str]]:
    """``(gRPC url, metrics url, note)`` of ``--url``'s server, or of one started on ``--repository`` for the block."""
    if args.url:
        if not args.metrics_url:
            raise SystemExit("error: --url needs --metrics-url")
        yield args.url, args.metrics_url, f"already running at {args.url}"
        return
    server = TritonServer(args.repository, ServerPorts.free(), log_path=log_path)
    with server:
        yield server.grpc_url, server.metrics_url, f"started by this script on {args.repository}"


def machine() -> str:
    """The CPU architecture, core count and platform, for the report."""
    import os
    import platform

    return f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform(terse=True)}"


def main(argv: list[str] | None = None) -> int:
    """Sweep the targets and concurrencies and write the reports.

    Returns:
        The exit status: 0, 1 when a request failed, 2 when there is no network or the server does not start.
    """
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    parser.add_argument("--url", help="gRPC address of a running server (default: start one)")
    parser.add_argument("--metrics-url", help="its Prometheus endpoint, e.g. http://127.0.0.1:8002/metrics")
    parser.add_argument("--scale", type=int, choices=(2, 4), default=4)
    parser.add_argument("--size", type=parse_size, default=parse_size("68x120"), help="low-resolution HEIGHTxWIDTH")
    parser.add_argument("--concurrency", default="1,2,4,8")
    parser.add_argument("--targets", default="ensemble,network", help="ensemble and/or network")
    parser.add_argument("--seconds", type=float, default=20.0, help="measurement time per point")
    parser.add_argument("--min-requests", type=int, default=8, help="at least this many requests per point")
    parser.add_argument("--no-perf-analyzer", action="store_true", help="skip the perf_analyzer cross-check")
    parser.add_argument("--reports-dir", type=Path, default=REPORTS_DIR)
    parser.add_argument("--prefix", default="", help="report file prefix (default capacity_x{s}_{size})")
    args = parser.parse_args(argv)

    concurrencies = [int(c) for c in args.concurrency.split(",") if c.strip()]
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if any(t not in TARGETS for t in targets) or not targets:
        parser.error(f"--targets takes {' and/or '.join(TARGETS)}")
    if not args.url and not (args.repository / network_model_name(args.scale)).is_dir():
        print(f"error: {args.repository} has no {network_model_name(args.scale)}: run `make repository`",
              file=sys.stderr)
        return 2
    prefix = args.prefix or f"capacity_x{args.scale}_{size_label(args.size)}"
    reports = args.reports_dir
    reports.mkdir(parents=True, exist_ok=True)
    if args.no_perf_analyzer:
        perf_analyzer, perf_note = None, "skipped (--no-perf-analyzer)"
    else:
        perf_analyzer, perf_note = find_perf_analyzer()
        perf_note = f"used ({perf_note}) for the same points" if perf_analyzer else f"not used: {perf_note}"

    points: list[Point] = []
    lr = args.size
    try:
        with server_endpoints(args, reports / f"{prefix}_tritonserver.log") as (url, metrics_url, server_note), \
                tempfile.TemporaryDirectory(prefix="sritm-capacity-") as work:
            (reports / f"{prefix}_metrics_before.txt").write_text(scrape_metrics(metrics_url))
            for target in targets:
                for concurrency in concurrencies:
                    point = measure_point(target, url, metrics_url, args.scale, lr, concurrency, args.seconds,
                                          args.min_requests)
                    if perf_analyzer:
                        data = perf_input_data(target, lr, Path(work))
                        point.perf_analyzer = run_perf_analyzer(perf_analyzer, point.model, url, data,
                                                                concurrency, args.seconds, Path(work))
                    points.append(point)
                    print(f"{target:8s} c={concurrency}: {point.requests} requests, {point.failures} failed, "
                          f"{point.throughput:.2f} frames/s, p50 {point.p50_ms:.0f} ms, p95 {point.p95_ms:.0f} ms",
                          flush=True)
            (reports / f"{prefix}_metrics_after.txt").write_text(scrape_metrics(metrics_url))
    except TritonServerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    report = {
        "scale": args.scale,
        "lr_size": size_label(lr),
        "hr_size": size_label((lr[0] * args.scale, lr[1] * args.scale)),
        "machine": machine(),
        "server": server_note,
        "seconds_per_point": args.seconds,
        "min_requests": args.min_requests,
        "perf_analyzer": perf_note,
        "points": [p.__dict__ for p in points],
    }
    (reports / f"{prefix}.json").write_text(json.dumps(json_ready(report), indent=2) + "\n")
    text = markdown(report, points, args.scale)
    (reports / f"{prefix}.md").write_text(text)
    plot(points, reports / f"{prefix}.png", f"sritm x{args.scale}, {size_label(lr)} LR: ensemble vs network alone")
    print(text)
    print(f"reports: {reports}/{prefix}.md, .json, .png, _metrics_before.txt, _metrics_after.txt")
    failed = sum(p.failures for p in points)
    if failed:
        print(f"FAILED: {failed} request(s) failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
