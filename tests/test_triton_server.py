"""The Triton launcher: start, readiness, failure with the server's log, stop by PID, `make serve`'s entry point."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from sritm_serving.triton_server import ServerPorts, TritonServer, TritonServerError, server_command

pytestmark = pytest.mark.server


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_server_is_ready_binds_loopback_and_exports_metrics(triton_server):
    assert triton_server.is_ready()
    assert triton_server.startup_seconds is not None and triton_server.startup_seconds < 60
    metrics = urllib.request.urlopen(triton_server.metrics_url, timeout=5).read().decode()
    assert "nv_inference_request_success" in metrics
    command = server_command(Path("repo"), triton_server.ports)
    for flag in ("--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1",
                 "--model-control-mode=none"):
        assert flag in command


def test_start_and_stop_by_pid(tmp_path):
    (tmp_path / "empty").mkdir()
    server = TritonServer(tmp_path / "empty", ServerPorts.free(), log_path=tmp_path / "log")
    with server:
        pid = server.pid
        assert process_exists(pid)
    assert server.process.poll() is not None and not process_exists(pid)
    assert "Started GRPCInferenceService" in server.log_text()


def test_broken_repository_fails_with_the_server_log(tmp_path, model_repository):
    repository = tmp_path / "broken"
    shutil.copytree(model_repository / "sritm_preprocess", repository / "sritm_preprocess")
    (repository / "sritm_preprocess" / "config.pbtxt").write_text(
        'name: "sritm_preprocess"\nbackend: "python"\nthis is not protobuf text\n'
    )
    server = TritonServer(repository, ServerPorts.free(), ready_timeout_s=30)
    with pytest.raises(TritonServerError, match="exited with code") as raised:
        server.start()
    assert "sritm_preprocess" in str(raised.value)


def test_missing_repository_says_what_to_run(tmp_path):
    with pytest.raises(TritonServerError, match="make repository"):
        TritonServer(tmp_path / "nowhere", ServerPorts.free()).start()


def test_ports_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("HTTP_PORT", "18000")
    monkeypatch.setenv("GRPC_PORT", "18001")
    monkeypatch.delenv("METRICS_PORT", raising=False)
    assert ServerPorts.from_environment() == ServerPorts(http=18000, grpc=18001, metrics=8002)


def test_serve_entry_point_runs_in_the_foreground(model_repository, tmp_path):
    """What `make serve` runs: tritonserver replaces the Python process and serves until signalled."""
    ports = ServerPorts.free()
    env = dict(os.environ, HTTP_PORT=str(ports.http), GRPC_PORT=str(ports.grpc), METRICS_PORT=str(ports.metrics))
    with open(tmp_path / "serve.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "sritm_serving.triton_server", "--model-repository", str(model_repository)],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    probe = TritonServer(model_repository, ports)
    try:
        deadline = time.monotonic() + 60
        while not probe.is_ready():
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "not ready in 60 s"
            time.sleep(0.2)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        assert process.wait(timeout=30) == 0
