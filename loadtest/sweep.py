#!/usr/bin/env python
"""Throughput settings of the CPU network, measured: instances × threads, batching, and the precision's gain.

``make sweep`` calls this. For the served precision of ``--repository``'s network
(``auto``'s choice on this CPU) it assembles a repository per setting of
instances × OpenVINO threads per instance whose product is the core count
(1×2 and 2×1 on two cores; 1×N, 2×N/2 and N×1 on N), plus f32 at 1×N as the
reference, starts a real Triton server on each (all at once) and measures
``sritm_x{s}`` with NVIDIA's perf_analyzer (:mod:`perf_analyzer`, at
concurrency 1, 2 and the instance count), ``--rounds`` times, interleaved. It
reports each setting's median best inferences/s, the winner, and the served
precision ÷ f32.

Dynamic batching: Triton merges only same-shape requests, which the frames of
one video are. Whether merging pays is a property of the engine, so it is
measured there, in the same run: the served engine compiled for a batch of 2
against a batch of 1, frames per second, interleaved rounds. The repository
enables batching only where that ratio exceeds :data:`BATCHING_WORTH`.

Writes ``PREFIX.json`` and ``PREFIX.md`` under ``--reports-dir``.

    .venv/bin/python loadtest/sweep.py --size 136x240
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench import served_parameter
from loadkit import DEFAULT_REPOSITORY, REPORTS_DIR, json_ready, parse_sizes, size_label
from perf_analyzer import PerfAnalyzerError, measure

from sritm_core.contract import NETWORK_CONDITION_NAME, NETWORK_INPUT_NAME, ensemble_name, network_model_name
from sritm_serving.triton_server import ServerPorts, TritonServer

ROOT = Path(__file__).resolve().parent.parent
BATCHING_WORTH = 1.1
"""Batch-of-2 frames/s ÷ batch-of-1 frames/s above which dynamic batching would be worth its queueing delay."""


def settings(cores: int) -> list[tuple[int, int]]:
    """(instances, threads per instance) pairs whose product is ``cores``: one instance, two, one per core."""
    pairs = [(1, cores), (2, cores // 2), (cores, 1)]
    return [pair for pair in dict.fromkeys(pairs) if pair[0] >= 1 and pair[1] >= 1 and pair[0] * pair[1] == cores]


def assemble_setting(scale: int, precision: str, instances: int, threads: int, work: Path) -> Path:
    """A repository of one setting, by the assembler users run (with its precision gate), from build/artifacts."""
    repository = work / f"repository_{precision}_{instances}x{threads}"
    subprocess.run([sys.executable, "-m", "build.assemble_repository", "--target", "cpu", "--scale", str(scale),
                    "--repository", str(repository), "--cpu-precision", precision, "--instances", str(instances),
                    "--intra-op-threads", str(threads)], cwd=ROOT, check=True, capture_output=True)
    return repository


def sweep(scale: int, size: tuple[int, int], candidates: list[tuple[str, int, int]], work: Path, rounds: int,
          interval_ms: int) -> list[dict[str, Any]]:
    """Every candidate (precision, instances, threads) served at once; perf_analyzer on each in turn, ``rounds`` times.

    All servers stay up for the whole sweep (an idle one costs memory, not CPU), so the rounds interleave
    and noise on a shared machine reaches every setting alike; each setting's figure is the median over
    rounds of its best inferences/s over concurrency 1, 2 and its instance count.
    """
    rows = []
    with contextlib.ExitStack() as stack:
        servers = []
        for precision, instances, threads in candidates:
            repository = assemble_setting(scale, precision, instances, threads, work)
            served = served_parameter(repository / network_model_name(scale), "precision") or "f32"
            server = stack.enter_context(TritonServer(repository, ServerPorts.free(),
                                                      log_path=work / f"{repository.name}.log"))
            servers.append(server)
            rows.append({"precision": served, "instances": instances, "threads": threads, "rounds": []})
        for round_index in range(rounds):
            for row, server in zip(rows, servers):
                concurrency = sorted({1, 2, row["instances"]})
                points = measure(server.grpc_url, ensemble_name(scale), size[0], size[1], concurrency, work,
                                 interval_ms, stability_percentage=30)
                best = max(points, key=lambda point: point.inferences_per_s)
                row["rounds"].append({"points": [vars(point) for point in points],
                                      "best_inferences_per_s": best.inferences_per_s,
                                      "best_concurrency": best.concurrency})
                print(f"round {round_index + 1}: {row['precision']} {row['instances']}x{row['threads']}: "
                      f"{best.inferences_per_s:.2f} inferences/s at concurrency {best.concurrency}", flush=True)
    for row in rows:
        row["best_inferences_per_s"] = statistics.median(r["best_inferences_per_s"] for r in row["rounds"])
        row["best_concurrency"] = statistics.mode(r["best_concurrency"] for r in row["rounds"])
    return rows


def batching_ratio(model_dir: Path, size: tuple[int, int], rounds: int = 4) -> dict[str, Any]:
    """The served engine's frames/s compiled for a batch of 2 ÷ for a batch of 1, interleaved rounds."""
    import openvino as ov

    from sritm_serving.runtimes import compile_openvino

    precision = served_parameter(model_dir, "precision") or "f32"
    int8_file = served_parameter(model_dir, "int8_file") if precision == "int8" else ""
    graph = model_dir / "1" / (int8_file or "model.onnx")
    core = ov.Core()
    requests = {}
    for batch in (1, 2):
        model = core.read_model(str(graph))
        conventions = model.input(NETWORK_CONDITION_NAME).get_partial_shape()[1].get_length()
        model.reshape({NETWORK_INPUT_NAME: [batch, 3, *size], NETWORK_CONDITION_NAME: [batch, conventions]})
        request = compile_openvino(model, precision).create_infer_request()
        condition = np.zeros((batch, conventions), np.float32)
        condition[:, 0] = 1
        inputs = {NETWORK_INPUT_NAME: np.random.default_rng(batch).uniform(0.1, 0.9, (batch, 3, *size)).astype(
            np.float32), NETWORK_CONDITION_NAME: condition}
        request.infer(inputs)
        requests[batch] = (request, inputs)
    rates: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(rounds):
        for batch, (request, inputs) in requests.items():
            started = time.perf_counter()
            for _ in range(4 // batch):
                request.infer(inputs)
            rates[batch].append(4 / (time.perf_counter() - started))
    ratio = statistics.median(rates[2]) / statistics.median(rates[1])
    return {"precision": precision, "frames_per_s": {str(b): statistics.median(r) for b, r in rates.items()},
            "batch2_over_batch1": ratio, "worth_enabling": ratio > BATCHING_WORTH}


def markdown(report: dict[str, Any]) -> str:
    """The Markdown report of :func:`main`'s results."""
    lines = [f"# Throughput settings (x{report['scale']}, {report['size']}, perf_analyzer {report['tool']})", "",
             report["machine"], "",
             "| precision | instances × threads | best inferences/s (median of rounds) | each round | at concurrency |",
             "|---|---|---:|---|---:|"]
    for row in report["settings"]:
        each = ", ".join(f"{r['best_inferences_per_s']:.2f}" for r in row["rounds"])
        lines.append(f"| {row['precision']} | {row['instances']} × {row['threads']} "
                     f"| {row['best_inferences_per_s']:.2f} | {each} | {row['best_concurrency']} |")
    lines += ["", f"Winner: {report['winner']}. Served precision ÷ f32 (best of each, 1 × all threads): "
              f"{report['precision_over_f32']:.2f}.", ""]
    batching = report["batching"]
    lines.append(f"Dynamic batching, the served engine ({batching['precision']}) compiled for 2 frames ÷ for 1: "
                 f"{batching['batch2_over_batch1']:.2f} "
                 f"({'worth enabling' if batching['worth_enabling'] else 'not worth its queueing delay'}; "
                 f"bar > {BATCHING_WORTH}).")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Sweep the settings, measure batching, write and print the report; 2 when perf_analyzer fails."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY,
                        help="whose network's precision is swept (default: model_repository, `make repository`)")
    parser.add_argument("--scale", type=int, choices=(2, 4), default=4)
    parser.add_argument("--size", default="136x240", help="low-resolution HEIGHTxWIDTH")
    parser.add_argument("--interval-ms", type=int, default=6000, help="perf_analyzer's measurement window")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved perf_analyzer passes per setting")
    parser.add_argument("--reports-dir", type=Path, default=REPORTS_DIR)
    parser.add_argument("--prefix", default="sweep")
    args = parser.parse_args(argv)
    size = parse_sizes(args.size)[0]
    model_dir = args.repository / network_model_name(args.scale)
    if not (model_dir / "config.pbtxt").is_file():
        print(f"error: {model_dir} does not exist: run `make repository`", file=sys.stderr)
        return 2
    precision = served_parameter(model_dir, "precision") or "f32"
    cores = os.cpu_count() or 1
    from bench import machine_description

    candidates = [(precision, instances, threads) for instances, threads in settings(cores)]
    if precision != "f32":
        candidates.append(("f32", 1, cores))
    with tempfile.TemporaryDirectory(prefix="sritm-sweep-") as folder:
        try:
            rows = sweep(args.scale, size, candidates, Path(folder), args.rounds, args.interval_ms)
        except PerfAnalyzerError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    served_rows = [row for row in rows if row["precision"] == precision]
    winner = max(served_rows, key=lambda row: row["best_inferences_per_s"])
    f32 = next((row for row in rows if row["precision"] == "f32" and row["instances"] == 1), winner)
    same_shape = next(row for row in served_rows if row["instances"] == 1)
    report = {
        "scale": args.scale, "size": size_label(size), "tool": "2.60.0", "machine": machine_description(),
        "settings": rows, "winner": f"{winner['precision']} {winner['instances']} × {winner['threads']}",
        "precision_over_f32": same_shape["best_inferences_per_s"] / f32["best_inferences_per_s"],
        "batching": batching_ratio(model_dir, size),
    }
    args.reports_dir.mkdir(parents=True, exist_ok=True)
    (args.reports_dir / f"{args.prefix}.json").write_text(json.dumps(json_ready(report), indent=2) + "\n")
    text = markdown(report)
    (args.reports_dir / f"{args.prefix}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
