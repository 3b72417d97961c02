"""One stream over several Triton replicas: frames spread over the healthy ones, failed replicas' frames moved on.

Each replica is an ordinary single-URL :class:`sritm_client.client.SritmClient`
with its own stream, window, reconnects and backoff. A replica whose stream
gives up (:class:`ServerUnavailableError`, after its own retries) is dropped and
the frames it had not answered go to the others; results still come out once
each, in input order. Any other error (a frame the server refuses, say) ends
the stream as it would with one server.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from sritm_client.errors import ServerUnavailableError
from sritm_client.frames import HdrFrame, SdrFrame

if TYPE_CHECKING:
    from sritm_client.aio import AsyncSritmClient
    from sritm_client.client import SritmClient

_STOP: Any = object()
"""On a replica's feed: the stream is over; the worker ends."""
_PAUSE: Any = object()
"""On a replica's feed: no more frames for now; its stream drains and closes (frames after it open a new one)."""


class SpreadBook:
    """The bookkeeping of one stream over several replicas, without I/O: who holds which frame, what comes next.

    Frames are numbered in input order. A frame goes to the least loaded healthy
    replica with room in its window; a failed replica's unanswered frames go
    before new ones, in input order; answers come out in input order.
    """

    def __init__(self, replicas: int, window: int) -> None:
        self.window = window
        self.unanswered: list[deque[int]] = [deque() for _ in range(replicas)]
        self.paused = [True] * replicas
        self.healthy = set(range(replicas))
        self.waiting: dict[int, SdrFrame] = {}
        self.retry: deque[int] = deque()
        self.answered: dict[int, HdrFrame] = {}
        self.next_sequence = self.next_out = 0
        self.exhausted = False

    def free_replica(self) -> int | None:
        """The replica the next frame goes to, or None when none has room or there is nothing left to send."""
        if not self.healthy or (self.exhausted and not self.retry):
            return None
        index = min(self.healthy, key=lambda i: (len(self.unanswered[i]), i))
        return index if len(self.unanswered[index]) < self.window else None

    def take_retry(self) -> int | None:
        """The first frame of a failed replica still to be sent again, if any."""
        return self.retry.popleft() if self.retry else None

    def add(self, frame: SdrFrame) -> int:
        """Numbers a new frame from the source."""
        sequence, self.next_sequence = self.next_sequence, self.next_sequence + 1
        self.waiting[sequence] = frame
        return sequence

    def assign(self, index: int, sequence: int) -> tuple[int, SdrFrame]:
        """Gives frame ``sequence`` to replica ``index``; returns what to put on its feed."""
        self.unanswered[index].append(sequence)
        self.paused[index] = False
        return sequence, self.waiting[sequence]

    def to_pause(self) -> list[int]:
        """Replicas to tell that nothing more comes for now (each once per run of frames)."""
        if not self.exhausted or self.retry:
            return []
        chosen = [i for i in self.healthy if not self.paused[i]]
        for index in chosen:
            self.paused[index] = True
        return chosen

    def record(self, kind: str, index: int, payload: Any) -> None:
        """A worker's message: an answer, or its replica's failure.

        Raises:
            SritmError: the failure was not the server going away (a refused frame, say).
            ServerUnavailableError: every replica has now failed.
        """
        if kind == "frame":
            sequence, hdr = payload
            self.unanswered[index].remove(sequence)
            del self.waiting[sequence]
            self.answered[sequence] = hdr
            return
        if not isinstance(payload, ServerUnavailableError):
            raise payload
        self.healthy.discard(index)
        self.retry = deque(sorted({*self.retry, *self.unanswered[index]}))  # input order: a small reorder buffer
        self.unanswered[index].clear()
        if not self.healthy:
            raise ServerUnavailableError(f"every replica failed; the last: {payload}") from None

    def in_order(self) -> Iterator[HdrFrame]:
        """The answers that are next in input order."""
        while self.next_out in self.answered:
            yield self.answered.pop(self.next_out)
            self.next_out += 1

    def done(self) -> bool:
        """Whether every frame of the source has come out."""
        return self.exhausted and not self.retry and self.next_out == self.next_sequence


class _Replica:
    """A replica's client, its feed and its worker."""

    def __init__(self, index: int, client: Any, feed: Any) -> None:
        self.index = index
        self.client = client
        self.feed = feed
        self.worker: Any = None


def _runs(first: Any, next_item: Callable[[], Any]) -> Iterator[tuple[int, SdrFrame]]:
    """The feed's items from ``first`` to the next ``_PAUSE``/``_STOP`` (excluded)."""
    item = first
    while item is not _PAUSE and item is not _STOP:
        yield item
        item = next_item()


