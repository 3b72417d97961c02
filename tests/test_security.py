"""Limits and security.

Where the frame limits and the deadline are set, loopback binding, gRPC over TLS and mutual TLS with
certificates made here, and model control closed to clients.

The TLS tests make a throw-away CA, server and client certificates with the
``openssl`` CLI (EC P-256, valid one day) and start servers of their own on
free loopback ports. Reproduce:
``nice -n 10 .venv/bin/python -m pytest tests/test_security.py -v``.
"""

from __future__ import annotations

import argparse
import inspect
import ipaddress
import json
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from sritm_client import (
    AsyncSritmClient,
    HdrFrame,
    InvalidFrameError,
    SdrFrame,
    ServerUnavailableError,
    SritmClient,
    TlsOptions,
)
from sritm_client.cli import _convert_parser
from sritm_client.cli import main as sritm
from sritm_client.client import DEFAULT_TIMEOUT_S, RetryPolicy
from sritm_core.contract import FrameLimits
from sritm_serving.triton_server import LOOPBACK, ServerPorts, TlsFiles, TritonServer, server_command

pytestmark = pytest.mark.server

OPENSSL = shutil.which("openssl")


def frame(height: int, width: int, pts: int = 0) -> SdrFrame:
    yy, xx = np.mgrid[0:height, 0:width]
    rgb = np.stack([(xx * 9) % 256, (yy * 13) % 256, np.full_like(xx, 90)], axis=-1).astype(np.uint8)
    return SdrFrame.from_rgb8(rgb, pts=pts)


def quick(retry_s: float = 1.0) -> dict[str, object]:
    """Client options that give up on an unreachable (or refusing) server within ``retry_s``."""
    return {"ready_timeout_s": retry_s, "retry": RetryPolicy(attempts=2, deadline_s=retry_s)}


# --------------------------------------------------------------------------
# Limits: each set in one place.


def config_parameters(path: Path) -> dict[str, str]:
    """A generated config.pbtxt's parameters, parsed by protobuf (not by this test's own reading)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    config = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    return {key: value.string_value for key, value in config.parameters.items()}


def test_frame_limits_reach_every_model_from_the_one_source(triton_server, model_repository):
    """Every model that checks frames has the limits in its own config: FrameLimits' defaults, as served."""
    limits = FrameLimits()
    with grpcclient.InferenceServerClient(triton_server.grpc_url) as client:
        for name in ("sritm_preprocess", "gpgmnet_x2", "gpgmnet_x4", "sritm_postprocess"):
            written = config_parameters(model_repository / name / "config.pbtxt")
            served = client.get_model_config(name, as_json=True)["config"]["parameters"]
            for key in ("min_height", "min_width", "max_height", "max_width"):
                assert int(written[key]) == int(served[key]["string_value"]) == getattr(limits, key), (name, key)


