"""Watching a child process's output without ever blocking the suite on it."""

from __future__ import annotations

import os
import select
import subprocess
import time
from collections.abc import Callable


def read_until(process: subprocess.Popen[str], done: Callable[[str], bool], what: str, timeout_s: float = 180.0) -> str:
    """Reads the process's stderr until ``done(everything read)``; returns what was read.

    Waits with ``select`` and a deadline, so a child that stops writing fails
    the test (naming ``what`` it was waiting for) instead of hanging CI.
    ``process.stderr.read()`` still works afterwards: this reads the pipe, not
    the text wrapper's buffer.
    """
    assert process.stderr is not None
    descriptor = process.stderr.fileno()
    deadline = time.monotonic() + timeout_s
    seen = ""
    while not done(seen):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no {what} within {timeout_s:.0f} s; the process wrote: {seen[-800:]}")
        ready, _, _ = select.select([descriptor], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(descriptor, 4096).decode("utf-8", errors="replace")
        if not chunk:
            raise AssertionError(f"the process ended before {what}; it wrote: {seen[-800:]}")
        seen += chunk
    return seen
