"""The synchronous client: ``SritmClient.convert`` for one frame, ``SritmClient.stream`` for video.

Also the pieces the asyncio client shares (options, error mapping, request and
result handling, stream bookkeeping), which do no I/O themselves.
"""

from __future__ import annotations

import itertools
import queue
import random
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from gpgmnet.contract import (
    CONVENTION_DATATYPE,
    CONVENTION_NAME,
    DEFAULT_CONVENTION,
    INPUT_DATATYPE,
    INPUT_NAME,
    NETWORK_PEAK_NITS,
    PEAK_NITS_DATATYPE,
    PEAK_NITS_NAME,
    Rendering,
    OUTPUT_DATATYPE,
    OUTPUT_NAME,
    FrameLayoutError,
    ensemble_name,
    i420_frame_size,
)

from sritm_client.errors import (
    ContractMismatchError,
    InvalidFrameError,
    ServerError,
    ServerUnavailableError,
    SritmError,
)
from sritm_client.frames import HdrFrame, SdrFrame
from sritm_client.shm import FrameSlot, Region, SlotPool, region_prefix

__all__ = ["DEFAULT_URL", "RetryPolicy", "TlsOptions", "SritmClient"]

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
_LIVENESS_PROBE_S = 2.0

_UNAVAILABLE = "StatusCode.UNAVAILABLE"
_INVALID_ARGUMENT = "StatusCode.INVALID_ARGUMENT"
_DEADLINE_EXCEEDED = "StatusCode.DEADLINE_EXCEEDED"

T = TypeVar("T")
_END: Any = object()


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


def _channel_arguments(retry: RetryPolicy) -> list[tuple[str, Any]]:
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


def _connection_arguments(url: str, tls: TlsOptions | None, retry: RetryPolicy) -> dict[str, Any]:
    arguments: dict[str, Any] = {"url": url, "channel_args": _channel_arguments(retry)}
    if tls is not None:
        arguments.update(
            ssl=True,
            root_certificates=None if tls.root_certificates is None else str(tls.root_certificates),
            private_key=None if tls.private_key is None else str(tls.private_key),
            certificate_chain=None if tls.certificate_chain is None else str(tls.certificate_chain),
        )
    return arguments


def _status(error: InferenceServerException) -> str | None:
    status = error.status()
    return None if status is None else str(status)


def _message(error: InferenceServerException) -> str:
    return str(error.message() or error)


_DEAD_STUB_REMEDY = (
    "a Python-backend stub process of the server died; Triton does not restart it and still reports the "
    "model ready, so the server must be restarted"
)


def _is_dead_stub(error: InferenceServerException) -> bool:
    """Triton's Python backend answers every request to an instance whose stub process died with
    ``INTERNAL: Stub process '<instance>' is not healthy.`` (no status at all inside a stream).

    Retried like UNAVAILABLE, since another instance of the model may be alive or
    the server be restarting; reported as unavailability once the retries are spent.
    """
    message = _message(error)
    return "Stub process" in message and "is not healthy" in message


def _described(error: InferenceServerException) -> str:
    """The server's message, with the remedy when it means a dead stub."""
    message = _message(error)
    return f"{message} ({_DEAD_STUB_REMEDY})" if _is_dead_stub(error) else message


def _is_retryable(error: InferenceServerException) -> bool:
    return _status(error) == _UNAVAILABLE or _is_dead_stub(error)


def _translated(error: InferenceServerException, url: str, pts: int | None = None) -> SritmError:
    """The SDK's exception for a server error that is not (or no longer) retried."""
    status, message = _status(error), _message(error)
    if status == _INVALID_ARGUMENT:
        where = "" if pts is None else f" (pts {pts})"
        return InvalidFrameError(f"the server rejected the frame{where}: {message}", server_message=message, pts=pts)
    if status == _UNAVAILABLE or _is_dead_stub(error):
        return ServerUnavailableError(f"{url} is unavailable: {_described(error)}")
    if status == _DEADLINE_EXCEEDED:
        return ServerUnavailableError(f"{url} did not answer within the call's deadline: {message}")
    return ServerError(f"{url}: {status or 'error'}: {message}", status=status)