def test_changing_the_limits_at_assembly_changes_every_step(model_repository, tmp_path):
    """``--max-size 32x48`` at assembly, restart: the ensemble and its later steps refuse by the new numbers."""
    repository = tmp_path / "repository"
    shutil.copytree(model_repository, repository, ignore=shutil.ignore_patterns("__pycache__"))
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    for scale in (2, 4):
        shutil.copyfile(repository / f"gpgmnet_x{scale}" / "1" / "model.onnx", artifacts / f"gpgmnet_x{scale}.onnx")
    completed = subprocess.run(
        [sys.executable, "-m", "build.assemble_repository", "--repository", str(repository), "--artifacts-dir",
         str(artifacts), "--max-size", "32x48"], cwd=Path(__file__).resolve().parent.parent,
        capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    server = TritonServer(repository, ServerPorts.free(), log_path=tmp_path / "triton.log").start()
    try:
        with SritmClient(server.grpc_url, scale=2) as client:
            largest = client.convert(frame(32, 48))
            assert (largest.height, largest.width) == (64, 96)
            with pytest.raises(InvalidFrameError, match="the frame 34×48 is larger than the maximum 32×48"):
                client.convert(frame(34, 48))
            with pytest.raises(InvalidFrameError, match="the frame 32×50 is larger than the maximum 32×48"):
                client.convert(frame(32, 50))
        wide = np.full((1, 3, 16, 50), 0.5, np.float32)
        tensor = grpcclient.InferInput("LR_YUV", list(wide.shape), "FP32")
        tensor.set_data_from_numpy(wide)
        condition = grpcclient.InferInput("CONDITION", [1, 7], "FP32")
        condition.set_data_from_numpy(np.eye(7, dtype=np.float32)[:1])
        with grpcclient.InferenceServerClient(server.grpc_url) as direct:
            with pytest.raises(InferenceServerException, match="larger than the maximum 32×48"):
                direct.infer("gpgmnet_x2", [tensor, condition])
    finally:
        server.kill()  # a test server: no need to wait for a graceful exit; kill() also cleans /dev/shm


def test_the_ensembles_steps_enforce_the_frame_limits_too(triton_server):
    """Clients can call the ensembles' steps directly; they apply the same limits (each from its own config)."""
    wide = np.full((1, 3, 16, FrameLimits().max_width + 2), 0.5, np.float32)
    tensor = grpcclient.InferInput("LR_YUV", list(wide.shape), "FP32")
    tensor.set_data_from_numpy(wide)
    residual = grpcclient.InferInput("RESIDUAL", [1, 3, 32, 2 * wide.shape[3]], "FP32")
    residual.set_data_from_numpy(np.zeros((1, 3, 32, 2 * wide.shape[3]), np.float32))
    condition = grpcclient.InferInput("CONDITION", [1, 7], "FP32")
    condition.set_data_from_numpy(np.eye(7, dtype=np.float32)[:1])
    with grpcclient.InferenceServerClient(triton_server.grpc_url) as client:
        for model, inputs in (("gpgmnet_x2", [tensor, condition]), ("sritm_postprocess", [tensor, residual])):
            with pytest.raises(InferenceServerException, match="larger than the maximum 1088×1920") as raised:
                client.infer(model, inputs)
            assert raised.value.status() == "StatusCode.INVALID_ARGUMENT"
        small = np.full((1, 3, 16, 16), 0.5, np.float32)
        tensor = grpcclient.InferInput("LR_YUV", list(small.shape), "FP32")
        tensor.set_data_from_numpy(small)
        assert client.infer("gpgmnet_x2", [tensor, condition]).as_numpy("RESIDUAL").shape == (1, 3, 32, 32)
        not_one_hot = grpcclient.InferInput("CONDITION", [1, 7], "FP32")
        not_one_hot.set_data_from_numpy(np.full((1, 7), 0.5, np.float32))
        with pytest.raises(InferenceServerException, match="one-hot") as raised:
            client.infer("gpgmnet_x2", [tensor, not_one_hot])
        assert raised.value.status() == "StatusCode.INVALID_ARGUMENT"


def test_the_deadline_is_timeout_s_for_every_call_and_stream(triton_server):
    """One default (``sritm_client.client.DEFAULT_TIMEOUT_S``) for both clients and ``sritm convert --timeout``."""
    for client_class in (SritmClient, AsyncSritmClient):
        assert inspect.signature(client_class).parameters["timeout_s"].default == DEFAULT_TIMEOUT_S
    parser = argparse.ArgumentParser()
    _convert_parser(parser.add_subparsers())  # the CLI's own parser for `sritm convert`
    assert parser.parse_args(["convert", "a.png", "b.png"]).timeout == DEFAULT_TIMEOUT_S

    slow = frame(192, 320)  # ~74 GMAC at ×4: about a second on 2 cores, far over the 0.1 s deadline anywhere
    with SritmClient(triton_server.grpc_url, scale=4, retry=RetryPolicy(attempts=1)) as client:
        client.timeout_s = 0.1
        started = time.monotonic()
        with pytest.raises(ServerUnavailableError, match="deadline|within"):
            client.convert(slow)
        with pytest.raises(ServerUnavailableError, match=r"answered none of \d+ frames in flight within 0.1 s"):
            list(client.stream([slow, slow], window=2))
        assert time.monotonic() - started < 10
        client.timeout_s = DEFAULT_TIMEOUT_S
        assert client.convert(frame(16, 16)).height == 64  # the client is still usable


# --------------------------------------------------------------------------
# Binding.


def listening_sockets(pids: list[int]) -> set[tuple[str, int]]:
    """(address, port) of the TCP sockets in LISTEN state that the processes own (from /proc/net/tcp{,6})."""
    inodes: set[str] = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = str(fd.readlink())
            except FileNotFoundError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # TCP_LISTEN
                hex_address, port = local.split(":")
                assert len(hex_address) == width
                # The kernel prints the address as 32-bit words in host (little-endian) order.
                raw = b"".join(bytes.fromhex(hex_address[i : i + 8])[::-1] for i in range(0, width, 8))
                address = ipaddress.ip_address(raw)
                if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
                    address = address.ipv4_mapped  # an IPv6 socket bound to ::ffff:127.0.0.1 takes 127.0.0.1 only
                found.add((str(address), int(port, 16)))
    return found


def test_server_listens_on_loopback_only(triton_server):
    pids = [triton_server.pid, *triton_server.stub_processes().values()]
    ports = triton_server.ports
    assert listening_sockets(pids) == {(LOOPBACK, ports.http), (LOOPBACK, ports.grpc), (LOOPBACK, ports.metrics)}


def test_tls_keeps_the_plaintext_http_endpoint_on_loopback():
    """Triton's HTTP endpoint cannot do TLS; with gRPC over TLS on all interfaces, HTTP and metrics stay local."""
    tls = TlsFiles(Path("server.pem"), Path("server.key"))
    command = server_command(Path("repo"), ServerPorts(), host="0.0.0.0", tls=tls, root=Path("/triton"))
    assert "--grpc-address=0.0.0.0" in command
    assert "--http-address=127.0.0.1" in command and "--metrics-address=127.0.0.1" in command
    plain = server_command(Path("repo"), ServerPorts(), host="0.0.0.0", root=Path("/triton"))
    assert "--http-address=0.0.0.0" in plain


# --------------------------------------------------------------------------
# Model control.


def test_clients_cannot_load_or_unload_models(triton_server):
    """``--model-control-mode=none``: load and unload are refused over gRPC and HTTP; the models keep serving."""
    with grpcclient.InferenceServerClient(triton_server.grpc_url) as client:
        for action in (client.unload_model, client.load_model):
            with pytest.raises(InferenceServerException, match="explicit model load / unload is not allowed") as raised:
                action("sritm_x4")
            assert raised.value.status() == "StatusCode.UNAVAILABLE"
        with pytest.raises(InferenceServerException, match="not allowed"):
            client.load_model("sritm_x4", config=json.dumps({"backend": "python"}))
        assert all(client.is_model_ready(m) for m in ("sritm_x2", "sritm_x4", "gpgmnet_x4", "sritm_preprocess"))
    for action in ("unload", "load"):
        request = urllib.request.Request(
            f"http://{triton_server.http_url}/v2/repository/models/sritm_x4/{action}", data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as raised:
            urllib.request.urlopen(request, timeout=10)
        assert raised.value.code >= 400
        assert "not allowed" in raised.value.read().decode()
    with SritmClient(triton_server.grpc_url, scale=4) as client:
        assert client.convert(frame(16, 16)).width == 64


# --------------------------------------------------------------------------
# TLS and mutual TLS, with certificates made by the test.


def openssl(*args: str, cwd: Path) -> None:
    # `make setup` installs openssl (build/install_system_packages.sh): its absence is a broken setup, not a skip.
    assert OPENSSL is not None, "the openssl CLI is missing: run `make setup` (it installs it)"
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(folder: Path, name: str) -> None:
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "1", "-subj", f"/CN=sritm test {name}",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            cwd=folder)


def make_leaf(folder: Path, name: str, ca: str, usage: str, san: str | None = None) -> None:
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN=sritm test {name}", cwd=folder)
    extensions = folder / f"{name}.ext"
    extensions.write_text(
        f"basicConstraints=CA:FALSE\nextendedKeyUsage={usage}\n" + (f"subjectAltName={san}\n" if san else ""))
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "1", "-extfile", extensions.name, cwd=folder)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CA (signs the server and the client), server (SAN 127.0.0.1, localhost), client, and a rogue CA and client."""
    folder = tmp_path_factory.mktemp("pki")
    make_ca(folder, "ca")
    make_ca(folder, "rogue_ca")
    make_leaf(folder, "server", "ca", "serverAuth", san="IP:127.0.0.1,DNS:localhost")
    make_leaf(folder, "client", "ca", "clientAuth")
    make_leaf(folder, "rogue_client", "rogue_ca", "clientAuth")
    return folder


@pytest.fixture(scope="module")
def plain_answer(triton_server) -> HdrFrame:
    with SritmClient(triton_server.grpc_url, scale=2) as client:
        return client.convert(frame(16, 32, pts=3))


@pytest.fixture
def tls_server(model_repository, certificates, tmp_path, request) -> Iterator[TritonServer]:
    mutual = request.param == "mutual"
    tls = TlsFiles(certificates / "server.pem", certificates / "server.key",
                   client_ca=certificates / "ca.pem" if mutual else None)
    server = TritonServer(model_repository, ServerPorts.free(), tls=tls, log_path=tmp_path / "triton.log").start()
    try:
        yield server
    finally:
        server.kill()  # a test server: no need to wait for a graceful exit; kill() also cleans /dev/shm


def assert_refused(url: str, tls: TlsOptions | None) -> None:
    started = time.monotonic()
    with pytest.raises(ServerUnavailableError, match=re.escape(url)):
        SritmClient(url, scale=2, tls=tls, **quick())  # type: ignore[arg-type]
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("tls_server", ["server-only"], indirect=True)
def test_grpc_over_tls_works_with_the_ca_and_refuses_plaintext(tls_server, certificates, plain_answer, tmp_path):
    ca = certificates / "ca.pem"
    with SritmClient(tls_server.grpc_url, scale=2, tls=TlsOptions(root_certificates=ca)) as client:
        answer = client.convert(frame(16, 32, pts=3))
        streamed = list(client.stream([frame(16, 32, pts=3)] * 3, window=2))
    assert answer.i420.tobytes() == plain_answer.i420.tobytes() and answer.pts == 3
    assert all(hdr.i420.tobytes() == plain_answer.i420.tobytes() for hdr in streamed)

    assert_refused(tls_server.grpc_url, None)  # plaintext
    assert_refused(tls_server.grpc_url, TlsOptions(root_certificates=certificates / "rogue_ca.pem"))  # wrong CA
    assert_refused(tls_server.grpc_url, TlsOptions())  # the system's roots do not know our CA
    with grpcclient.InferenceServerClient(tls_server.grpc_url) as raw:  # plaintext, tritonclient itself
        with pytest.raises(InferenceServerException) as raised:
            raw.is_server_live(client_timeout=5)
        assert raised.value.status() == "StatusCode.UNAVAILABLE"

    import cv2

    source = tmp_path / "in.png"
    assert cv2.imwrite(str(source), np.zeros((16, 16, 3), np.uint8))
    assert sritm(["convert", str(source), str(tmp_path / "out.yuv"), "--url", tls_server.grpc_url, "--scale", "2",
                  "--tls-ca", str(ca), "--quiet"]) == 0
    assert (tmp_path / "out.yuv").stat().st_size == 32 * 48 * 2


@pytest.mark.parametrize("tls_server", ["mutual"], indirect=True)
def test_mutual_tls_needs_a_client_certificate_from_the_ca(tls_server, certificates, plain_answer):
    ca, url = certificates / "ca.pem", tls_server.grpc_url
    own = TlsOptions(root_certificates=ca, private_key=certificates / "client.key",
                     certificate_chain=certificates / "client.pem")
    with SritmClient(url, scale=2, tls=own) as client:
        assert client.convert(frame(16, 32, pts=3)).i420.tobytes() == plain_answer.i420.tobytes()

    assert_refused(url, TlsOptions(root_certificates=ca))  # no client certificate
    assert_refused(url, TlsOptions(root_certificates=ca,  # a certificate we did not sign
                                   private_key=certificates / "rogue_client.key",
                                   certificate_chain=certificates / "rogue_client.pem"))
    assert_refused(url, None)  # plaintext