def _worker(replica: _Replica, window: int, rendering: Any, results: queue.Queue[Any]) -> None:
    """Streams what arrives on the replica's feed, one stream per run of frames; posts answers or the failure.

    A stream asks for its next frame whenever its window has room, so it must
    be told when there is none to come (``_PAUSE``): otherwise it would wait
    for a frame instead of reading the answers it is owed.
    """
    try:
        while True:
            first = replica.feed.get()
            if first is _STOP:
                return
            if first is _PAUSE:
                continue
            given: deque[int] = deque()
            last: list[Any] = []

            def frames(first: Any = first, given: deque[int] = given, last: list[Any] = last) -> Iterator[SdrFrame]:
                def next_item() -> Any:
                    item = replica.feed.get()
                    last[:] = [item]
                    return item

                for sequence, frame in _runs(first, next_item):
                    given.append(sequence)
                    yield frame

            for hdr in replica.client.stream(frames(), window, convention=rendering.convention,
                                             peak_nits=rendering.peak_nits):
                results.put(("frame", replica.index, (given.popleft(), hdr)))
            if last and last[0] is _STOP:
                return
    except BaseException as error:  # handed to the caller's thread, which decides
        results.put(("failed", replica.index, error))


def spread_stream(clients: list[SritmClient], frames: Iterable[SdrFrame], window: int,
                  rendering: Any) -> Iterator[HdrFrame]:
    """Converts ``frames`` over every client in ``clients`` at once, ``window`` frames in flight on each.

    Raises:
        ServerUnavailableError: every replica failed; the message says what the last one said.
    """
    results: queue.Queue[Any] = queue.Queue()
    replicas = [_Replica(index, client, queue.Queue()) for index, client in enumerate(clients)]
    book = SpreadBook(len(replicas), window)
    source = iter(frames)
    for replica in replicas:
        replica.worker = threading.Thread(target=_worker, args=(replica, window, rendering, results), daemon=True,
                                          name=f"sritm-replica-{replica.index}")
        replica.worker.start()
    try:
        while True:
            while (index := book.free_replica()) is not None:
                sequence = book.take_retry()
                if sequence is None:
                    frame = next(source, None)
                    if frame is None:
                        book.exhausted = True
                        break
                    sequence = book.add(frame)
                replicas[index].feed.put(book.assign(index, sequence))
            for index in book.to_pause():
                replicas[index].feed.put(_PAUSE)
            yield from book.in_order()
            if book.done():
                return
            book.record(*results.get())
    finally:
        for replica in replicas:
            replica.feed.put(_STOP)
        for replica in replicas:
            replica.worker.join(timeout=5)


async def _async_worker(replica: _Replica, window: int, rendering: Any, results: asyncio.Queue[Any]) -> None:
    """:func:`_worker` for the asyncio client: a task per replica instead of a thread."""
    try:
        while True:
            first = await replica.feed.get()
            if first is _STOP:
                return
            if first is _PAUSE:
                continue
            given: deque[int] = deque()
            last: list[Any] = []

            async def frames(first: Any = first, given: deque[int] = given,
                             last: list[Any] = last) -> AsyncIterator[SdrFrame]:
                item = first
                while item is not _PAUSE and item is not _STOP:
                    sequence, frame = item
                    given.append(sequence)
                    yield frame
                    item = await replica.feed.get()
                last[:] = [item]

            async for hdr in replica.client.stream(frames(), window, convention=rendering.convention,
                                                   peak_nits=rendering.peak_nits):
                await results.put(("frame", replica.index, (given.popleft(), hdr)))
            if last and last[0] is _STOP:
                return
    except asyncio.CancelledError:
        raise
    except BaseException as error:  # handed to the caller's task, which decides
        await results.put(("failed", replica.index, error))


async def spread_stream_async(clients: list[AsyncSritmClient], frames: AsyncIterator[SdrFrame], window: int,
                              rendering: Any) -> AsyncGenerator[HdrFrame, None]:
    """:func:`spread_stream` for the asyncio client (the same :class:`SpreadBook`)."""
    results: asyncio.Queue[Any] = asyncio.Queue()
    replicas = [_Replica(index, client, asyncio.Queue()) for index, client in enumerate(clients)]
    book = SpreadBook(len(replicas), window)
    for replica in replicas:
        replica.worker = asyncio.create_task(_async_worker(replica, window, rendering, results))
    try:
        while True:
            while (index := book.free_replica()) is not None:
                sequence = book.take_retry()
                if sequence is None:
                    frame = await anext(frames, None)
                    if frame is None:
                        book.exhausted = True
                        break
                    sequence = book.add(frame)
                replicas[index].feed.put_nowait(book.assign(index, sequence))
            for index in book.to_pause():
                replicas[index].feed.put_nowait(_PAUSE)
            for hdr in book.in_order():
                yield hdr
            if book.done():
                return
            book.record(*(await results.get()))
    finally:
        for replica in replicas:
            replica.feed.put_nowait(_STOP)
        tasks = [replica.worker for replica in replicas]
        _, pending = await asyncio.wait(tasks, timeout=5)
        for task in pending:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
