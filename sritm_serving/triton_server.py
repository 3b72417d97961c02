"""Launch the real Triton Inference Server that ships inside the ``nvidia-pytriton`` wheel.

The wheel carries ``tritonserver`` 2.51 with only the Python backend. This module

* lays the server out once (:func:`install_python_backend_stub`: the Python
  backend looks for ``triton_python_backend_stub`` beside ``libtriton_python.so``,
  but the wheel keeps it under ``python_backend_stubs/3.11``);
* starts it with the environment it needs (:func:`server_environment`);
* offers :class:`TritonServer`, a context manager that starts the server, waits
  for ``/v2/health/ready`` and stops it by PID, failing with the server's log;
* and ``python -m sritm_serving.triton_server`` (``make serve``), which runs it in the
  foreground.

It imports neither torch nor tritonclient, so it is cheap to use from tests and
scripts.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Sequence

LOOPBACK = "127.0.0.1"
DEFAULT_READY_TIMEOUT_S = 60.0
STUB_NAME = "triton_python_backend_stub"
# The Python backend passes each stub the name of its POSIX shared-memory region
# (under /dev/shm); Triton unlinks it on a clean shutdown only.
SHM_REGION_PREFIX = "triton_python_backend_shm_region_"
SHM_DIR = Path("/dev/shm")


class TritonServerError(RuntimeError):
    """The server could not be found, started, or did not become ready."""


@dataclass(frozen=True)
class ServerPorts:
    """The three endpoints Triton opens. ``make serve`` reads them from the environment."""

    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002

    @classmethod
    def from_environment(cls) -> ServerPorts:
        """The ports in ``HTTP_PORT``, ``GRPC_PORT`` and ``METRICS_PORT``; Triton's defaults where unset."""
        return cls(
            http=int(os.environ.get("HTTP_PORT", cls.http)),
            grpc=int(os.environ.get("GRPC_PORT", cls.grpc)),
            metrics=int(os.environ.get("METRICS_PORT", cls.metrics)),
        )

    @classmethod
    def free(cls) -> ServerPorts:
        """Three currently unused loopback ports, so parallel test sessions never collide."""
        import socket

        sockets = [socket.socket() for _ in range(3)]
        try:
            for sock in sockets:
                sock.bind((LOOPBACK, 0))
            http, grpc, metrics = (sock.getsockname()[1] for sock in sockets)
        finally:
            for sock in sockets:
                sock.close()
        return cls(http=http, grpc=grpc, metrics=metrics)


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for gRPC over TLS. With ``client_ca`` the server demands client certificates."""

    server_cert: Path
    server_key: Path
    client_ca: Path | None = None


def tritonserver_root() -> Path:
    """The ``pytriton/tritonserver`` folder of the installed ``nvidia-pytriton`` wheel."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonServerError(
            "nvidia-pytriton is not installed: run `make setup` (it provides the tritonserver binary)"
        )
    root = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
    if not (root / "bin" / "tritonserver").is_file():
        raise TritonServerError(f"no tritonserver binary under {root}")
    return root


def install_python_backend_stub(root: Path | None = None) -> Path:
    """Copy the Python 3.11 stub next to the Python backend, where Triton looks for it. Idempotent."""
    root = root or tritonserver_root()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    source = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    target = root / "backends" / "python" / "triton_python_backend_stub"
    if not source.is_file():
        raise TritonServerError(f"the wheel has no Python backend stub for Python {version} ({source})")
    if not target.is_file() or target.stat().st_size != source.stat().st_size:
        shutil.copy2(source, target)
    return target


