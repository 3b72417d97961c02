"""What the synchronous and the asyncio clients share, none of which does I/O itself.

The options and retry decisions, the error mapping, the request tensors and the
result frames, the contract check, and the bookkeeping of a stream's window.
:mod:`sritm_client.client` and :mod:`sritm_client.aio` make the calls.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from sritm_client.errors import (
    ContractMismatchError,
    InvalidFrameError,
    ServerError,
    ServerUnavailableError,
    SritmError,
)
from sritm_client.frames import HdrFrame, SdrFrame
from sritm_client.shm import FrameSlot, SlotPool, region_prefix
from sritm_core.contract import (
    CONVENTION_DATATYPE,
    CONVENTION_NAME,
    DEFAULT_CONVENTION,
    INPUT_DATATYPE,
    INPUT_NAME,
    NETWORK_PEAK_NITS,
    OUTPUT_DATATYPE,
    OUTPUT_NAME,
    PEAK_NITS_DATATYPE,
    PEAK_NITS_NAME,
    FrameLayoutError,
    Rendering,
    ensemble_name,
    i420_frame_size,
)

DEFAULT_URL = "127.0.0.1:8001"
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_READY_TIMEOUT_S = 30.0

# Triton's own limit (INT32_MAX). gRPC's default of 4 MB is below one 1080p
# 10-bit frame; the largest frame the server accepts (1088×1920 at ×4) is ~100 MB.
MAX_MESSAGE_BYTES = 2**31 - 1
# Triton's gRPC server, by default, answers pings more frequent than every
# 5 minutes without data with GOAWAY (too_many_pings). Frames flow far more
# often than that, so keepalive only has to find a silently dead peer.
KEEPALIVE_TIME_MS = 300_000
KEEPALIVE_TIMEOUT_MS = 20_000
# How long a stream waits for an answer before it checks that the server is still serving.
LIVENESS_PROBE_S = 2.0

UNAVAILABLE = "StatusCode.UNAVAILABLE"
INVALID_ARGUMENT = "StatusCode.INVALID_ARGUMENT"
DEADLINE_EXCEEDED = "StatusCode.DEADLINE_EXCEEDED"



@dataclass(frozen=True)
class RetryPolicy:
    """How calls that fail with gRPC ``UNAVAILABLE`` are retried; nothing else is retried.

    Backoff doubles from ``initial_backoff_s`` up to ``max_backoff_s``; a call
    gives up after ``attempts`` tries or once ``deadline_s`` has passed since
    its first try, whichever comes first, with :class:`ServerUnavailableError`.
    """

    attempts: int = 5
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    deadline_s: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts must be at least 1, not {self.attempts}")
        if not 0 < self.initial_backoff_s <= self.max_backoff_s:
            raise ValueError("RetryPolicy needs 0 < initial_backoff_s <= max_backoff_s")
        if self.deadline_s <= 0:
            raise ValueError(f"RetryPolicy.deadline_s must be positive, not {self.deadline_s}")

    def backoff_s(self, retry: int) -> float:
        """The pause before retry number ``retry`` (1, 2, …)."""
        ceiling = min(self.max_backoff_s, self.initial_backoff_s * 2.0 ** (retry - 1))
        # Half fixed, half random: clients that lost the same server do not all return at once.
        return ceiling / 2 + random.uniform(0, ceiling / 2)


@dataclass(frozen=True)
class TlsOptions:
    """PEM files for gRPC over TLS; ``None`` for the system roots or no client certificate."""

    root_certificates: str | Path | None = None
    private_key: str | Path | None = None
    certificate_chain: str | Path | None = None


# --------------------------------------------------------------------------
# Shared with aio.py: no I/O below until SritmClient.


def channel_arguments(retry: RetryPolicy) -> list[tuple[str, Any]]:
    """The gRPC channel options: Triton's message size limit, keepalive, and reconnect backoff within ``retry``."""
    return [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.max_pings_without_data", 0),
        # gRPC's own reconnect backoff grows to 120 s by default, far beyond
        # the retry policy: a restarted server would stay unreachable to us.
        ("grpc.initial_reconnect_backoff_ms", max(1, int(retry.initial_backoff_s * 1000))),
        ("grpc.min_reconnect_backoff_ms", max(1, int(retry.initial_backoff_s * 1000))),
        ("grpc.max_reconnect_backoff_ms", max(1, int(retry.max_backoff_s * 1000))),
    ]


