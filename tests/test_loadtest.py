"""The load-test tools, run for real and short: Locust through its runner, the capacity sweep, a soak.

The runner tests each start their own tritonserver (that is what the runner
does) on the session's test repository; the capacity sweep uses the session's
server. Tiny frames keep the file near a minute on two cores.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
LOADTEST = ROOT / "loadtest"
TINY_SIZES = "16x32,24x40,32x56"

pytestmark = [pytest.mark.server, pytest.mark.timeout(180)]


def run_tool(script: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(LOADTEST / script), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, check=False)


def locust_run(repository: Path, reports: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_tool("run_locust.py", "--repository", str(repository), "--reports-dir", str(reports),
                    "--sizes", TINY_SIZES, "--stream-frames", "4", "--stream-window", "2", "--users", "2",
                    "--spawn-rate", "2", "--stop-timeout", "10", *args)


def stats_rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as handle:
        return {row["Name"]: row for row in csv.DictReader(handle)}


def summary(reports: Path, prefix: str) -> dict[str, Any]:
    return json.loads((reports / f"{prefix}_summary.json").read_text())  # type: ignore[no-any-return]


def test_locust_run_passes_and_writes_reports(model_repository: Path, tmp_path: Path) -> None:
    completed = locust_run(model_repository, tmp_path, "--run-time", "10", "--p95-ms", "20000")
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "PASSED" in completed.stdout
    rows = stats_rows(tmp_path / "loadtest_stats.csv")
    # Every scenario ran and was reported as grpc requests named by ensemble and frame size.
    for name in ("sritm_x4 16x32", "sritm_x4 24x40", "sritm_x4 32x56", "sritm_x4 16x32 stream frame",
                 "sritm_x4 16x32 stream session (4 frames, window 2)"):
        assert name in rows, sorted(rows)
        assert rows[name]["Type"] == "grpc"
        assert int(rows[name]["Request Count"]) > 0
    assert int(rows["Aggregated"]["Failure Count"]) == 0
    html = tmp_path / "loadtest.html"
    assert html.is_file() and "sritm_x4 16x32" in html.read_text()
    result = summary(tmp_path, "loadtest")
    assert result["passed"] and result["memory"]["processes"] >= 2  # the server and its Python-backend stubs


def test_locust_against_two_replicas_reports_each_and_the_total(model_repository: Path, tmp_path: Path) -> None:
    completed = locust_run(model_repository, tmp_path, "--run-time", "8", "--p95-ms", "20000", "--replicas", "2",
                           "--user-classes", "SingleFrameUser", "--prefix", "two")
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    replicas = summary(tmp_path, "two")["replicas"]
    assert len(replicas) == 2 and len({r["url"] for r in replicas}) == 2
    # Each replica's own Triton counters: both served, and together they served what Locust sent.
    assert all(r["failures"] == 0 and 0.3 <= r["share"] <= 0.7 for r in replicas), replicas  # round robin
    sent = int(stats_rows(tmp_path / "two_stats.csv")["Aggregated"]["Request Count"])
    # Servers count more than Locust's CSV, up to about a second of traffic around Locust's start and stop
    # (seen in CI on a loaded 2-core machine: 387 served for 348 in the CSV of an 8 s run).
    run_time_s, uncounted_s = 8.0, 1.5
    assert sent <= sum(r["requests"] for r in replicas) <= sent * (run_time_s + uncounted_s) / run_time_s + 4, \
        (replicas, sent)
    assert "| total |" in completed.stdout


def test_locust_runner_fails_on_an_impossible_p95_bound(model_repository: Path, tmp_path: Path) -> None:
    completed = locust_run(model_repository, tmp_path, "--run-time", "4", "--p95-ms", "1", "--tags", "small",
                           "--user-classes", "SingleFrameUser", "--prefix", "strict")
    assert completed.returncode == 1, completed.stdout[-3000:] + completed.stderr[-3000:]
    result = summary(tmp_path, "strict")
    assert not result["passed"]
    assert any("exceeds the bound of 1 ms" in problem for problem in result["problems"]), result["problems"]
    assert not any("failed" in problem for problem in result["problems"])  # the requests themselves succeeded
    assert set(stats_rows(tmp_path / "strict_stats.csv")) == {"sritm_x4 16x32", "Aggregated"}


def test_capacity_sweep_writes_table_plot_and_metrics(triton_server: Any, tmp_path: Path) -> None:
    completed = run_tool("capacity.py", "--url", triton_server.grpc_url, "--metrics-url", triton_server.metrics_url,
                         "--size", "16x32", "--concurrency", "1,2", "--seconds", "1.5", "--min-requests", "3",
                         "--reports-dir", str(tmp_path), "--prefix", "cap")
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    table = (tmp_path / "cap.md").read_text()
    for row in ("| ensemble | sritm_x4 | 1 |", "| ensemble | sritm_x4 | 2 |", "| network | gpgmnet_x4 | 1 |",
                "| network | gpgmnet_x4 | 2 |"):
        assert row in table
    assert "perf_analyzer" in table
    assert (tmp_path / "cap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "nv_inference_request_success" in (tmp_path / "cap_metrics_after.txt").read_text()
    report = json.loads((tmp_path / "cap.json").read_text())
    points = {(p["target"], p["concurrency"]): p for p in report["points"]}
    assert set(points) == {("ensemble", 1), ("ensemble", 2), ("network", 1), ("network", 2)}
    for point in points.values():
        assert point["failures"] == 0 and point["requests"] >= 3 and point["throughput"] > 0
        assert point["p95_ms"] >= point["p50_ms"] > 0
        # NVIDIA's perf_analyzer measured the same point (through Debian 13's loader where glibc < 2.38).
        assert "error" not in point["perf_analyzer"], point["perf_analyzer"]
        assert point["perf_analyzer"]["throughput"] > 0
    # Triton's account per model: the ensemble's points reach all three steps, the network's only the network.
    assert {"sritm_x4", "sritm_preprocess", "gpgmnet_x4", "sritm_postprocess"} <= set(points["ensemble", 1]["server"])
    assert set(points["network", 2]["server"]) == {"gpgmnet_x4"}
    assert points["network", 2]["server"]["gpgmnet_x4"]["compute_infer_ms"] > 0


def test_short_soak_passes_with_stable_memory(model_repository: Path, tmp_path: Path) -> None:
    completed = locust_run(model_repository, tmp_path, "--run-time", "20", "--soak", "--p95-ms", "20000")
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    result = summary(tmp_path, "soak")
    soak = result["soak"]
    assert soak["passed"] and soak["growth"] < 0.10 and soak["samples"] >= 10
    assert soak["baseline_at_s"] >= 2.0  # 1/10 of the run: after the start, before the end
    with open(tmp_path / "soak_memory.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) >= 10


def test_bench_reports_served_over_the_served_engine_and_the_processing_share(model_repository: Path,
                                                                              tmp_path: Path) -> None:
    """The bench at a tiny size: the served engine timed beside the ensemble; Triton's counters give pre/post."""
    completed = run_tool("bench.py", "--repository", str(model_repository), "--reports-dir", str(tmp_path),
                         "--sizes", "16x32", "--frames", "2", "--rounds", "1", "--no-paper-sizes",
                         "--skip", "torch_eager", timeout=170)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    report = json.loads((tmp_path / "bench.json").read_text())
    assert "precision f32" in report["engines"]["served_engine"] and "CPUs" in report["machine"]
    size = report["sizes"]["16x32"]
    assert size["frames_per_s"]["served_engine"] > 0
    assert size["ratios"]["ensemble_over_served_engine"] > 0
    assert 0 < size["prepost_share_of_network"] < 10
    # f32 served engine = the f32 OpenVINO path: the same answer.
    assert size["max_abs_difference_vs_onnxruntime"]["served_engine"] < 1e-4
    assert "ensemble ÷ served engine" in (tmp_path / "bench.md").read_text()


def test_sweep_settings_split_the_cores_every_way() -> None:
    sys.path.insert(0, str(LOADTEST))
    try:
        from sweep import settings
    finally:
        sys.path.remove(str(LOADTEST))
    assert settings(1) == [(1, 1)]
    assert settings(2) == [(1, 2), (2, 1)]
    assert settings(16) == [(1, 16), (2, 8), (16, 1)]
    assert all(instances * threads == 6 for instances, threads in settings(6))
