"""The asyncio client, on ``tritonclient.grpc.aio``: the same options and guarantees as :class:`SritmClient`."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any, TypeVar

import grpc
import tritonclient.grpc.aio as aiogrpcclient
from tritonclient.utils import InferenceServerException

from sritm_client.core import (
    INVALID_ARGUMENT,
    LIVENESS_PROBE_S,
    ClientOptions,
    ReadinessWait,
    Reconnection,
    StreamBook,
    StreamBroken,
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
from sritm_client.errors import ServerUnavailableError, SritmError
from sritm_client.frames import HdrFrame, SdrFrame
from sritm_client.replicas import spread_stream_async
from sritm_client.shm import FrameSlot, Region, SlotPool
from sritm_core.contract import DEFAULT_CONVENTION, NETWORK_PEAK_NITS, Rendering

__all__ = ["AsyncSritmClient"]

T = TypeVar("T")


class AsyncSritmClient(ClientOptions):
    """Converts SDR frames to HDR10 frames from asyncio code; see :class:`SritmClient` for the options.

    Connects on ``async with`` (or :meth:`connect`, or the first call): waits
    for readiness and checks the contract. Use from one event loop only.

    Example::

        async with AsyncSritmClient("127.0.0.1:8001", scale=4) as client:
            async for hdr in client.stream(frames, window=8):
                ...
    """

    # The options are ClientOptions'; the connection is made by connect().
    _client: Any = None
    _replicas: list[AsyncSritmClient] | None = None

    async def __aenter__(self) -> AsyncSritmClient:
        return await self.connect()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.close()

    async def connect(self) -> AsyncSritmClient:
        """Waits for the server and the ensemble, and checks the contract. Idempotent."""
        if len(self.urls) > 1:
            if self._replicas is None:
                self._replicas = await self._connect_replicas()
            return self
        if self._client is None:
            client = self._new_triton_client()
            try:
                await self._wait_ready(client, self.ready_timeout_s)
                check_contract(await client.get_model_metadata(self.model, client_timeout=self.timeout_s), self.model)
            except InferenceServerException as error:
                await client.close()
                raise translated(error, self.url) from None
            except BaseException:
                await client.close()
                raise
            self._client = client
        return self

    async def _connect_replicas(self) -> list[AsyncSritmClient]:
        """A connected client per replica URL; the unreachable ones are left out, unless all of them are."""
        connected, failures = [], []
        for url in self.urls:
            replica = AsyncSritmClient(url, self.scale, **self.replica_options())
            try:
                connected.append(await replica.connect())
            except ServerUnavailableError as error:
                failures.append(str(error))
        if not connected:
            raise ServerUnavailableError(f"none of {len(self.urls)} replicas is reachable: "
                                         f"{'; '.join(failures)}")
        return connected

    async def close(self) -> None:
        """Unregisters and frees this client's shared memory and closes the connection. Idempotent."""
        replicas, self._replicas = self._replicas or [], None
        for replica in replicas:
            await replica.close()
        client, self._client = self._client, None
        await _close_connection(self, client, self._slots)

    # --- one frame

    async def convert(
        self, frame: SdrFrame, *, convention: str = DEFAULT_CONVENTION, peak_nits: float = NETWORK_PEAK_NITS
    ) -> HdrFrame:
        """One frame, one unary call, retried on ``UNAVAILABLE`` per the retry policy.

        The arguments and errors are those of :meth:`SritmClient.convert`.
        """
        frame = checked_frame(frame)
        rendering = Rendering(convention, float(peak_nits))
        await self.connect()
        if self._replicas:
            return await self._convert_on_a_replica(frame, rendering)
        return await self._retrying(lambda: self._infer_once(frame, self._slots, rendering), frame.pts)

    async def _convert_on_a_replica(self, frame: SdrFrame, rendering: Rendering) -> HdrFrame:
        """``convert`` on the replicas in turn: the next one takes over when one gives up."""
        assert self._replicas
        last: ServerUnavailableError | None = None
        for _ in range(len(self._replicas)):
            replica = self._replicas[0]
            self._replicas.append(self._replicas.pop(0))  # round robin over calls
            try:
                return await replica.convert(frame, convention=rendering.convention, peak_nits=rendering.peak_nits)
            except ServerUnavailableError as error:
                last = error
        raise ServerUnavailableError(f"every replica failed; the last: {last}") from None

    async def _convert_by_value(self, frame: SdrFrame, rendering: Rendering = Rendering()) -> HdrFrame:
        """``convert`` without shared memory: a stream's diagnosis leaves no region behind."""
        return await self._retrying(lambda: self._infer_once(frame, None, rendering), frame.pts)

    async def _infer_once(
        self, frame: SdrFrame, slots: SlotPool | None, rendering: Rendering = Rendering()
    ) -> HdrFrame:
        slot = None
        if slots is not None:
            slot, retired = slots.acquire(frame.i420.nbytes, output_bytes(frame, self.scale))
            try:
                await self._retire(self._client, retired)
                await self._register(self._client, [slot.input, slot.output], again=self._registrations_stale)
                self._registrations_stale = False
            except BaseException:
                slots.release(slot)
                raise
        try:
            inputs, outputs = request_tensors(frame, self.scale, slot, rendering)
            result = await self._client.infer(self.model, inputs, outputs=outputs, client_timeout=self.timeout_s)
            return result_frame(result, frame, self.scale, slot)
        finally:
            if slot is not None and slots is not None:
                slots.release(slot)

    async def _retrying(self, call: Callable[[], Awaitable[T]], pts: int | None) -> T:
        started = time.monotonic()
        for attempt in itertools.count(1):
            try:
                return await call()
            except InferenceServerException as error:
                recoverable = self._recoverable(error) or await self._went_away(self._client, error)
                await asyncio.sleep(self._pause_before_retry(error, recoverable, attempt, started, pts))
                await self._wait_ready(self._client, self._retry_time_left(started))
        raise AssertionError("unreachable")

    # --- video

    async def stream(
        self, frames: AsyncIterable[SdrFrame] | Iterable[SdrFrame], window: int = 8, *,
        convention: str = DEFAULT_CONVENTION, peak_nits: float = NETWORK_PEAK_NITS,
    ) -> AsyncIterator[HdrFrame]:
        """Converts ``frames`` over one gRPC bidirectional stream, yielding HDR frames in input order.

        The guarantees of :meth:`SritmClient.stream`: up to ``window`` frames
        sent and not yet yielded, identity by request id, and after a dropped
        connection the unanswered frames are sent again, so each frame is
        yielded exactly once and in order.
        """
        if window < 1:
            raise ValueError(f"window must be at least 1, not {window}")
        rendering = Rendering(convention, float(peak_nits))
        await self.connect()
        if self._replicas:
            async with contextlib.aclosing(
                spread_stream_async(self._replicas, _async_iterator(frames), window, rendering)
            ) as spread:
                async for frame in spread:
                    yield frame
            return
        stream = _AsyncStream(self, window, rendering)
        try:
            async with contextlib.aclosing(stream.run(_async_iterator(frames))) as converted:
                async for frame in converted:
                    yield frame
        finally:
            await stream.close()

    # --- connection

    def _new_triton_client(self) -> Any:
        return aiogrpcclient.InferenceServerClient(**connection_arguments(self.url, self.tls, self.retry))

    async def _wait_ready(self, client: Any, deadline_s: float) -> None:
        wait = ReadinessWait(self, deadline_s)
        for attempt in itertools.count(1):
            probe = wait.probe_timeout()
            try:
                if not await client.is_server_ready(client_timeout=probe):
                    wait.last = "the server is not ready"
                elif not await client.is_model_ready(self.model, client_timeout=probe):
                    wait.last = f"{self.model} is not ready"
                else:
                    return
            except InferenceServerException as error:
                wait.failed(error)
            await asyncio.sleep(wait.pause(attempt))

    async def _went_away(self, client: Any, error: InferenceServerException) -> bool:
        """See ``SritmClient._went_away``: a shutting-down server's NOT_FOUND or INTERNAL is unavailability."""
        return error_status(error) != INVALID_ARGUMENT and not await self._is_serving(client)

    async def _is_serving(self, client: Any) -> bool:
        probe = min(self.timeout_s, LIVENESS_PROBE_S)
        try:
            return bool(
                await client.is_server_ready(client_timeout=probe)
                and await client.is_model_ready(self.model, client_timeout=probe)
            )
        except InferenceServerException:
            return False

    async def _register(self, client: Any, regions: Iterable[Region], *, again: bool = False) -> None:
        for region in regions:
            if region.registered and not again:
                continue
            if region.registered:
                try:
                    await client.unregister_system_shared_memory(region.name, client_timeout=self.timeout_s)
                except InferenceServerException:
                    pass
            await client.register_system_shared_memory(
                region.name, region.key, region.byte_size, client_timeout=self.timeout_s
            )
            region.registered = True

    async def _retire(self, client: Any, regions: Iterable[Region]) -> None:
        """Unregister (best effort: the server may be gone) and always unlink."""
        for region in regions:
            try:
                if region.registered:
                    await client.unregister_system_shared_memory(region.name, client_timeout=self.timeout_s)
            except InferenceServerException:
                pass
            finally:
                region.registered = False
                region.destroy()