def connection_arguments(url: str, tls: TlsOptions | None, retry: RetryPolicy) -> dict[str, Any]:
    """The keyword arguments of tritonclient's gRPC ``InferenceServerClient``; over TLS when ``tls`` is given."""
    arguments: dict[str, Any] = {"url": url, "channel_args": channel_arguments(retry)}
    if tls is not None:
        arguments.update(
            ssl=True,
            root_certificates=None if tls.root_certificates is None else str(tls.root_certificates),
            private_key=None if tls.private_key is None else str(tls.private_key),
            certificate_chain=None if tls.certificate_chain is None else str(tls.certificate_chain),
        )
    return arguments


def error_status(error: InferenceServerException) -> str | None:
    """The error's gRPC status as text (``StatusCode.UNAVAILABLE``); ``None`` when it carries none."""
    status = error.status()
    return None if status is None else str(status)


def error_message(error: InferenceServerException) -> str:
    """The server's message in the error, or the error's own text when it has none."""
    return str(error.message() or error)


DEAD_STUB_REMEDY = (
    "a Python-backend stub process of the server died; Triton does not restart it and still reports the "
    "model ready, so the server must be restarted"
)


def is_dead_stub(error: InferenceServerException) -> bool:
    """Whether the error says that the Python-backend stub process of a model instance died.

    Triton's Python backend answers every request to an instance whose stub process died with
    ``INTERNAL: Stub process '<instance>' is not healthy.`` (no status at all inside a stream).
    Retried like UNAVAILABLE, since another instance of the model may be alive or
    the server be restarting; reported as unavailability once the retries are spent.
    """
    message = error_message(error)
    return "Stub process" in message and "is not healthy" in message


def described(error: InferenceServerException) -> str:
    """The server's message, with the remedy when it means a dead stub."""
    message = error_message(error)
    return f"{message} ({DEAD_STUB_REMEDY})" if is_dead_stub(error) else message


def is_retryable(error: InferenceServerException) -> bool:
    """Whether a call that failed with ``error`` is tried again: ``UNAVAILABLE`` or a dead stub."""
    return error_status(error) == UNAVAILABLE or is_dead_stub(error)


def translated(error: InferenceServerException, url: str, pts: int | None = None) -> SritmError:
    """The SDK's exception for a server error that is not (or no longer) retried."""
    status, message = error_status(error), error_message(error)
    if status == INVALID_ARGUMENT:
        where = "" if pts is None else f" (pts {pts})"
        return InvalidFrameError(f"the server rejected the frame{where}: {message}", server_message=message, pts=pts)
    if status == UNAVAILABLE or is_dead_stub(error):
        return ServerUnavailableError(f"{url} is unavailable: {described(error)}")
    if status == DEADLINE_EXCEEDED:
        return ServerUnavailableError(f"{url} did not answer within the call's deadline: {message}")
    return ServerError(f"{url}: {status or 'error'}: {message}", status=status)


def is_stale_registration(error: InferenceServerException) -> bool:
    """The server does not know one of our regions: it restarted, so we re-register, not fail the frame."""
    return region_prefix() in error_message(error) and error_status(error) != UNAVAILABLE


def check_contract(metadata: Any, model: str) -> None:
    """``metadata`` is the ensemble's ModelMetadataResponse; raises unless it is the contract's."""
    expected = (
        [(INPUT_NAME, INPUT_DATATYPE, [-1, -1]), (CONVENTION_NAME, CONVENTION_DATATYPE, [1]),
         (PEAK_NITS_NAME, PEAK_NITS_DATATYPE, [1])],
        [(OUTPUT_NAME, OUTPUT_DATATYPE, [-1, -1])],
    )
    served = (
        [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs],
        [(t.name, t.datatype, list(t.shape)) for t in metadata.outputs],
    )
    if served != expected:
        raise ContractMismatchError(
            f"{model} serves inputs {served[0]} and outputs {served[1]}; "
            f"the SDK needs inputs {expected[0]} and outputs {expected[1]}"
        )


def checked_frame(frame: object) -> SdrFrame:
    """Re-checks the layout: a frame's array can have been reshaped in place since construction."""
    if not isinstance(frame, SdrFrame):
        raise TypeError(f"expected an SdrFrame, not {type(frame).__name__} (see SdrFrame.from_i420 / from_rgb8)")
    if frame.i420.dtype != np.uint8:
        raise InvalidFrameError(f"the SdrFrame's buffer is {frame.i420.dtype}, not uint8", pts=frame.pts)
    try:
        i420_frame_size(frame.i420.shape)
    except FrameLayoutError as error:
        raise InvalidFrameError(f"invalid SdrFrame (pts {frame.pts}): {error}", pts=frame.pts) from None
    return frame


