"""NVIDIA's perf_analyzer 2.60 runs here (directly, or through Debian 13's loader on old glibc) against the server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.server
def test_perf_analyzer_measures_the_ensemble(triton_server, tmp_path):
    report = tmp_path / "perf.json"
    completed = subprocess.run(
        [sys.executable, str(ROOT / "loadtest" / "perf_analyzer.py"), "--url", triton_server.grpc_url,
         "--model", "sritm_x2", "--size", "16x32", "--concurrency", "1,2", "--interval-ms", "1500", "--stability", "80",
         "--json", str(report)],
        capture_output=True, text=True, timeout=900,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    result = json.loads(report.read_text())
    assert [point["concurrency"] for point in result["points"]] == [1, 2]
    for point in result["points"]:
        assert point["inferences_per_s"] > 1.0 and 0 < point["p50_ms"] <= point["p95_ms"]
    major, minor = (int(part) for part in result["glibc"].split("."))
    assert result["via_debian_13_loader"] == ((major, minor) < (2, 38))
    assert "concurrency 2:" in completed.stdout
