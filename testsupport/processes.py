"""Stopping the processes a test or a benchmark started: by PID, never by name."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path


def gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie left for its parent to reap counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc), for programs that fork workers."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found.extend(int(x) for x in (task / "children").read_text().split())
    return found


def stop_process(proc: subprocess.Popen[bytes], *, grace: float = 5.0) -> None:
    """Stop a process we started (and any workers it forked) by PID, and reap it.

    SIGCONT first in case it was left stopped (SIGSTOP), then SIGTERM, then SIGKILL
    after ``grace`` seconds; forked children still alive afterwards are killed by
    their own PIDs.
    """
    if proc.poll() is not None:
        return
    children = children_of(proc.pid)
    for sig in (signal.SIGCONT, signal.SIGTERM):
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=grace)
    for child in children:
        if not gone(child):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