def server_environment(root: Path | None = None) -> dict[str, str]:
    """The environment ``tritonserver`` needs: the wheel's bundled libraries and this venv first on PATH.

    The Python backend stub embeds libpython from ``LIBDIR`` and finds the
    project's packages through the ``python`` it sees first on ``PATH``.
    """
    root = root or tritonserver_root()
    site_packages = root.parent.parent
    library_dirs = [str(site_packages / "nvidia_pytriton.libs"), str(sysconfig.get_config_var("LIBDIR"))]
    env = dict(os.environ)
    if env.get("LD_LIBRARY_PATH"):
        library_dirs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(library_dirs)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    # One ORT/OpenMP thread pool per model instance; the default of one thread per
    # core for every instance oversubscribes small machines.
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def server_command(
    model_repository: Path,
    ports: ServerPorts,
    *,
    host: str = LOOPBACK,
    tls: TlsFiles | None = None,
    log_verbose: int = 0,
    extra_args: Sequence[str] = (),
    root: Path | None = None,
) -> list[str]:
    """The ``tritonserver`` command line that serves ``model_repository`` on ``ports``.

    The models are fixed at start (no client may load or unload them) and the
    server exits on any model error. With ``tls``, gRPC uses TLS (mutual with
    ``tls.client_ca``) and HTTP and metrics listen on loopback only.

    Args:
        model_repository: the repository folder.
        ports: the HTTP, gRPC and metrics ports.
        host: the address gRPC binds (and HTTP and metrics, without TLS).
        tls: the gRPC server's PEM files; ``None`` for plaintext.
        log_verbose: Triton's ``--log-verbose`` level.
        extra_args: further ``tritonserver`` flags, appended.
        root: the wheel's ``tritonserver`` folder (default: :func:`tritonserver_root`).
    """
    root = root or tritonserver_root()
    # Triton's HTTP endpoint has no TLS: with gRPC over TLS, HTTP (which can run
    # inference too) and metrics stay on loopback, for local health checks only.
    plain_host = LOOPBACK if tls is not None else host
    command = [
        str(root / "bin" / "tritonserver"),
        f"--model-repository={model_repository}",
        f"--backend-directory={root / 'backends'}",
        f"--cache-directory={root / 'caches'}",
        # Models are fixed at start: no client may load or unload them.
        "--model-control-mode=none",
        "--strict-readiness=true",
        "--exit-on-error=true",
        "--exit-timeout-secs=10",
        f"--http-address={plain_host}",
        f"--http-port={ports.http}",
        f"--grpc-address={host}",
        f"--grpc-port={ports.grpc}",
        "--allow-metrics=true",
        "--allow-cpu-metrics=true",
        "--allow-gpu-metrics=false",
        f"--metrics-address={plain_host}",
        f"--metrics-port={ports.metrics}",
        f"--log-verbose={log_verbose}",
    ]
    if tls is not None:
        command += [
            "--grpc-use-ssl=true",
            f"--grpc-server-cert={tls.server_cert}",
            f"--grpc-server-key={tls.server_key}",
        ]
        if tls.client_ca is not None:
            command += ["--grpc-use-ssl-mutual=true", f"--grpc-root-cert={tls.client_ca}"]
    command += list(extra_args)
    return command