def output_shape(frame: SdrFrame, scale: int) -> tuple[int, int]:
    """The shape of the ``OUTPUT`` tensor for ``frame``: its I420 buffer's shape times ``scale``."""
    return scale * frame.i420.shape[0], scale * frame.i420.shape[1]


def output_bytes(frame: SdrFrame, scale: int) -> int:
    """The size in bytes of the uint16 ``OUTPUT`` tensor for ``frame`` at ``scale``."""
    rows, width = output_shape(frame, scale)
    return rows * width * np.dtype(np.uint16).itemsize


def request_tensors(
    frame: SdrFrame, scale: int, slot: FrameSlot | None, rendering: Rendering = Rendering()
) -> tuple[list[Any], list[Any]]:
    """The request's inputs and requested output, the frame by value or through the slot's regions.

    ``CONVENTION`` and ``PEAK_NITS`` are sent only when they differ from the
    server's defaults, so a default request is the plain one-input request.
    """
    tensor = grpcclient.InferInput(INPUT_NAME, list(frame.i420.shape), INPUT_DATATYPE)
    output = grpcclient.InferRequestedOutput(OUTPUT_NAME)
    if slot is None:
        tensor.set_data_from_numpy(frame.i420)
    else:
        slot.input.write(frame.i420)
        tensor.set_shared_memory(slot.input.name, frame.i420.nbytes)
        output.set_shared_memory(slot.output.name, output_bytes(frame, scale))
    inputs = [tensor]
    if rendering.convention != DEFAULT_CONVENTION:
        convention = grpcclient.InferInput(CONVENTION_NAME, [1], CONVENTION_DATATYPE)
        convention.set_data_from_numpy(np.array([rendering.convention.encode()], dtype=np.object_))
        inputs.append(convention)
    if rendering.peak_nits != NETWORK_PEAK_NITS:
        peak = grpcclient.InferInput(PEAK_NITS_NAME, [1], PEAK_NITS_DATATYPE)
        peak.set_data_from_numpy(np.array([rendering.peak_nits], dtype=np.float32))
        inputs.append(peak)
    return inputs, [output]


def result_frame(result: Any, frame: SdrFrame, scale: int, slot: FrameSlot | None) -> HdrFrame:
    """The HdrFrame of an inference result, checked against the contract (a wrong answer is not a frame)."""
    expected = output_shape(frame, scale)
    output = result.get_output(OUTPUT_NAME)
    if output is None:
        raise ContractMismatchError(f"the server's answer has no {OUTPUT_NAME} output")
    shape, datatype = tuple(int(n) for n in output.shape), str(output.datatype)
    if shape != expected or datatype != OUTPUT_DATATYPE:
        raise ContractMismatchError(
            f"the server answered a {frame.height}×{frame.width} frame with {OUTPUT_NAME} {datatype} {list(shape)}, "
            f"not {OUTPUT_DATATYPE} {list(expected)}"
        )
    if slot is None:
        array = result.as_numpy(OUTPUT_NAME)
    else:
        array = slot.output.read(np.uint16, expected)
    return HdrFrame(np.asarray(array, dtype=np.uint16).reshape(expected), frame.pts)


