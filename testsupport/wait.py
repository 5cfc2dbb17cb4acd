"""Waiting for another process: one poll with a deadline, for what cannot be awaited.

What a child can announce is awaited as an event instead (the RTPproxy child's READY
line, a process's exit). This helper is for the rest: a daemon's pidfile going away,
a program that binds its port at some point, a log line, a reply over a socket.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(
    condition: Callable[[], bool],
    what: str | Callable[[], str],
    timeout: float = 20.0,
    interval: float = 0.02,
) -> None:
    """Poll ``condition()`` every ``interval`` seconds until it is true.

    At the deadline: ``AssertionError`` "timed out after N s waiting for <what>";
    ``what`` may be a callable, asked then, so the message can say what was seen last.
    An exception from ``condition`` (e.g. "the process exited") ends the wait at once.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            text = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout:g} s waiting for {text}")
        time.sleep(interval)