class _AsyncStream:
    """One ``AsyncSritmClient.stream`` call: its own gRPC stream, shared-memory slots and bookkeeping."""

    def __init__(self, owner: AsyncSritmClient, window: int, rendering: Rendering = Rendering()) -> None:
        self._owner = owner
        self._rendering = rendering
        self._book = StreamBook(window)
        self._slots = SlotPool(window) if owner.use_shared_memory else None
        self._client: Any = None
        self._outbox: asyncio.Queue[dict[str, Any] | None] | None = None
        self._answers: Any = None

    async def run(self, frames: AsyncIterator[SdrFrame]) -> AsyncGenerator[HdrFrame, None]:
        owner, book = self._owner, self._book
        self._client = owner._new_triton_client()
        self._open()
        exhausted = False
        while True:
            for ready in book.ready():
                yield ready
            while not exhausted and book.has_room():
                try:
                    frame = await frames.__anext__()
                except StopAsyncIteration:
                    exhausted = True
                else:
                    try:
                        await self._send(book.admit(checked_frame(frame)))
                    except StreamBroken as broken:
                        await self._reconnect(str(broken))
            if book.finished(exhausted):
                return
            if book.failures_identified():
                await self._rerun_failures()
                continue
            if book.unanswered:
                await self._receive_one()

    def _open(self) -> None:
        outbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

        async def requests() -> AsyncIterator[dict[str, Any]]:
            while (request := await outbox.get()) is not None:
                yield request

        self._outbox = outbox
        self._answers = self._client.stream_infer(requests())

    async def _send(self, sequence: int) -> None:
        owner, book = self._owner, self._book
        frame = book.unanswered[sequence]
        slot: FrameSlot | None = None
        if self._slots is not None:
            slot = book.slots.get(sequence)
            if slot is None:
                slot, retired = self._slots.acquire(frame.i420.nbytes, output_bytes(frame, owner.scale))
                book.slots[sequence] = slot
                try:
                    await owner._retire(self._client, retired)
                    await owner._register(self._client, [slot.input, slot.output])
                except InferenceServerException as error:
                    if is_retryable(error) or await owner._went_away(self._client, error):
                        raise StreamBroken(error_message(error)) from None
                    raise translated(error, owner.url) from None
        inputs, outputs = request_tensors(frame, owner.scale, slot, self._rendering)
        assert self._outbox is not None
        self._outbox.put_nowait(
            {"model_name": owner.model, "inputs": inputs, "outputs": outputs, "request_id": book.request_id(sequence)}
        )

    async def _receive_one(self) -> None:
        owner, book = self._owner, self._book
        try:
            result, error = await asyncio.wait_for(self._answers.__anext__(), owner.timeout_s)
        except asyncio.TimeoutError:
            raise ServerUnavailableError(
                f"{owner.url} answered none of {len(book.unanswered)} frames in flight within {owner.timeout_s:g} s"
            ) from None
        except StopAsyncIteration:
            # The server ended the stream with frames unanswered (a graceful shutdown).
            await self._reconnect("the server closed the stream")
            return
        except grpc.RpcError as rpc_error:
            error = InferenceServerException(msg=rpc_error.details(), status=str(rpc_error.code()))
            if not (is_retryable(error) or await owner._went_away(self._client, error)):
                raise translated(error, owner.url) from None
            await self._reconnect(described(error))
            return
        if error is None:
            book.answer_result(result, owner.scale, self._slots)
        else:
            book.unattributed_errors += 1

    async def _rerun_failures(self) -> None:
        owner, book = self._owner, self._book
        for sequence, frame in book.take_failures(self._slots):
            try:
                item: HdrFrame | SritmError = await owner._convert_by_value(frame, self._rendering)
            except SritmError as error:
                item = error
            if not book.answer_rerun(sequence, item):
                break

    async def _reconnect(self, cause: str) -> None:
        owner, book = self._owner, self._book
        reconnection = Reconnection(owner, cause)
        for attempt in itertools.count(1):
            await asyncio.sleep(reconnection.pause(attempt))
            self._abandon_call()
            try:
                await owner._wait_ready(self._client, reconnection.time_left())
                if self._slots is not None:
                    await owner._register(self._client, self._slots.regions(), again=True)
                self._open()
                book.forget_errors()
                for sequence in sorted(book.unanswered):
                    await self._send(sequence)
            except (ServerUnavailableError, StreamBroken, InferenceServerException) as error:
                reconnection.failed(error)
                continue
            return

    def _abandon_call(self) -> None:
        if self._outbox is not None:
            self._outbox.put_nowait(None)
        if self._answers is not None:
            self._answers.cancel()
        self._outbox = self._answers = None

    async def close(self) -> None:
        self._abandon_call()
        await _close_connection(self._owner, self._client, self._slots)


async def _async_iterator(frames: AsyncIterable[SdrFrame] | Iterable[SdrFrame]) -> AsyncIterator[SdrFrame]:
    if isinstance(frames, AsyncIterable):
        async for frame in frames:
            yield frame
    else:
        for frame in frames:
            yield frame


async def _close_connection(owner: AsyncSritmClient, client: Any, slots: SlotPool | None) -> None:
    """Frees ``slots`` (unregistering them from the server when connected) and closes ``client``, if any."""
    if client is None:
        if slots is not None:
            for region in slots.close():
                region.destroy()
        return
    try:
        if slots is not None:
            await owner._retire(client, slots.close())
    finally:
        await client.close()
