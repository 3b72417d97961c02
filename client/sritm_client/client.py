"""The synchronous client: ``SritmClient.convert`` for one frame, ``SritmClient.stream`` for video.

What it shares with the asyncio client, none of which does I/O, is in :mod:`sritm_client.core`.
"""

from __future__ import annotations

import itertools
import queue
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any, TypeVar

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from sritm_client.core import (
    DEFAULT_READY_TIMEOUT_S,
    DEFAULT_TIMEOUT_S,
    DEFAULT_URL,
    INVALID_ARGUMENT,
    LIVENESS_PROBE_S,
    ClientOptions,
    ReadinessWait,
    Reconnection,
    RetryPolicy,
    StreamBook,
    StreamBroken,
    TlsOptions,
    check_contract,
    checked_frame,
    connection_arguments,
    described,
    error_message,
    error_status,
    is_retryable,
    output_bytes,
    request_tensors,
    result_frame,
    translated,
)
from sritm_client.errors import (
    ServerUnavailableError,
    SritmError,
)
from sritm_client.frames import HdrFrame, SdrFrame
from sritm_client.replicas import spread_stream
from sritm_client.shm import Region, SlotPool
from sritm_core.contract import (
    DEFAULT_CONVENTION,
    NETWORK_PEAK_NITS,
    Rendering,
)

__all__ = ["DEFAULT_TIMEOUT_S", "DEFAULT_URL", "RetryPolicy", "TlsOptions", "SritmClient"]

T = TypeVar("T")
_END: Any = object()


