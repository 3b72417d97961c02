"""Watching a child process's output without ever blocking the suite on it."""

from __future__ import annotations

import os
import re
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


def progress_counts(text: str, total: int) -> list[int]:
    """Every ``done`` a tqdm bar over ``total`` items drew in ``text``, in order."""
    return [int(done) for done in re.findall(rf"(\d+)/{total}\b", text)]


def read_until_progress(process: subprocess.Popen[str], total: int, at_least: int, timeout_s: float = 180.0) -> str:
    """Reads stderr until the process's tqdm bar shows ``at_least`` of ``total`` done; returns what was read.

    tqdm redraws at most every 0.1 s, so a fast process may skip the very count
    waited for: this waits for any count at or past it.
    """
    return read_until(process, lambda text: max(progress_counts(text, total), default=-1) >= at_least,
                      f"progress at {at_least} of {total}", timeout_s)