def _is_stale_registration(error: InferenceServerException) -> bool:
    """The server does not know one of our regions: it restarted, so we re-register, not fail the frame."""
    return region_prefix() in _message(error) and _status(error) != _UNAVAILABLE


def _check_contract(metadata: Any, model: str) -> None:
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


def _checked_frame(frame: object) -> SdrFrame:
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


def _output_shape(frame: SdrFrame, scale: int) -> tuple[int, int]:
    return scale * frame.i420.shape[0], scale * frame.i420.shape[1]


def _output_bytes(frame: SdrFrame, scale: int) -> int:
    rows, width = _output_shape(frame, scale)
    return rows * width * np.dtype(np.uint16).itemsize


def _request_tensors(
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
        output.set_shared_memory(slot.output.name, _output_bytes(frame, scale))
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


def _result_frame(result: Any, frame: SdrFrame, scale: int, slot: FrameSlot | None) -> HdrFrame:
    """The HdrFrame of an inference result, checked against the contract (a wrong answer is not a frame)."""
    expected = _output_shape(frame, scale)
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


class _StreamBook:
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
        return not self.failed and not self.unattributed_errors and self.sent - self.yielded < self.window

    def admit(self, frame: SdrFrame) -> int:
        sequence = self.sent
        self.sent += 1
        self.unanswered[sequence] = frame
        return sequence

    def request_id(self, sequence: int) -> str:
        return f"{self.token}:{sequence}"

    def sequence_of(self, request_id: str) -> int | None:
        token, _, number = request_id.partition(":")
        if token != self.token or not number.isdigit():
            return None
        sequence = int(number)
        return sequence if sequence in self.unanswered else None

    def answer(self, sequence: int, item: HdrFrame | SritmError) -> None:
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
        return source_exhausted and self.yielded == self.sent

    def failures_identified(self) -> bool:
        return bool(self.unattributed_errors) and len(self.unanswered) == self.unattributed_errors

    def answer_result(self, result: Any, scale: int, slots: SlotPool | None) -> None:
        """Files an in-stream inference result under its frame; an answer to a frame already answered is dropped."""
        sequence = self.sequence_of(str(result.get_response().id))
        if sequence is None:
            return  # an answer to a frame re-sent after a reconnect, already answered
        try:
            self.answer(sequence, _result_frame(result, self.unanswered[sequence], scale, self.slots.get(sequence)))
        finally:
            self.release_slot(sequence, slots)

    def release_slot(self, sequence: int, slots: SlotPool | None) -> None:
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


class _ClientOptions:
    """The options of :class:`SritmClient` and :class:`AsyncSritmClient`, and the decisions they take without I/O.

    Args:
        url: the server's gRPC address, ``host:port``.
        scale: 2 or 4; the client calls the ensemble ``sritm_x{scale}``.
        timeout_s: the deadline of each call (and of each answer in a stream).
        ready_timeout_s: how long connecting waits for the server and the ensemble to be ready.
        use_shared_memory: pass frames through POSIX shared memory (the server must run on the same host).
        tls: PEM files for gRPC over TLS; ``None`` for plaintext.
        retry: how calls failing with ``UNAVAILABLE`` are retried.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        scale: int = 4,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S,
        use_shared_memory: bool = False,
        tls: TlsOptions | None = None,
        retry: RetryPolicy = RetryPolicy(),
    ) -> None:
        self.url = url
        self.scale = scale
        self.model = ensemble_name(scale)
        self.timeout_s = timeout_s
        self.ready_timeout_s = ready_timeout_s
        self.use_shared_memory = use_shared_memory
        self.tls = tls
        self.retry = retry
        self._slots = SlotPool(1) if use_shared_memory else None
        self._registrations_stale = False

    def _recoverable(self, error: InferenceServerException) -> bool:
        """Retried without asking the server first: UNAVAILABLE, a dead stub, or a region the server forgot."""
        return (self.use_shared_memory and _is_stale_registration(error)) or _is_retryable(error)

    def _pause_before_retry(
        self, error: InferenceServerException, recoverable: bool, attempt: int, started: float, pts: int | None
    ) -> float:
        """The pause before trying a failed call again; raises the SDK's error when it is not to be tried again."""
        if not recoverable:
            raise _translated(error, self.url, pts) from None
        # A server that went away forgot our regions; register them again before the next try.
        self._registrations_stale = self.use_shared_memory
        elapsed = time.monotonic() - started
        pause = self.retry.backoff_s(attempt)
        if attempt >= self.retry.attempts or elapsed + pause > self.retry.deadline_s:
            raise ServerUnavailableError(
                f"{self.url} is unavailable after {attempt} attempts in {elapsed:.1f} s: {_described(error)}"
            ) from None
        return pause

    def _retry_time_left(self, started: float) -> float:
        """How long a retry that began at ``started`` may still wait for the server to be ready."""
        return max(0.1, self.retry.deadline_s - (time.monotonic() - started))


class _ReadinessWait:
    """One wait for the server and the ensemble to be ready, without I/O: the clients make the calls."""

    def __init__(self, options: _ClientOptions, deadline_s: float) -> None:
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
        if _status(error) not in (_UNAVAILABLE, _DEADLINE_EXCEEDED):
            raise _translated(error, self._options.url) from None
        self.last = _message(error)

    def pause(self, attempt: int) -> float:
        elapsed = time.monotonic() - self._started
        return max(0.0, min(self._options.retry.backoff_s(attempt), self._deadline_s - elapsed))


class _Reconnection:
    """The retry budget of re-opening one broken stream, without I/O."""

    def __init__(self, options: _ClientOptions, cause: str) -> None:
        self._options = options
        self._started = time.monotonic()
        self._message = cause

    def pause(self, attempt: int) -> float:
        """The pause before attempt number ``attempt``; raises :class:`ServerUnavailableError` once the budget is spent."""
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
        return self._options._retry_time_left(self._started)

    def failed(self, error: Exception) -> None:
        """An attempt failed: remember why for the final message, or raise when the server gave a real answer."""
        if isinstance(error, InferenceServerException):
            if not _is_retryable(error):
                raise _translated(error, self._options.url) from None
            self._message = _message(error)
        else:
            self._message = str(error)



class SritmClient(_ClientOptions):
    """Converts SDR frames to HDR10 frames on a Triton server serving ``sritm_x{scale}``.

    Connects on construction: waits up to ``ready_timeout_s`` for the server
    and the ensemble to be ready, then checks the ensemble's tensors against
    ``gpgmnet.contract``. Each call has a deadline of ``timeout_s``.
    ``use_shared_memory`` passes frames through POSIX shared memory (the
    server must run on the same host). Not thread-safe: one client per thread.

    Example::

        with SritmClient("127.0.0.1:8001", scale=4) as client:
            for hdr in client.stream(SdrFrame.from_i420(buf, pts) for pts, buf in decoded):
                encode(hdr.to_numpy())
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        scale: int = 4,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S,
        use_shared_memory: bool = False,
        tls: TlsOptions | None = None,
        retry: RetryPolicy = RetryPolicy(),
    ) -> None:
        super().__init__(
            url,
            scale,
            timeout_s=timeout_s,
            ready_timeout_s=ready_timeout_s,
            use_shared_memory=use_shared_memory,
            tls=tls,
            retry=retry,
        )
        self._client = self._new_triton_client()
        try:
            self._wait_ready(self._client, ready_timeout_s)
            _check_contract(self._client.get_model_metadata(self.model, client_timeout=self.timeout_s), self.model)
        except InferenceServerException as error:
            self._client.close()
            raise _translated(error, url) from None
        except BaseException:
            self._client.close()
            raise

    def __enter__(self) -> SritmClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Unregisters and frees this client's shared memory and closes the connection. Idempotent."""
        if self._slots is not None:
            self._retire(self._client, self._slots.close())
        self._client.close()

    # --- one frame

    def convert(
        self, frame: SdrFrame, *, convention: str = DEFAULT_CONVENTION, peak_nits: float = NETWORK_PEAK_NITS
    ) -> HdrFrame:
        """One frame, one unary call, retried on ``UNAVAILABLE`` per the retry policy.

        Args:
            frame: the SDR frame.
            convention: how the SDR was graded, one of ``gpgmnet.contract.CONVENTIONS``
                (README, "SDR conventions"); ``bt2446a`` by default.
            peak_nits: the target display's peak, 400-4000 cd/m^2 (1000: the network's grade).

        Raises:
            RenderingError: (a ``ValueError``) an unknown convention or a peak out of range, before any call.
        """
        frame = _checked_frame(frame)
        rendering = Rendering(convention, float(peak_nits))
        return self._retrying(lambda: self._infer_once(frame, self._slots, rendering), frame.pts)

    def _convert_by_value(self, frame: SdrFrame, rendering: Rendering = Rendering()) -> HdrFrame:
        """``convert`` without shared memory: a stream's diagnosis leaves no region behind."""
        return self._retrying(lambda: self._infer_once(frame, None, rendering), frame.pts)

    def _infer_once(self, frame: SdrFrame, slots: SlotPool | None, rendering: Rendering = Rendering()) -> HdrFrame:
        slot = None
        if slots is not None:
            slot, retired = slots.acquire(frame.i420.nbytes, _output_bytes(frame, self.scale))
            try:
                self._retire(self._client, retired)
                self._register(self._client, [slot.input, slot.output], again=self._registrations_stale)
                self._registrations_stale = False
            except BaseException:
                slots.release(slot)
                raise
        try:
            inputs, outputs = _request_tensors(frame, self.scale, slot, rendering)
            result = self._client.infer(self.model, inputs, outputs=outputs, client_timeout=self.timeout_s)
            return _result_frame(result, frame, self.scale, slot)
        finally:
            if slot is not None and slots is not None:
                slots.release(slot)

    def _retrying(self, call: Callable[[], T], pts: int | None) -> T:
        started = time.monotonic()
        for attempt in itertools.count(1):
            try:
                return call()
            except InferenceServerException as error:
                recoverable = self._recoverable(error) or self._went_away(self._client, error)
                time.sleep(self._pause_before_retry(error, recoverable, attempt, started, pts))
                # A restarting server takes seconds to load its models: wait for it
                # (within the deadline) rather than spend the attempts meanwhile.
                self._wait_ready(self._client, self._retry_time_left(started))
        raise AssertionError("unreachable")

    # --- video

    def stream(
        self, frames: Iterable[SdrFrame], window: int = 8, *, convention: str = DEFAULT_CONVENTION,
        peak_nits: float = NETWORK_PEAK_NITS,
    ) -> Iterator[HdrFrame]:
        """Converts ``frames`` over one gRPC bidirectional stream, yielding HDR frames in input order.

        Up to ``window`` frames are sent and not yet yielded. If the connection
        drops (``UNAVAILABLE``) the stream is re-opened per the retry policy and
        the frames not yet answered are sent again: each frame is yielded
        exactly once, in order. Close the iterator (or exhaust it) to free
        its connection and shared memory. ``convention`` and ``peak_nits`` apply
        to every frame, as in :meth:`convert`.
        """
        if window < 1:
            raise ValueError(f"window must be at least 1, not {window}")
        return _SyncStream(self, window, Rendering(convention, float(peak_nits))).run(iter(frames))

    # --- connection

    def _new_triton_client(self) -> Any:
        return grpcclient.InferenceServerClient(**_connection_arguments(self.url, self.tls, self.retry))

    def _wait_ready(self, client: Any, deadline_s: float) -> None:
        wait = _ReadinessWait(self, deadline_s)
        for attempt in itertools.count(1):
            probe = wait.probe_timeout()
            try:
                if not client.is_server_ready(client_timeout=probe):
                    wait.last = "the server is not ready"
                elif not client.is_model_ready(self.model, client_timeout=probe):
                    wait.last = f"{self.model} is not ready"
                else:
                    return
            except InferenceServerException as error:
                wait.failed(error)
            time.sleep(wait.pause(attempt))

    def _went_away(self, client: Any, error: InferenceServerException) -> bool:
        """Whether a failure other than UNAVAILABLE came from a server that stopped serving.

        A server shutting down answers NOT_FOUND (its models are unloaded) or
        INTERNAL before it stops listening; that is unavailability, not an answer.
        """
        return _status(error) != _INVALID_ARGUMENT and not self._is_serving(client)

    def _is_serving(self, client: Any) -> bool:
        probe = min(self.timeout_s, _LIVENESS_PROBE_S)
        try:
            return bool(
                client.is_server_ready(client_timeout=probe) and client.is_model_ready(self.model, client_timeout=probe)
            )
        except InferenceServerException:
            return False

    def _register(self, client: Any, regions: Iterable[Region], *, again: bool = False) -> None:
        """Register the regions the server does not know yet; ``again``: all of them, anew."""
        for region in regions:
            if region.registered and not again:
                continue
            if region.registered:
                try:
                    client.unregister_system_shared_memory(region.name, client_timeout=self.timeout_s)
                except InferenceServerException:
                    pass
            client.register_system_shared_memory(region.name, region.key, region.byte_size, client_timeout=self.timeout_s)
            region.registered = True

    def _retire(self, client: Any, regions: Iterable[Region]) -> None:
        """Unregister (best effort: the server may be gone) and always unlink."""
        for region in regions:
            try:
                if region.registered:
                    client.unregister_system_shared_memory(region.name, client_timeout=self.timeout_s)
            except InferenceServerException:
                pass
            finally:
                region.registered = False
                region.destroy()


class _StreamBroken(Exception):
    """The stream has to be re-opened (and its unanswered frames sent again); the message says why."""


class _SyncStream:
    """One ``SritmClient.stream`` call: its own gRPC stream, shared-memory slots and bookkeeping."""

    def __init__(self, owner: SritmClient, window: int, rendering: Rendering = Rendering()) -> None:
        self._owner = owner
        self._rendering = rendering
        self._book = _StreamBook(window)
        self._slots = SlotPool(window) if owner.use_shared_memory else None
        # Answers arrive on tritonclient's reader thread; the generation tells
        # this stream's answers from those of a stream it has replaced.
        self._events: queue.Queue[tuple[int, Any, InferenceServerException | None]] = queue.Queue()
        self._generation = 0
        self._client: Any = None

    def run(self, frames: Iterator[SdrFrame]) -> Iterator[HdrFrame]:
        owner, book = self._owner, self._book
        try:
            self._client = owner._new_triton_client()
            self._open()
            exhausted = False
            while True:
                yield from book.ready()
                while not exhausted and book.has_room():
                    frame = next(frames, _END)
                    if frame is _END:
                        exhausted = True
                    else:
                        try:
                            self._send(book.admit(_checked_frame(frame)))
                        except _StreamBroken as broken:
                            self._reconnect(str(broken))
                if book.finished(exhausted):
                    return
                if book.failures_identified():
                    self._rerun_failures()
                    continue
                if book.unanswered:
                    event = self._next_event()
                    if event is None:
                        self._reconnect("the server stopped serving")
                    else:
                        self._handle(event)
        finally:
            self._close()

    def _open(self) -> None:
        generation = self._generation

        def on_answer(result: Any, error: InferenceServerException | None) -> None:
            self._events.put((generation, result, error))

        self._client.start_stream(callback=on_answer)

    def _send(self, sequence: int) -> None:
        owner, book = self._owner, self._book
        frame = book.unanswered[sequence]
        slot = None
        if self._slots is not None:
            slot = book.slots.get(sequence)
            if slot is None:
                slot, retired = self._slots.acquire(frame.i420.nbytes, _output_bytes(frame, owner.scale))
                book.slots[sequence] = slot
                try:
                    owner._retire(self._client, retired)
                    owner._register(self._client, [slot.input, slot.output])
                except InferenceServerException as error:
                    if _is_retryable(error) or owner._went_away(self._client, error):
                        raise _StreamBroken(_message(error)) from None
                    raise _translated(error, owner.url) from None
        inputs, outputs = _request_tensors(frame, owner.scale, slot, self._rendering)
        try:
            self._client.async_stream_infer(owner.model, inputs, outputs=outputs, request_id=book.request_id(sequence))
        except InferenceServerException:
            # The stream has broken; its reader thread reports why, and the
            # reconnect that follows sends this frame again.
            pass

    def _next_event(self) -> tuple[Any, InferenceServerException | None] | None:
        """The next answer of the current stream; None if the server went away without a word."""
        owner = self._owner
        deadline = time.monotonic() + owner.timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ServerUnavailableError(
                    f"{owner.url} answered none of {len(self._book.unanswered)} frames in flight "
                    f"within {owner.timeout_s:g} s"
                )
            try:
                generation, result, error = self._events.get(timeout=min(remaining, _LIVENESS_PROBE_S))
            except queue.Empty:
                # tritonclient reports a stream the server closed cleanly (a
                # graceful shutdown) to nobody, so look at the server instead.
                if not owner._is_serving(self._client):
                    return None
                continue
            if generation == self._generation:
                return result, error

    def _handle(self, event: tuple[Any, InferenceServerException | None]) -> None:
        owner, book = self._owner, self._book
        result, error = event
        if error is None:
            book.answer_result(result, owner.scale, self._slots)
        elif _status(error) is None:
            book.unattributed_errors += 1
        elif _is_retryable(error) or owner._went_away(self._client, error):
            self._reconnect(_described(error))
        else:
            raise _translated(error, owner.url)

    def _rerun_failures(self) -> None:
        owner, book = self._owner, self._book
        for sequence, frame in book.take_failures(self._slots):
            try:
                item: HdrFrame | SritmError = owner._convert_by_value(frame, self._rendering)
            except SritmError as error:
                item = error
            if not book.answer_rerun(sequence, item):
                break

    def _reconnect(self, cause: str) -> None:
        """Re-open the stream and send every unanswered frame again, in order, per the retry policy."""
        owner, book = self._owner, self._book
        reconnection = _Reconnection(owner, cause)
        for attempt in itertools.count(1):
            time.sleep(reconnection.pause(attempt))
            self._client.stop_stream(cancel_requests=True)
            self._generation += 1
            try:
                owner._wait_ready(self._client, reconnection.time_left())
                if self._slots is not None:
                    owner._register(self._client, self._slots.regions(), again=True)
                self._open()
                book.forget_errors()
                for sequence in sorted(book.unanswered):
                    self._send(sequence)
            except (ServerUnavailableError, _StreamBroken, InferenceServerException) as error:
                reconnection.failed(error)
                continue
            return

    def _close(self) -> None:
        if self._client is None:
            return
        try:
            self._client.stop_stream(cancel_requests=True)
        finally:
            try:
                if self._slots is not None:
                    self._owner._retire(self._client, self._slots.close())
            finally:
                self._client.close()