class SritmClient(ClientOptions):
    """Converts SDR frames to HDR10 frames on a Triton server serving ``sritm_x{scale}``.

    Connects on construction: waits up to ``ready_timeout_s`` for the server
    and the ensemble to be ready, then checks the ensemble's tensors against
    ``sritm_core.contract``. Each call has a deadline of ``timeout_s``.
    ``use_shared_memory`` passes frames through POSIX shared memory (the
    server must run on the same host). Not thread-safe: one client per thread.

    ``url`` may be a list of replicas' addresses: the replicas reachable at
    construction are used, ``convert`` goes to them in turn and ``stream``
    spreads over them, moving a failed replica's frames to the others.

    Example::

        with SritmClient("127.0.0.1:8001", scale=4) as client:
            for hdr in client.stream(SdrFrame.from_i420(buf, pts) for pts, buf in decoded):
                encode(hdr.to_numpy())
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
        super().__init__(
            url,
            scale,
            timeout_s=timeout_s,
            ready_timeout_s=ready_timeout_s,
            use_shared_memory=use_shared_memory,
            tls=tls,
            retry=retry,
        )
        self._replicas: list[SritmClient] = []
        if len(self.urls) > 1:
            # Several replicas: one single-URL client each; a stream spreads over them (sritm_client.replicas).
            self._replicas = self._connect_replicas()
            return
        self._client = self._new_triton_client()
        try:
            self._wait_ready(self._client, ready_timeout_s)
            check_contract(self._client.get_model_metadata(self.model, client_timeout=self.timeout_s), self.model)
        except InferenceServerException as error:
            self._client.close()
            raise translated(error, self.url) from None
        except BaseException:
            self._client.close()
            raise

    def __enter__(self) -> SritmClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def _connect_replicas(self) -> list[SritmClient]:
        """A client per URL; replicas that cannot be reached now are left out, unless all of them are."""
        connected, failures = [], []
        for url in self.urls:
            try:
                connected.append(SritmClient(url, self.scale, **self.replica_options()))
            except ServerUnavailableError as error:
                failures.append(str(error))
        if not connected:
            raise ServerUnavailableError(f"none of {len(self.urls)} replicas is reachable: {'; '.join(failures)}")
        return connected

    def close(self) -> None:
        """Unregisters and frees this client's shared memory and closes the connection. Idempotent."""
        if self._replicas:
            for replica in self._replicas:
                replica.close()
            return
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
            convention: how the SDR was graded, one of ``sritm_core.contract.CONVENTIONS``
                (README, "SDR conventions"); ``bt2446a`` by default.
            peak_nits: the target display's peak, 400-4000 cd/m^2 (1000: the network's grade).

        Raises:
            RenderingError: (a ``ValueError``) an unknown convention or a peak out of range, before any call.
        """
        frame = checked_frame(frame)
        rendering = Rendering(convention, float(peak_nits))
        if self._replicas:
            return self._convert_on_a_replica(frame, rendering)
        return self._retrying(lambda: self._infer_once(frame, self._slots, rendering), frame.pts)

    def _convert_on_a_replica(self, frame: SdrFrame, rendering: Rendering) -> HdrFrame:
        """``convert`` on the replicas in turn: the next one takes over when one gives up."""
        last: ServerUnavailableError | None = None
        for _ in range(len(self._replicas)):
            replica = self._replicas[0]
            self._replicas.append(self._replicas.pop(0))  # round robin over calls
            try:
                return replica.convert(frame, convention=rendering.convention, peak_nits=rendering.peak_nits)
            except ServerUnavailableError as error:
                last = error
        assert last is not None
        raise ServerUnavailableError(f"every replica failed; the last: {last}") from None

    def _convert_by_value(self, frame: SdrFrame, rendering: Rendering = Rendering()) -> HdrFrame:
        """``convert`` without shared memory: a stream's diagnosis leaves no region behind."""
        return self._retrying(lambda: self._infer_once(frame, None, rendering), frame.pts)

    def _infer_once(self, frame: SdrFrame, slots: SlotPool | None, rendering: Rendering = Rendering()) -> HdrFrame:
        slot = None
        if slots is not None:
            slot, retired = slots.acquire(frame.i420.nbytes, output_bytes(frame, self.scale))
            try:
                self._retire(self._client, retired)
                self._register(self._client, [slot.input, slot.output], again=self._registrations_stale)
                self._registrations_stale = False
            except BaseException:
                slots.release(slot)
                raise
        try:
            inputs, outputs = request_tensors(frame, self.scale, slot, rendering)
            result = self._client.infer(self.model, inputs, outputs=outputs, client_timeout=self.timeout_s)
            return result_frame(result, frame, self.scale, slot)
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

        A client made with several URLs streams to all of them at once, ``window``
        frames in flight on each; when one gives up (after its own retries), the
        frames it had not answered go to the others (:mod:`sritm_client.replicas`).
        """
        if window < 1:
            raise ValueError(f"window must be at least 1, not {window}")
        rendering = Rendering(convention, float(peak_nits))
        if self._replicas:
            return spread_stream(self._replicas, frames, window, rendering)
        return _SyncStream(self, window, rendering).run(iter(frames))

    # --- connection

    def _new_triton_client(self) -> Any:
        return grpcclient.InferenceServerClient(**connection_arguments(self.url, self.tls, self.retry))

    def _wait_ready(self, client: Any, deadline_s: float) -> None:
        wait = ReadinessWait(self, deadline_s)
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
        return error_status(error) != INVALID_ARGUMENT and not self._is_serving(client)

    def _is_serving(self, client: Any) -> bool:
        probe = min(self.timeout_s, LIVENESS_PROBE_S)
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
            client.register_system_shared_memory(
                region.name, region.key, region.byte_size, client_timeout=self.timeout_s
            )
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


class _SyncStream:
    """One ``SritmClient.stream`` call: its own gRPC stream, shared-memory slots and bookkeeping."""

    def __init__(self, owner: SritmClient, window: int, rendering: Rendering = Rendering()) -> None:
        self._owner = owner
        self._rendering = rendering
        self._book = StreamBook(window)
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
                            self._send(book.admit(checked_frame(frame)))
                        except StreamBroken as broken:
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
                slot, retired = self._slots.acquire(frame.i420.nbytes, output_bytes(frame, owner.scale))
                book.slots[sequence] = slot
                try:
                    owner._retire(self._client, retired)
                    owner._register(self._client, [slot.input, slot.output])
                except InferenceServerException as error:
                    if is_retryable(error) or owner._went_away(self._client, error):
                        raise StreamBroken(error_message(error)) from None
                    raise translated(error, owner.url) from None
        inputs, outputs = request_tensors(frame, owner.scale, slot, self._rendering)
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
                generation, result, error = self._events.get(timeout=min(remaining, LIVENESS_PROBE_S))
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
        elif error_status(error) is None:
            book.unattributed_errors += 1
        elif is_retryable(error) or owner._went_away(self._client, error):
            self._reconnect(described(error))
        else:
            raise translated(error, owner.url)

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
        reconnection = Reconnection(owner, cause)
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
            except (ServerUnavailableError, StreamBroken, InferenceServerException) as error:
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