@dataclass
class TritonServer:
    """A real ``tritonserver`` process, started on entry and stopped on exit.

    Example::

        with TritonServer(Path("model_repository"), ServerPorts.free()) as server:
            client = InferenceServerClient(server.grpc_url)
    """

    model_repository: Path
    ports: ServerPorts = field(default_factory=ServerPorts)
    host: str = LOOPBACK
    tls: TlsFiles | None = None
    ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S
    log_path: Path | None = None
    extra_args: Sequence[str] = ()
    process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    startup_seconds: float | None = field(default=None, init=False)
    _shm_regions: set[str] = field(default_factory=set, init=False, repr=False)

    @property
    def grpc_url(self) -> str:
        """The gRPC endpoint, ``host:port``."""
        return f"{self.host}:{self.ports.grpc}"

    @property
    def http_url(self) -> str:
        """The HTTP endpoint, ``host:port`` (on loopback when gRPC uses TLS)."""
        return f"{self._plain_host}:{self.ports.http}"

    @property
    def metrics_url(self) -> str:
        """The URL of the Prometheus metrics."""
        return f"http://{self._plain_host}:{self.ports.metrics}/metrics"

    @property
    def _plain_host(self) -> str:
        """Where HTTP and metrics listen: on loopback only when gRPC uses TLS (see server_command)."""
        return LOOPBACK if self.tls is not None else self.host

    @property
    def pid(self) -> int:
        """The server's PID, which is also its process group's; :class:`TritonServerError` before it is started."""
        if self.process is None:
            raise TritonServerError("the server is not running")
        return self.process.pid

    def log_text(self) -> str:
        """The server's log so far; empty when there is none yet."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def start(self) -> TritonServer:
        """Starts the server and waits until it is ready; returns ``self``.

        Lays out the Python backend stub first. The server logs to ``log_path``
        (a new temporary file when unset).

        Raises:
            TritonServerError: it is already running, the model repository does not
                exist, or it did not become ready (it is then stopped).
        """
        if self.process is not None and self.process.poll() is None:
            raise TritonServerError("the server is already running")
        root = tritonserver_root()
        install_python_backend_stub(root)
        if not Path(self.model_repository).is_dir():
            raise TritonServerError(
                f"model repository {self.model_repository} does not exist: run `make repository`"
            )
        if self.log_path is None:
            handle, name = tempfile.mkstemp(prefix="tritonserver-", suffix=".log")
            os.close(handle)
            self.log_path = Path(name)
        command = server_command(
            Path(self.model_repository).resolve(),
            self.ports,
            host=self.host,
            tls=self.tls,
            extra_args=self.extra_args,
            root=root,
        )
        started = time.monotonic()
        with open(self.log_path, "ab") as log:
            # A session of its own, so stopping it also stops its Python-backend stubs.
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=server_environment(root),
                start_new_session=True,
            )
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def is_ready(self) -> bool:
        """Whether ``/v2/health/ready`` answers 200 within 2 s."""
        url = f"http://{self.http_url}/v2/health/ready"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def stub_processes(self) -> dict[str, int]:
        """The PIDs of this server's Python-backend stubs, by model instance name (``gpgmnet_x4_0_0``).

        A stub's command line is ``triton_python_backend_stub MODEL_PY SHM_REGION … INSTANCE_NAME …``.
        """
        stubs: dict[str, int] = {}
        for pid, argv in _group_command_lines(self.pid).items():
            if len(argv) > 8 and Path(argv[0]).name == STUB_NAME:
                stubs[argv[8]] = pid
                if argv[2].startswith(SHM_REGION_PREFIX):
                    self._shm_regions.add(argv[2])
        return stubs

    def wait_ready(self) -> None:
        """Waits up to ``ready_timeout_s`` for the server to be ready.

        Raises:
            TritonServerError: the server exited first or was not ready in time; the message holds its log.
        """
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise TritonServerError(
                    f"tritonserver exited with code {code} before it was ready; its log:\n{self.log_text()}"
                )
            if self.is_ready():
                self.stub_processes()  # remembers their shared-memory regions, in case of a crash
                return
            time.sleep(0.1)
        raise TritonServerError(
            f"tritonserver was not ready within {self.ready_timeout_s:.0f} s; its log:\n{self.log_text()}"
        )

    def kill(self) -> None:
        """SIGKILL the whole server process group, as a crash would.

        Then removes the stubs' shared-memory regions, which nobody else would:
        a crashed server leaves them in /dev/shm (RAM) for good.
        """
        if self.process is not None and self.process.poll() is None:
            self.stub_processes()
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self._remove_shm_regions()

    def stop(self, timeout_s: float = 20.0) -> None:
        """Stops the whole server process group: SIGTERM, then SIGKILL after ``timeout_s``.

        Stubs that outlived an exited server are killed too, and the stubs'
        shared-memory regions that Triton did not unlink are removed. Nothing
        happens if the server was never started.
        """
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            self.stub_processes()
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        else:
            # The server may be gone while its stubs linger in the group.
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        # Triton unlinks the regions of live stubs on a clean shutdown, not those of a
        # stub that died (or of any stub, after a crash).
        self._remove_shm_regions()

    def _remove_shm_regions(self) -> None:
        for name in self._shm_regions:
            try:
                (SHM_DIR / name).unlink()
            except FileNotFoundError:
                pass
        self._shm_regions.clear()

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _group_command_lines(pgid: int) -> dict[int, list[str]]:
    """The command lines of the live processes in process group ``pgid`` (from /proc)."""
    found: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            if os.getpgid(pid) != pgid:
                continue
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (ProcessLookupError, FileNotFoundError, PermissionError):
            continue
        found[pid] = [part.decode(errors="replace") for part in argv if part]
    return found


def main(argv: Sequence[str] | None = None) -> int:
    """Replaces this process with ``tritonserver`` (``make serve``).

    Returns only with ``--install-stub`` (0) or when the server cannot be set up (2).
    """
    parser = argparse.ArgumentParser(
        prog="python -m sritm_serving.triton_server",
        description="Run tritonserver in the foreground on the project's model repository. "
        "Ports come from HTTP_PORT, GRPC_PORT and METRICS_PORT (default 8000/8001/8002).",
    )
    parser.add_argument("--model-repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--host", default=os.environ.get("TRITON_HOST", LOOPBACK),
                        help="address to bind (default 127.0.0.1; set 0.0.0.0 only behind a firewall)")
    parser.add_argument("--install-stub", action="store_true",
                        help="only lay out the Python backend stub and exit (used by `make setup`)")
    parser.add_argument("extra", nargs="*", help="further tritonserver flags, after `--`")
    args = parser.parse_args(argv)
    try:
        root = tritonserver_root()
        install_python_backend_stub(root)
        if args.install_stub:
            print(f"tritonserver ready to run from {root}")
            return 0
        if not args.model_repository.is_dir():
            raise TritonServerError(f"model repository {args.model_repository} does not exist: run `make repository`")
        command = server_command(
            args.model_repository.resolve(), ServerPorts.from_environment(), host=args.host,
            extra_args=args.extra, root=root,
        )
    except TritonServerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    os.execve(command[0], command, server_environment(root))


if __name__ == "__main__":
    sys.exit(main())
