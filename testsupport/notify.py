"""systemd's side of ``$NOTIFY_SOCKET``: the datagrams a service sends (``READY=1`` ...).

``rtpcluster serve`` sends ``READY=1`` once every listener is bound, so a test awaits
that message instead of polling the service's sockets.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

MESSAGE_SIZE = 4096  # one notification: a few KEY=VALUE lines


class NotifyListener:
    """A unix datagram socket at ``path`` that a child is told about in NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.unlink(missing_ok=True)  # left by an earlier listener of the same process
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))

    def __enter__(self) -> NotifyListener:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def message(self, timeout: float = 30.0) -> dict[str, str]:
        """The next notification as fields; TimeoutError when none comes in time."""
        self.sock.settimeout(timeout)
        data = self.sock.recv(MESSAGE_SIZE).decode()
        return dict(line.split("=", 1) for line in data.split("\n") if "=" in line)

    def until(
        self,
        predicate: Callable[[dict[str, str]], bool],
        timeout: float = 30.0,
        process: subprocess.Popen[bytes] | None = None,
    ) -> dict[str, str]:
        """The first notification ``predicate`` accepts, skipping others (bounded).

        With ``process``: RuntimeError as soon as it exits (its exit is an event too, a
        pidfd), instead of waiting out ``timeout``.
        """
        deadline = time.monotonic() + timeout
        seen: list[dict[str, str]] = []
        with contextlib.ExitStack() as stack:
            waited: list[int] = [self.sock.fileno()]
            if process is not None:
                pidfd = os.pidfd_open(process.pid)
                stack.callback(os.close, pidfd)
                waited.append(pidfd)
            while (left := deadline - time.monotonic()) > 0:
                readable, _, _ = select.select(waited, [], [], left)
                if self.sock.fileno() in readable:
                    fields = self.message(timeout=0)
                    if predicate(fields):
                        return fields
                    seen.append(fields)
                elif process is not None and readable:  # only the pidfd: it is gone
                    raise RuntimeError(f"exited with {process.wait()} before that notification")
        raise AssertionError(f"no such notification in {timeout:g} s; the last: {seen[-5:]}")

    def close(self) -> None:
        self.sock.close()
        self.path.unlink(missing_ok=True)
