#!/usr/bin/env python
"""Run ``loadtest/locustfile.py`` headless against a Triton server this script starts, and judge the run.

``make loadtest`` and ``make soak`` call this. It

1. starts ``tritonserver`` (``sritm_serving.triton_server.TritonServer``) on free
   loopback ports on ``--repository``;
2. warms it up with one frame of every size the run uses (first-run
   allocations are not part of the measurement, nor of the memory baseline);
3. runs Locust headless as a subprocess (``--host`` the server's gRPC address,
   ``--users``, ``--spawn-rate``, ``--run-time``, ``--csv``, ``--html`` under
   ``--reports-dir``), sampling the memory of the server and its Python-backend
   stubs meanwhile;
4. stops the server and reads Locust's stats CSV.

It exits 1 when any request failed, when nothing was measured, when the 95th
percentile of any frame request (single frames and stream frames; whole
sessions are listed but not bounded) exceeds ``--p95-ms``, or, with ``--soak``,
when the server's RSS (server + stubs) grew by ``--max-rss-growth`` or more
between the baseline — minute 1, or 1/10 of the run when that is earlier —
and the end. It writes ``PREFIX_summary.json`` (and, with ``--soak``,
``PREFIX_memory.csv`` and ``PREFIX_memory.png``) beside Locust's reports.

    .venv/bin/python loadtest/run_locust.py --users 2 --spawn-rate 2 --run-time 30 --p95-ms 5000
    .venv/bin/python loadtest/run_locust.py --soak --run-time 600 --prefix soak
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from loadkit import (
    DEFAULT_REPOSITORY,
    REPORTS_DIR,
    MemorySampler,
    metrics_delta,
    mib,
    parse_metrics,
    parse_sizes,
    scrape_metrics,
    sdr_frames,
    size_label,
)

from sritm_core.contract import ensemble_name, network_model_name
from sritm_serving.triton_server import ServerPorts, TritonServer, TritonServerError

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
DEFAULT_SIZES = "32x56,48x80,64x112"
SOAK_BASELINE_S = 60.0
TAG_CLASSES = {"single": "SingleFrameUser", "small": "SingleFrameUser", "medium": "SingleFrameUser",
               "large": "SingleFrameUser", "stream": "StreamingUser"}


def seconds(text: str) -> int:
    """``"90"``, ``"90s"``, ``"2m"``, ``"1h30m"`` -> seconds."""
    if text.strip().isdigit():
        return int(text)
    parts = re.findall(r"(\d+)\s*([hms])", text)
    if not parts or "".join(f"{n}{u}" for n, u in parts) != re.sub(r"\s", "", text):
        raise argparse.ArgumentTypeError(f"a duration is e.g. 30, 30s, 10m or 1h, not {text!r}")
    return sum(int(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


def classes_for_tags(tags: list[str]) -> list[str]:
    """The user classes that have tasks with any of ``tags`` (all of them without tags).

    Locust filters tasks by tag but still spawns a user class left without any,
    which then only raises "No tasks defined"; so the runner names the classes.
    """
    if not tags:
        return []
    unknown = set(tags) - set(TAG_CLASSES)
    if unknown:
        raise SystemExit(f"error: unknown tag(s) {', '.join(sorted(unknown))}; the tags are {', '.join(TAG_CLASSES)}")
    return list(dict.fromkeys(TAG_CLASSES[tag] for tag in tags))


def read_stats(path: Path) -> list[dict[str, str]]:
    """The rows of a Locust ``PREFIX_stats.csv``."""
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def number(text: str) -> float:
    """A stats field as a float; NaN where it is missing or not a number (Locust writes ``N/A``)."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def is_session(name: str) -> bool:
    """Whether a stats row is a whole streaming session (listed, but not bounded by ``--p95-ms``)."""
    return " stream session " in name


def judge_requests(rows: list[dict[str, str]], p95_bound_ms: float) -> tuple[list[str], list[dict[str, Any]]]:
    """Problems found in Locust's stats rows, and the per-name summary."""
    problems: list[str] = []
    summary: list[dict[str, Any]] = []
    aggregated = next((row for row in rows if row["Name"] == "Aggregated"), None)
    for row in rows:
        if row["Name"] == "Aggregated":
            continue
        p95 = number(row["95%"])
        entry = {
            "type": row["Type"],
            "name": row["Name"],
            "requests": int(number(row["Request Count"])),
            "failures": int(number(row["Failure Count"])),
            "median_ms": number(row["Median Response Time"]),
            "p95_ms": p95,
            "p99_ms": number(row["99%"]),
            "max_ms": number(row["Max Response Time"]),
            "requests_per_s": number(row["Requests/s"]),
            "p95_bounded": not is_session(row["Name"]),
        }
        summary.append(entry)
        if entry["p95_bounded"] and entry["requests"] and p95 > p95_bound_ms:
            problems.append(f"{row['Name']}: p95 {p95:.0f} ms exceeds the bound of {p95_bound_ms:g} ms")
    if aggregated is None or not int(number(aggregated["Request Count"])):
        problems.append("no request completed: nothing was measured")
    failures = sum(entry["failures"] for entry in summary)
    if failures:
        problems.append(f"{failures} request(s) failed (see the _failures.csv and _exceptions.csv reports)")
    return problems, summary


