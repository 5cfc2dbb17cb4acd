"""Waiting for another process: one poll with a deadline, for what cannot be awaited.

What a child can announce is awaited as an event instead (the RTPproxy child's READY
line, rtpcluster's ``READY=1`` notification, a process's exit). This helper is for the
rest: a daemon's pidfile going away, a program binding its port at some point, a log
line, a value another program (Prometheus, ``ctl ls``) reports.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T],
    what: str | Callable[[], str],
    timeout: float = 30.0,
    interval: float = 0.05,
) -> T:
    """Call ``condition()`` every ``interval`` seconds until its value is true; return it.

    At the deadline: ``AssertionError`` "timed out after N s waiting for <what>";
    ``what`` may be a callable, asked then, so the message can say what was seen last.
    An exception from ``condition`` (e.g. "the process exited") ends the wait at once.
    """
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() >= deadline:
            text = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout:g} s waiting for {text}")
        time.sleep(interval)
    return value
