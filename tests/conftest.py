"""Session fixtures: a real model repository built from the current code, and a real Triton server on it."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sritm_serving.triton_server import ServerPorts, TritonServer

ROOT = Path(__file__).resolve().parent.parent

SHARED_DIR = ROOT.parent / "shared"
HDR_SCENES_DIR = SHARED_DIR / "data" / "hdr-scenes"


@pytest.fixture(scope="session")
def hdr_scenes_dir() -> Path:
    """The shared real HDR scenes; tests that need them skip where ../shared is absent (a user's clone)."""
    if not HDR_SCENES_DIR.is_dir():
        pytest.skip(f"{HDR_SCENES_DIR} is absent (only CI and developers have ../shared)")
    return HDR_SCENES_DIR


@pytest.fixture(scope="session")
def served_networks() -> dict[int, object]:
    """The GPGMNet instances the test repository serves (shipped weights, else the seeded untrained net)."""
    from gpgmnet.checkpoint import load_network

    return {scale: load_network(None, scale)[0] for scale in (2, 4)}


@pytest.fixture(scope="session")
def model_repository(tmp_path_factory: pytest.TempPathFactory, served_networks: dict[int, object]) -> Path:
    """The CPU repository, assembled the way `make repository` does it, in a temporary folder."""
    from build.assemble_repository import assemble
    from build.export_onnx import export_onnx

    work = tmp_path_factory.mktemp("repository")
    artifacts, repository = work / "artifacts", work / "model_repository"
    for scale, network in served_networks.items():
        export_onnx(network, artifacts / f"gpgmnet_x{scale}.onnx")  # type: ignore[arg-type]
    assemble("cpu", (2, 4), artifacts, repository)
    return repository


@pytest.fixture(scope="session")
def triton_server(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One real tritonserver for the whole session, on free loopback ports."""
    from sritm_serving.triton_server import ServerPorts, TritonServer

    log_path = tmp_path_factory.mktemp("triton") / "tritonserver.log"
    server = TritonServer(model_repository, ServerPorts.free(), log_path=log_path)
    with server:
        yield server
    if os.environ.get("SRITM_SHOW_SERVER_LOG"):
        print(server.log_text())


@pytest.fixture
def launch(model_repository: Path, tmp_path: Path) -> Iterator[Callable[..., TritonServer]]:
    """Starts servers of the test's own; at the end each is SIGKILLed (quick even with a dead stub) and cleaned up."""
    started: list[TritonServer] = []

    def start(ports: ServerPorts | None = None) -> TritonServer:
        log_path = tmp_path / f"triton-{len(started)}.log"
        server = TritonServer(model_repository, ports or ServerPorts.free(), log_path=log_path)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.kill()
        server.stop()