def soak_verdict(sampler: MemorySampler, locust_started: float, duration_s: float, max_growth: float) -> dict[str, Any]:
    """RSS growth between the baseline (minute 1, or 1/10 of a shorter run) and the end of the run."""
    samples = [(t - locust_started, rss) for t, rss, _, _ in sampler.samples if t >= locust_started]
    baseline_at = min(SOAK_BASELINE_S, duration_s / 10)
    during = [(t, rss) for t, rss in samples if t <= duration_s + 1.0]
    base = next(((t, rss) for t, rss in during if t >= baseline_at), None)
    if base is None or len(during) < 2:
        return {"passed": False, "reason": "too few memory samples", "samples": len(samples)}
    end = during[-1]
    growth = end[1] / base[1] - 1.0
    return {
        "passed": growth < max_growth,
        "baseline_at_s": round(base[0], 1),
        "baseline_rss_mib": mib(base[1]),
        "end_at_s": round(end[0], 1),
        "end_rss_mib": mib(end[1]),
        "peak_rss_mib": mib(max(rss for _, rss in during)),
        "growth": round(growth, 4),
        "max_growth": max_growth,
        "samples": len(during),
    }


def plot_memory(sampler: MemorySampler, locust_started: float, path: Path, title: str) -> None:
    """Plot the server's RSS and PSS against the seconds since the load started into the PNG ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = [t - locust_started for t, _, _, _ in sampler.samples]
    figure, axis = plt.subplots(figsize=(8, 4))
    axis.plot(times, [mib(rss) for _, rss, _, _ in sampler.samples], label="RSS (server + stubs)")
    axis.plot(times, [mib(pss) for _, _, pss, _ in sampler.samples], label="PSS (server + stubs)")
    axis.axvline(0, color="grey", linewidth=0.8, linestyle=":")
    axis.set_xlabel("seconds since the load started")
    axis.set_ylabel("MiB")
    axis.set_title(title)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def build_parser() -> argparse.ArgumentParser:
    """The command line of :func:`main`."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    parser.add_argument("--users", type=int, default=2)
    parser.add_argument("--spawn-rate", type=float, default=2.0)
    parser.add_argument("--run-time", type=seconds, default=30, help="seconds (or 30s, 10m)")
    parser.add_argument("--p95-ms", type=float, default=5000.0, help="bound on every frame request's p95")
    parser.add_argument("--tags", default="", help="Locust tags to run, comma-separated (single, small, medium, "
                        "large, stream); default all")
    parser.add_argument("--user-classes", default="", help="SingleFrameUser and/or StreamingUser, comma-separated")
    parser.add_argument("--scale", type=int, choices=(2, 4), default=4)
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="small,medium,large low-resolution HEIGHTxWIDTH")
    parser.add_argument("--stream-size", default="", help="streaming sessions' size (default: the small one)")
    parser.add_argument("--stream-frames", type=int, default=8)
    parser.add_argument("--stream-window", type=int, default=4)
    parser.add_argument("--stop-timeout", type=int, default=30,
                        help="seconds Locust lets running requests finish at the end")
    parser.add_argument("--reports-dir", type=Path, default=REPORTS_DIR)
    parser.add_argument("--prefix", default="", help="report file prefix (default loadtest, or soak)")
    parser.add_argument("--soak", action="store_true", help="also require RSS growth below --max-rss-growth")
    parser.add_argument("--max-rss-growth", type=float, default=0.10)
    parser.add_argument("--replicas", type=int, default=1,
                        help="servers to start; the users' SDK clients spread over all of them (default 1)")
    parser.add_argument("--sample-every", type=float, default=0.0, help="memory sampling period in seconds "
                        "(default: run time / 60, between 1 and 5)")
    return parser


def memory_summary(sampler: MemorySampler) -> dict[str, Any]:
    """The server's memory in MiB: idle (before the warm-up), right after the warm-up, and the peaks of the run."""
    marks = dict((label, t) for t, label in sampler.marks)
    return {
        "idle_rss_mib": mib(sampler.peak_rss(0, marks.get("idle", 0))),
        "after_warm_up_rss_mib": mib(next((rss for t, rss, _, _ in sampler.samples if t >= marks.get("warm", 0)), 0)),
        "peak_rss_mib": mib(sampler.peak_rss()),
        "peak_pss_mib": mib(sampler.peak_pss()),
        "processes": max((n for _, _, _, n in sampler.samples), default=0),
    }