class StreamBook:
    """The bookkeeping of one stream, without I/O: request ids, frames in flight, results waiting their turn.

    A frame's identity is its sequence number, sent as the request id (with a
    per-stream token, so answers from an earlier stream can never match);
    arrival order means nothing. ``window`` bounds the frames sent but not yet
    handed to the caller, which also bounds the results held for reordering.

    The server's in-stream error responses carry neither the request id nor the
    gRPC status (tritonclient keeps only the message). So on such an error the
    stream stops sending, waits until every other frame in flight is answered,
    and the unanswered frames are the failed ones; each is then asked once
    more with a unary call, whose status says what went wrong.
    """

    def __init__(self, window: int) -> None:
        self.window = window
        self.token = uuid.uuid4().hex[:12]
        self.sent = 0
        self.yielded = 0
        self.unanswered: dict[int, SdrFrame] = {}
        self.slots: dict[int, FrameSlot] = {}
        self.answered: dict[int, HdrFrame | SritmError] = {}
        self.unattributed_errors = 0
        self.failed = False

    def has_room(self) -> bool:
        """Whether another frame may be sent: the window has room and no frame has failed or is failing."""
        return not self.failed and not self.unattributed_errors and self.sent - self.yielded < self.window

    def admit(self, frame: SdrFrame) -> int:
        """Records ``frame`` as sent and not yet answered; returns its sequence number."""
        sequence = self.sent
        self.sent += 1
        self.unanswered[sequence] = frame
        return sequence

    def request_id(self, sequence: int) -> str:
        """The request id sent with frame ``sequence``: ``<stream token>:<sequence>``."""
        return f"{self.token}:{sequence}"

    def sequence_of(self, request_id: str) -> int | None:
        """The unanswered frame a request id names; ``None`` for another stream's id or a frame already answered."""
        token, _, number = request_id.partition(":")
        if token != self.token or not number.isdigit():
            return None
        sequence = int(number)
        return sequence if sequence in self.unanswered else None

    def answer(self, sequence: int, item: HdrFrame | SritmError) -> None:
        """Files frame ``sequence``'s result or error for its turn; an error marks the stream failed."""
        del self.unanswered[sequence]
        self.answered[sequence] = item
        if isinstance(item, SritmError):
            self.failed = True

    def ready(self) -> Iterator[HdrFrame]:
        """The results whose turn has come, in input order; raises at the first failed frame."""
        while self.yielded in self.answered:
            item = self.answered.pop(self.yielded)
            self.yielded += 1
            if isinstance(item, SritmError):
                raise item
            yield item

    def finished(self, source_exhausted: bool) -> bool:
        """Whether the stream is done: the source has no frame left and every frame sent has been yielded."""
        return source_exhausted and self.yielded == self.sent

    def failures_identified(self) -> bool:
        """Whether the in-stream errors can be attributed: every frame still unanswered is one that failed."""
        return bool(self.unattributed_errors) and len(self.unanswered) == self.unattributed_errors

    def answer_result(self, result: Any, scale: int, slots: SlotPool | None) -> None:
        """Files an in-stream inference result under its frame; an answer to a frame already answered is dropped."""
        sequence = self.sequence_of(str(result.get_response().id))
        if sequence is None:
            return  # an answer to a frame re-sent after a reconnect, already answered
        try:
            self.answer(sequence, result_frame(result, self.unanswered[sequence], scale, self.slots.get(sequence)))
        finally:
            self.release_slot(sequence, slots)

    def release_slot(self, sequence: int, slots: SlotPool | None) -> None:
        """Gives frame ``sequence``'s shared-memory slot, if it has one, back to ``slots``."""
        slot = self.slots.pop(sequence, None)
        if slot is not None and slots is not None:
            slots.release(slot)

    def take_failures(self, slots: SlotPool | None) -> list[tuple[int, SdrFrame]]:
        """The frames to ask again one at a time (by value), their slots released."""
        self.unattributed_errors = 0
        failures = sorted(self.unanswered.items())
        for sequence, _ in failures:
            self.release_slot(sequence, slots)
        return failures

    def answer_rerun(self, sequence: int, item: HdrFrame | SritmError) -> bool:
        """Records a re-asked frame's result; False once one has failed, as nothing after it is yielded."""
        self.answer(sequence, item)
        if self.failed:
            self.unanswered.clear()
        return not self.failed

    def forget_errors(self) -> None:
        """After a reconnect every unanswered frame is re-sent, and a bad one fails again."""
        self.unattributed_errors = 0


# --------------------------------------------------------------------------


