"""Locust load test of the sritm ensembles, through the project's SDK (``sritm_client.SritmClient``).

Two user classes, each also selectable by tags:

* ``SingleFrameUser``: ``SritmClient.convert`` of one frame, at three sizes
  (tags ``single`` and ``small`` / ``medium`` / ``large``; ``--sizes``).
* ``StreamingUser``: sessions of ``--stream-frames`` frames through
  ``SritmClient.stream`` with ``--stream-window`` frames in flight (tag
  ``stream``), reported per frame (send to in-order delivery) and per session.

Every request is reported to Locust's statistics with request type ``grpc`` and
a name made of the ensemble and the low-resolution frame size, e.g.
``sritm_x4 64x112``, ``sritm_x4 64x112 stream frame``,
``sritm_x4 64x112 stream session (8 frames, window 4)``. ``--host`` is the
server's gRPC address (``127.0.0.1:8001``). ``loadtest/run_locust.py`` (``make
loadtest``, ``make soak``) starts a server and runs this file headless::

    locust -f loadtest/locustfile.py --headless --host 127.0.0.1:8001 -u 2 -r 2 -t 30s \
        --sizes 32x56,64x112,128x224 --tags single

Locust runs its users as gevent greenlets. gRPC's C core blocks the whole
process unless it is switched to gevent first (``init_gevent``, after Locust has
monkey-patched the standard library and before any channel exists); the sync
SDK then yields to the other users while it waits, its stream reader thread
becomes a greenlet too.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import grpc.experimental.gevent as grpc_gevent
from locust import User, constant, events, tag, task  # monkey-patches the standard library first
from locust.exception import StopUser

grpc_gevent.init_gevent()

from loadkit import parse_sizes, sdr_frames, size_label  # noqa: E402  (Locust puts this folder on sys.path)

from sritm_client import SdrFrame, SritmClient  # noqa: E402
from sritm_core.contract import ensemble_name  # noqa: E402

DEFAULT_SIZES = "32x56,48x80,64x112"
DISTINCT_FRAMES = 4  # frames per size, cycled: the server never sees the same bytes twice in a row


@events.init_command_line_parser.add_listener
def _add_options(parser: Any) -> None:
    group = parser.add_argument_group("sritm")
    group.add_argument("--scale", type=int, choices=(2, 4), default=4, env_var="SRITM_SCALE",
                       help="which ensemble: sritm_x2 or sritm_x4 (default 4)")
    group.add_argument("--sizes", default=DEFAULT_SIZES, env_var="SRITM_SIZES",
                       help=f"small,medium,large low-resolution HEIGHTxWIDTH (default {DEFAULT_SIZES})")
    group.add_argument("--stream-frames", type=int, default=8, env_var="SRITM_STREAM_FRAMES",
                       help="frames per streaming session (default 8)")
    group.add_argument("--stream-window", type=int, default=4, env_var="SRITM_STREAM_WINDOW",
                       help="frames in flight in a streaming session (default 4)")
    group.add_argument("--stream-size", default="", env_var="SRITM_STREAM_SIZE",
                       help="frame size of the streaming sessions (default: the small size)")
    group.add_argument("--targets", default="", env_var="SRITM_TARGETS",
                       help="comma-separated gRPC addresses of several replicas; each user's client spreads its "
                       "requests over them (default: --host alone)")
    group.add_argument("--request-timeout", type=float, default=120.0, env_var="SRITM_REQUEST_TIMEOUT",
                       help="the SDK's per-call deadline in seconds (default 120)")


_frame_cache: dict[tuple[int, int], list[SdrFrame]] = {}


def _frames(size: tuple[int, int]) -> list[SdrFrame]:
    """The frames of one size, made once per process and shared by all users (read-only)."""
    if size not in _frame_cache:
        _frame_cache[size] = sdr_frames(size, DISTINCT_FRAMES, seed=1)
    return _frame_cache[size]


class _SritmUser(User):
    abstract = True
    wait_time = constant(0)  # closed loop: each user sends its next request as soon as it has an answer

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self.model = ensemble_name(options.scale)
        self.sizes = parse_sizes(options.sizes)
        if len(self.sizes) != 3:
            raise ValueError(f"--sizes needs three sizes (small,medium,large), not {options.sizes!r}")
        self.stream_size = parse_sizes(options.stream_size)[0] if options.stream_size else self.sizes[0]
        self.stream_frames = options.stream_frames
        self.stream_window = options.stream_window
        self.sequence = itertools.count()
        started = time.perf_counter()
        try:
            targets = [url.strip() for url in options.targets.split(",") if url.strip()] or (
                [self.host] if self.host else [])
            if not targets:
                raise ValueError("no --host: give the server's gRPC address, e.g. --host 127.0.0.1:8001")
            self.client = SritmClient(targets, scale=options.scale, timeout_s=options.request_timeout)
        except Exception as error:  # a user that cannot connect is a failed request, not a silent one
            self._report(f"{self.model} connect", started, 0, error)
            raise StopUser() from None

    def on_stop(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            client.close()

    def _report(self, name: str, started: float, length: int, exception: BaseException | None) -> None:
        self.environment.events.request.fire(
            request_type="grpc",
            name=name,
            response_time=(time.perf_counter() - started) * 1e3,
            response_length=length,
            exception=exception,
            context={},
        )


class SingleFrameUser(_SritmUser):
    """One frame per request (``SritmClient.convert``), at the small, medium and large sizes in turn."""

    def _convert(self, index: int) -> None:
        size = self.sizes[index]
        frames = _frames(size)
        frame = frames[next(self.sequence) % len(frames)]
        started = time.perf_counter()
        try:
            hdr = self.client.convert(frame)
        except Exception as error:
            self._report(f"{self.model} {size_label(size)}", started, 0, error)
        else:
            self._report(f"{self.model} {size_label(size)}", started, hdr.i420.nbytes, None)

    @tag("single", "small")
    @task
    def small(self) -> None:
        """Convert one frame of the small size (the first of ``--sizes``)."""
        self._convert(0)

    @tag("single", "medium")
    @task
    def medium(self) -> None:
        """Convert one frame of the medium size (the second of ``--sizes``)."""
        self._convert(1)

    @tag("single", "large")
    @task
    def large(self) -> None:
        """Convert one frame of the large size (the third of ``--sizes``)."""
        self._convert(2)


class StreamingUser(_SritmUser):
    """Sessions of ``--stream-frames`` frames through ``SritmClient.stream`` (one gRPC bidirectional stream each)."""

    @tag("stream")
    @task
    def session(self) -> None:
        """One session: each frame is reported from its send to its in-order delivery, then the session as a whole.

        The session fails where the stream raised or did not deliver all ``--stream-frames`` frames.
        """
        size, count, window = self.stream_size, self.stream_frames, self.stream_window
        base = _frames(size)
        frames = [SdrFrame(base[index % len(base)].i420, pts) for index, pts in enumerate(range(count))]
        label = f"{self.model} {size_label(size)}"
        sent: dict[int, float] = {}

        def source() -> Any:
            for frame in frames:
                sent[frame.pts] = time.perf_counter()  # the SDK pulls a frame right before it sends it
                yield frame

        started = time.perf_counter()
        delivered = 0
        error: BaseException | None = None
        try:
            for hdr in self.client.stream(source(), window=window):
                self._report(f"{label} stream frame", sent[hdr.pts], hdr.i420.nbytes, None)
                delivered += 1
        except Exception as caught:
            error = caught
        if error is None and delivered != count:
            error = RuntimeError(f"the stream delivered {delivered} of {count} frames")
        self._report(f"{label} stream session ({count} frames, window {window})", started, delivered, error)