def main(argv: list[str] | None = None) -> int:
    """Start the server, warm it up, run Locust, judge the run and write the summary.

    Returns:
        The exit status: 0 when the run passed, 1 when it failed, 2 when it could not start.
    """
    parser = build_parser()
    args = parser.parse_args(argv)

    prefix = args.prefix or ("soak" if args.soak else "loadtest")
    sizes = parse_sizes(args.sizes)
    if len(sizes) != 3:
        parser.error(f"--sizes needs three sizes (small,medium,large), not {args.sizes!r}")
    stream_size = parse_sizes(args.stream_size)[0] if args.stream_size else sizes[0]
    if not (args.repository / network_model_name(args.scale)).is_dir():
        print(f"error: {args.repository} has no {network_model_name(args.scale)}: run `make repository`",
              file=sys.stderr)
        return 2
    reports = args.reports_dir
    reports.mkdir(parents=True, exist_ok=True)
    csv_prefix, html = reports / prefix, reports / f"{prefix}.html"
    for stale in reports.glob(f"{prefix}_*.csv"):
        stale.unlink()
    tags = args.tags.replace(",", " ").split()
    user_classes = args.user_classes.replace(",", " ").split() or classes_for_tags(tags)
    interval = args.sample_every or min(5.0, max(1.0, args.run_time / 60))

    result: dict[str, Any] = {"prefix": prefix, "settings": {
        "users": args.users, "spawn_rate": args.spawn_rate, "run_time_s": args.run_time, "p95_bound_ms": args.p95_ms,
        "tags": tags, "user_classes": user_classes, "scale": args.scale,
        "sizes": [size_label(s) for s in sizes], "stream": {"size": size_label(stream_size),
        "frames": args.stream_frames, "window": args.stream_window}, "soak": args.soak}}
    if args.replicas < 1:
        parser.error(f"--replicas must be at least 1, not {args.replicas}")
    result["settings"]["replicas"] = args.replicas
    servers = [TritonServer(args.repository, ServerPorts.free(),
                            log_path=reports / f"{prefix}_tritonserver{'' if i == 0 else f'_{i + 1}'}.log")
               for i in range(args.replicas)]
    try:
        for server in servers:
            server.start()
    except TritonServerError as error:
        for server in servers:
            server.stop()
        print(f"error: {error}", file=sys.stderr)
        return 2
    server = servers[0]  # whose memory is sampled (every replica runs the same repository)
    try:
        result["server_start_s"] = round(server.startup_seconds or 0.0, 2)
        sampler = MemorySampler(server.pid, interval_s=interval).start()
        sampler.mark("idle")
        for replica in servers:
            warm_up(replica.grpc_url, args.scale, [*sizes, stream_size])
        sampler.mark("warm")
        counted_before = [parse_metrics(scrape_metrics(replica.metrics_url)) for replica in servers]
        command = [
            # User classes are positional: before any option (--tags would swallow them).
            sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), *user_classes, "--headless", "--only-summary",
            "--host", server.grpc_url, "--users", str(args.users), "--spawn-rate", str(args.spawn_rate),
            "--run-time", f"{args.run_time}s", "--stop-timeout", str(args.stop_timeout),
            "--csv", str(csv_prefix), "--html", str(html), "--loglevel", "WARNING",
            "--scale", str(args.scale), "--sizes", args.sizes, "--stream-frames", str(args.stream_frames),
            "--stream-window", str(args.stream_window), "--stream-size", size_label(stream_size),
            "--targets", ",".join(replica.grpc_url for replica in servers),
        ]
        command += ["--tags", *tags] if tags else []
        print("$ " + " ".join(command), flush=True)
        locust_started = sampler.elapsed()
        try:
            completed = subprocess.run(command, timeout=args.run_time + args.stop_timeout + 120, check=False)
            locust_code = completed.returncode
        except subprocess.TimeoutExpired:
            locust_code = -1
        sampler.stop()
        counted_after = [parse_metrics(scrape_metrics(replica.metrics_url)) for replica in servers]
        result["replicas"] = replica_figures(servers, counted_before, counted_after, ensemble_name(args.scale),
                                             args.run_time)
    finally:
        for replica in servers:
            replica.stop()

    problems: list[str] = []
    if locust_code not in (0, 1):  # 1: Locust saw failures, judged from the CSV below
        problems.append(f"locust exited with code {locust_code}" + (" (timed out)" if locust_code == -1 else ""))
    stats = reports / f"{prefix}_stats.csv"
    if stats.is_file():
        more, result["requests"] = judge_requests(read_stats(stats), args.p95_ms)
        problems += more
    else:
        problems.append(f"Locust wrote no {stats.name}")
    exceptions = reports / f"{prefix}_exceptions.csv"
    if exceptions.is_file():
        with open(exceptions, newline="") as handle:
            raised = [row for row in csv.DictReader(handle)]
        if raised:
            first = raised[0].get("Message", "").strip()
            problems.append(f"Locust users raised {len(raised)} kind(s) of exception, first: {first[:300]}")
    result["memory"] = memory_summary(sampler)
    if args.soak:
        verdict = soak_verdict(sampler, locust_started, args.run_time, args.max_rss_growth)
        result["soak"] = verdict
        sampler.write_csv(reports / f"{prefix}_memory.csv", offset_s=locust_started)
        try:
            plot_memory(sampler, locust_started, reports / f"{prefix}_memory.png",
                        f"sritm soak: {args.users} users, {args.run_time} s")
        except ImportError:
            pass
        if not verdict["passed"]:
            problems.append(
                f"server RSS grew by {verdict.get('growth', float('nan')):.1%} "
                f"(bound {args.max_rss_growth:.0%}): {verdict.get('reason', '')}".rstrip(": ")
            )
    result["problems"] = problems
    result["passed"] = not problems
    (reports / f"{prefix}_summary.json").write_text(json.dumps(result, indent=2) + "\n")
    print_summary(result, reports, prefix)
    return 0 if not problems else 1