class ClientOptions:
    """The options of :class:`SritmClient` and :class:`AsyncSritmClient`, and the decisions they take without I/O.

    Args:
        url: the server's gRPC address, ``host:port``, or a list of replicas' addresses.
        scale: 2 or 4; the client calls the ensemble ``sritm_x{scale}``.
        timeout_s: the deadline of each call (and of each answer in a stream).
        ready_timeout_s: how long connecting waits for the server and the ensemble to be ready.
        use_shared_memory: pass frames through POSIX shared memory (the server must run on the same host).
        tls: PEM files for gRPC over TLS; ``None`` for plaintext.
        retry: how calls failing with ``UNAVAILABLE`` are retried.
    """

    def __init__(
        self,
        url: str | Sequence[str] = DEFAULT_URL,
        scale: int = 4,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S,
        use_shared_memory: bool = False,
        tls: TlsOptions | None = None,
        retry: RetryPolicy = RetryPolicy(),
    ) -> None:
        self.urls = [url] if isinstance(url, str) else list(url)
        if not self.urls:
            raise ValueError("give at least one server URL")
        self.url = ",".join(self.urls)
        self.scale = scale
        self.model = ensemble_name(scale)
        self.timeout_s = timeout_s
        self.ready_timeout_s = ready_timeout_s
        self.use_shared_memory = use_shared_memory
        self.tls = tls
        self.retry = retry
        self._slots = SlotPool(1) if use_shared_memory else None
        self._registrations_stale = False

    def replica_options(self) -> dict[str, Any]:
        """The keyword options a single-URL client for one of :attr:`urls` is made with (the same as this one's)."""
        return {"timeout_s": self.timeout_s, "ready_timeout_s": self.ready_timeout_s,
                "use_shared_memory": self.use_shared_memory, "tls": self.tls, "retry": self.retry}

    def _recoverable(self, error: InferenceServerException) -> bool:
        """Retried without asking the server first: UNAVAILABLE, a dead stub, or a region the server forgot."""
        return (self.use_shared_memory and is_stale_registration(error)) or is_retryable(error)

    def _pause_before_retry(
        self, error: InferenceServerException, recoverable: bool, attempt: int, started: float, pts: int | None
    ) -> float:
        """The pause before trying a failed call again; raises the SDK's error when it is not to be tried again."""
        if not recoverable:
            raise translated(error, self.url, pts) from None
        # A server that went away forgot our regions; register them again before the next try.
        self._registrations_stale = self.use_shared_memory
        elapsed = time.monotonic() - started
        pause = self.retry.backoff_s(attempt)
        if attempt >= self.retry.attempts or elapsed + pause > self.retry.deadline_s:
            raise ServerUnavailableError(
                f"{self.url} is unavailable after {attempt} attempts in {elapsed:.1f} s: {described(error)}"
            ) from None
        return pause

    def _retry_time_left(self, started: float) -> float:
        """How long a retry that began at ``started`` may still wait for the server to be ready."""
        return max(0.1, self.retry.deadline_s - (time.monotonic() - started))


class ReadinessWait:
    """One wait for the server and the ensemble to be ready, without I/O: the clients make the calls."""

    def __init__(self, options: ClientOptions, deadline_s: float) -> None:
        self._options = options
        self._deadline_s = deadline_s
        self._started = time.monotonic()
        self.last = "no answer"

    def probe_timeout(self) -> float:
        """The timeout of the next readiness call; raises :class:`ServerUnavailableError` once the wait is over."""
        remaining = self._deadline_s - (time.monotonic() - self._started)
        if remaining <= 0:
            options = self._options
            raise ServerUnavailableError(
                f"{options.url}: {options.model} not ready within {self._deadline_s:.3g} s ({self.last})"
            )
        return min(remaining, 2.0)

    def failed(self, error: InferenceServerException) -> None:
        """A readiness call failed: keep waiting while the server is unreachable, raise on any other answer."""
        if error_status(error) not in (UNAVAILABLE, DEADLINE_EXCEEDED):
            raise translated(error, self._options.url) from None
        self.last = error_message(error)

    def pause(self, attempt: int) -> float:
        """The pause after readiness probe number ``attempt``: the retry backoff, cut to the time the wait has left."""
        elapsed = time.monotonic() - self._started
        return max(0.0, min(self._options.retry.backoff_s(attempt), self._deadline_s - elapsed))


class Reconnection:
    """The retry budget of re-opening one broken stream, without I/O."""

    def __init__(self, options: ClientOptions, cause: str) -> None:
        self._options = options
        self._started = time.monotonic()
        self._message = cause

    def pause(self, attempt: int) -> float:
        """The pause before attempt number ``attempt``.

        Raises:
            ServerUnavailableError: the retry policy's attempts or deadline are spent.
        """
        retry = self._options.retry
        elapsed = time.monotonic() - self._started
        pause = retry.backoff_s(attempt)
        if attempt > retry.attempts or elapsed + pause > retry.deadline_s:
            raise ServerUnavailableError(
                f"{self._options.url}: the stream broke and could not be re-opened "
                f"({attempt - 1} attempts in {elapsed:.1f} s): {self._message}"
            )
        return pause

    def time_left(self) -> float:
        """How long the next attempt may wait for the server to be ready: what the retry deadline has left."""
        return self._options._retry_time_left(self._started)

    def failed(self, error: Exception) -> None:
        """An attempt failed: remember why for the final message, or raise when the server gave a real answer."""
        if isinstance(error, InferenceServerException):
            if not is_retryable(error):
                raise translated(error, self._options.url) from None
            self._message = error_message(error)
        else:
            self._message = str(error)


class StreamBroken(Exception):
    """The stream has to be re-opened (and its unanswered frames sent again); the message says why."""
