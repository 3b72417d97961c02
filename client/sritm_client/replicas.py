"""One stream over several Triton replicas: frames spread over the healthy ones, failed replicas' frames moved on.

Each replica is an ordinary single-URL :class:`sritm_client.client.SritmClient`
with its own stream, window, reconnects and backoff. A replica whose stream
gives up (:class:`ServerUnavailableError`, after its own retries) is dropped and
the frames it had not answered go to the others; results still come out once
each, in input order. Any other error (a frame the server refuses, say) ends
the stream as it would with one server.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from sritm_client.errors import ServerUnavailableError
from sritm_client.frames import HdrFrame, SdrFrame

if TYPE_CHECKING:
    from sritm_client.client import SritmClient

_STOP: Any = object()
"""On a replica's feed: the stream is over; the worker ends."""
_PAUSE: Any = object()
"""On a replica's feed: no more frames for now; its stream drains and closes (frames after it open a new one)."""


class _Replica:
    """A replica's feed queue, worker thread, and the sequence numbers it has been given and not yet answered."""

    def __init__(self, index: int, client: SritmClient) -> None:
        self.index = index
        self.client = client
        self.feed: queue.Queue[Any] = queue.Queue()
        self.unanswered: deque[int] = deque()
        self.paused = True
        self.thread: threading.Thread | None = None


def _worker(replica: _Replica, window: int, rendering: Any, results: queue.Queue[Any]) -> None:
    """Streams what arrives on the replica's feed, one stream per run of frames; posts answers or the failure.

    A stream asks for its next frame whenever its window has room, so it must
    be told when there is none to come (``_PAUSE``): otherwise it would wait
    for a frame instead of reading the answers it is owed.
    """
    stopping = False
    try:
        while not stopping:
            first = replica.feed.get()
            if first is _STOP:
                return
            if first is _PAUSE:
                continue
            given: deque[int] = deque()

            def frames(first: Any = first, given: deque[int] = given) -> Iterator[SdrFrame]:
                nonlocal stopping
                item = first
                while True:
                    sequence, frame = item
                    given.append(sequence)
                    yield frame
                    item = replica.feed.get()
                    if item is _PAUSE or item is _STOP:
                        stopping = item is _STOP
                        return

            for hdr in replica.client.stream(frames(), window, convention=rendering.convention,
                                             peak_nits=rendering.peak_nits):
                results.put(("frame", replica.index, (given.popleft(), hdr)))
    except BaseException as error:  # handed to the caller's thread, which decides
        results.put(("failed", replica.index, error))


def _pause(replicas: Iterable[_Replica]) -> None:
    """Nothing more to send: each replica's stream drains what it holds and closes."""
    for replica in replicas:
        if not replica.paused:
            replica.paused = True
            replica.feed.put(_PAUSE)


def spread_stream(clients: list[SritmClient], frames: Iterable[SdrFrame], window: int,
                  rendering: Any) -> Iterator[HdrFrame]:
    """Converts ``frames`` over every client in ``clients`` at once, ``window`` frames in flight on each.

    Raises:
        ServerUnavailableError: every replica failed; the message says what the last one said.
    """
    results: queue.Queue[Any] = queue.Queue()
    replicas = [_Replica(index, client) for index, client in enumerate(clients)]
    healthy = {replica.index: replica for replica in replicas}
    source = iter(frames)
    waiting: dict[int, SdrFrame] = {}  # sent (or to be sent again), not yet answered
    retry: deque[int] = deque()
    answered: dict[int, HdrFrame] = {}
    next_sequence = next_out = 0
    exhausted = False
    for replica in replicas:
        replica.thread = threading.Thread(target=_worker, args=(replica, window, rendering, results), daemon=True,
                                          name=f"sritm-replica-{replica.index}")
        replica.thread.start()
    try:
        while True:
            # Fill every healthy replica's window, least loaded first; frames of a failed replica go first.
            while healthy and (retry or not exhausted):
                replica = min(healthy.values(), key=lambda r: len(r.unanswered))
                if len(replica.unanswered) >= window:
                    break
                if retry:
                    sequence = retry.popleft()
                else:
                    frame = next(source, None)
                    if frame is None:
                        exhausted = True
                        break
                    sequence, next_sequence = next_sequence, next_sequence + 1
                    waiting[sequence] = frame
                replica.unanswered.append(sequence)
                replica.paused = False
                replica.feed.put((sequence, waiting[sequence]))
            if exhausted and not retry:
                _pause(healthy.values())
            while next_out in answered:
                yield answered.pop(next_out)
                next_out += 1
            if exhausted and not retry and next_out == next_sequence:
                return
            kind, index, payload = results.get()
            replica = replicas[index]
            if kind == "frame":
                sequence, hdr = payload
                replica.unanswered.remove(sequence)
                del waiting[sequence]
                answered[sequence] = hdr
            elif kind == "failed":
                if not isinstance(payload, ServerUnavailableError):
                    raise payload
                healthy.pop(index, None)
                # Re-sent in input order, so the reorder buffer stays small.
                retry = deque(sorted({*retry, *replica.unanswered}))
                replica.unanswered.clear()
                if not healthy:
                    raise ServerUnavailableError(f"every replica failed; the last: {payload}") from None
    finally:
        for replica in replicas:
            replica.feed.put(_STOP)
        for replica in replicas:
            if replica.thread is not None:
                replica.thread.join(timeout=5)