def replica_figures(servers: list[TritonServer], before: list[dict[str, dict[str, float]]],
                    after: list[dict[str, dict[str, float]]], model: str, run_time_s: float) -> list[dict[str, Any]]:
    """Per replica, from its own Triton counters over the run: ensemble requests, their rate and share."""
    counts = [metrics_delta(b, a).get(model, {}) for b, a in zip(before, after)]
    served = [c.get("nv_inference_request_success", 0.0) for c in counts]
    total = sum(served) or 1.0
    return [{
        "url": server.grpc_url,
        "requests": int(requests),
        "failures": int(c.get("nv_inference_request_failure", 0.0)),
        "requests_per_s": round(requests / run_time_s, 3),
        "share": round(requests / total, 3),
        "queue_ms": round(c.get("nv_inference_queue_duration_us", 0.0) / max(1.0, requests) / 1e3, 2),
    } for server, c, requests in zip(servers, counts, served)]


def warm_up(url: str, scale: int, sizes: list[tuple[int, int]]) -> None:
    """Convert one frame of each distinct size, so that first-run allocations happen before the measurement."""
    from sritm_client import SritmClient

    with SritmClient(url, scale=scale, timeout_s=300) as client:
        for size in dict.fromkeys(sizes):
            client.convert(sdr_frames(size, 1, seed=2)[0])


def print_summary(result: dict[str, Any], reports: Path, prefix: str) -> None:
    """Print the per-request table, the server's memory, the soak verdict, the report paths and the verdict."""
    print("\n| request | count | failures | median ms | p95 ms | req/s |\n|---|---:|---:|---:|---:|---:|")
    for entry in result.get("requests", []):
        bound = "" if entry["p95_bounded"] else " (not bounded)"
        print(f"| {entry['name']} | {entry['requests']} | {entry['failures']} | {entry['median_ms']:.0f} "
              f"| {entry['p95_ms']:.0f}{bound} | {entry['requests_per_s']:.2f} |")
    replicas = result.get("replicas", [])
    if replicas:
        print("\n| replica | requests | failures | req/s | share | queue ms |\n|---|---:|---:|---:|---:|---:|")
        for replica in replicas:
            print(f"| {replica['url']} | {replica['requests']} | {replica['failures']} | "
                  f"{replica['requests_per_s']:.2f} | {replica['share']:.0%} | {replica['queue_ms']} |")
        print(f"| total | {sum(r['requests'] for r in replicas)} | {sum(r['failures'] for r in replicas)} | "
              f"{sum(r['requests_per_s'] for r in replicas):.2f} | 100% | |")
    memory = result["memory"]
    print(f"\nserver memory (server + {memory['processes'] - 1} stubs): idle {memory['idle_rss_mib']} MiB RSS, "
          f"peak {memory['peak_rss_mib']} MiB RSS / {memory['peak_pss_mib']} MiB PSS")
    if "soak" in result:
        print(f"soak: {json.dumps(result['soak'])}")
    print(f"reports: {reports}/{prefix}_stats.csv, {prefix}.html, {prefix}_summary.json")
    if result["problems"]:
        print("FAILED:\n  " + "\n  ".join(result["problems"]))
    else:
        print(f"PASSED (p95 bound {result['settings']['p95_bound_ms']:g} ms, no failed request)")


if __name__ == "__main__":
    started = time.monotonic()
    code = main()
    print(f"({time.monotonic() - started:.0f} s)")
    sys.exit(code)
