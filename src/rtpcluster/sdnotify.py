"""Telling systemd how the service is doing: the ``sd_notify`` datagram protocol.

Under ``Type=notify`` systemd passes ``$NOTIFY_SOCKET``, a unix datagram socket (a path,
or ``@name`` in the abstract namespace). Each message is one datagram of newline-separated
``KEY=VALUE`` lines: ``READY=1`` once every listener is bound, ``STATUS=...`` for
``systemctl status``, ``RELOADING=1`` ... ``READY=1`` around a reload, ``STOPPING=1``, and
``WATCHDOG=1`` at least every ``$WATCHDOG_USEC`` microseconds.

The watchdog pings come from a task of the main trio loop on purpose: if the loop wedges
(a blocking call, a busy loop), the pings stop and systemd restarts the service.
Without ``$NOTIFY_SOCKET`` every method does nothing. A send that fails is logged once
and otherwise ignored: systemd going away must not take the service down.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

import trio

from rtpcluster.cluster.control import ClusterInfo

log = logging.getLogger(__name__)

# STATUS is refreshed this often when no watchdog asks for more (members come and go).
STATUS_INTERVAL = 5.0
MAX_STATUS = 200  # characters of STATUS=; systemctl shows one line


def status_text(clusters: list[ClusterInfo]) -> str:
    """``2 clusters, 3 of 4 members online; offline: c1/m2`` for ``systemctl status``."""
    members = [m for c in clusters for m in c.members]
    online = sum(m.online for m in members)
    text = (
        f"{plural(len(clusters), 'cluster')}, {online} of {plural(len(members), 'member')} online"
    )
    offline = [f"{c.name}/{m.name}" for c in clusters for m in c.members if not m.online]
    if offline:
        text += "; offline: " + ", ".join(offline)
    return text[:MAX_STATUS]


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def socket_address(value: str) -> str | bytes:
    """``$NOTIFY_SOCKET`` as a ``sendto`` address: ``@name`` is abstract (a leading NUL)."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


def watchdog_interval(environ: Mapping[str, str]) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half the timeout, as systemd advises), or None.

    ``$WATCHDOG_PID``, when set, names the process meant; any other ignores the watchdog.
    """
    usec = environ.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = environ.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 1_000_000 / 2


class Notifier:
    """One service's line to systemd; a no-op without an address."""

    def __init__(self, address: str | None, watchdog: float | None = None) -> None:
        self.address = address
        self.watchdog = watchdog  # seconds between pings, None: no watchdog
        self._socket: socket.socket | None = None
        self._last_status = ""
        self._failed = False

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> Notifier:
        address = environ.get("NOTIFY_SOCKET") or None
        return cls(address, watchdog_interval(environ) if address else None)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *lines: str) -> None:
        """One datagram of ``KEY=VALUE`` lines."""
        if self.address is None:
            return
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._socket.setblocking(False)  # a full queue drops a ping, never blocks
            self._socket.sendto("\n".join(lines).encode(), socket_address(self.address))
        except OSError as err:
            if not self._failed:
                log.warning("systemd notify to %s failed: %s", self.address, err)
                self._failed = True

    def ready(self, status: str) -> None:
        self._last_status = status
        self.send("READY=1", f"STATUS={status}")

    def reloading(self) -> None:
        # MONOTONIC_USEC lets Type=notify-reload tell this reload from an earlier one.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping")

    def status(self, status: str) -> None:
        """STATUS=, sent only when it changed."""
        if status != self._last_status:
            self._last_status = status
            self.send(f"STATUS={status}")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    async def run(
        self,
        status: Callable[[], str],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Send READY=1 now, then keep STATUS fresh and ping the watchdog until cancelled.

        Started last in the root nursery, so READY=1 goes out once every listener before
        it has bound.
        """
        self.ready(status())
        task_status.started()
        if not self.enabled:
            return
        interval = min(self.watchdog or STATUS_INTERVAL, STATUS_INTERVAL)
        try:
            while True:
                await trio.sleep(interval)
                if self.watchdog is not None:
                    self.send("WATCHDOG=1")
                self.status(status())
        finally:
            self.close()
