"""DatagramPump: the UDP sockets of one cluster, read together after each batch.

A cluster has UDP sockets on two sides: its listeners, where the SIP servers' commands
come in, and one client socket per UDP member, where the members' replies come in. Each
socket has a task that sleeps in epoll until it is readable; waking one costs more than
the work of a command (tens of microseconds). So every wake-up reads its socket until it
would block, and then:

- after a batch of commands (:meth:`DatagramPump.pump_commands`), while replies are
  awaited, the member sockets are polled for up to :data:`SPIN` seconds (about one
  RTPproxy round trip on loopback): a reply read while still on the CPU skips the
  scheduler's wake-up latency, which is most of what the cluster adds at low load;
- after a batch of replies (:meth:`DatagramPump.pump_replies`), the listeners and the
  other member sockets are read once: under load one wake-up serves both directions.

"Reading" a socket is its owner's ``read_ready()``: take every datagram waiting without
blocking and hand each to its handler (a command to the front, a reply to its callback).
The pump decides nothing about what a datagram means.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import trio

# Seconds of polling for members' replies after a batch of commands, before sleeping in
# epoll: 50 us, about one round trip to an RTPproxy on loopback (p50 40-60 us measured
# direct, docs/performance.md). Longer spins burn CPU that the members need on 2 cores.
SPIN = 0.00005


class _Socket(Protocol):
    def fileno(self) -> int: ...


class ReplySource(Protocol):
    """A member client's socket, as the pump reads it."""

    @property
    def awaiting_replies(self) -> bool:
        """True while some command sent on it is not answered yet."""
        ...

    def read_ready(self) -> int:
        """Hand every reply waiting to its callback, without blocking; how many were read."""
        ...


class DatagramPump:
    """Runs the wait loops of a cluster's UDP sockets; see the module docstring."""

    def __init__(self, spin: float = SPIN) -> None:
        self.spin = spin
        # Tuples, rebuilt when a socket comes or goes: a handler run while they are read
        # may start or stop a socket's loop without disturbing the iteration.
        self._command_readers: tuple[Callable[[], object], ...] = ()
        self._reply_sources: tuple[ReplySource, ...] = ()

    async def pump_commands(self, sock: _Socket, read_ready: Callable[[], object]) -> None:
        """Serve a listener's socket until cancelled: read, then spin for replies."""
        self._command_readers = (*self._command_readers, read_ready)
        try:
            while True:
                await trio.lowlevel.wait_readable(sock)
                read_ready()
                self._spin_for_replies()
        finally:
            self._command_readers = tuple(r for r in self._command_readers if r != read_ready)

    async def pump_replies(self, sock: _Socket, source: ReplySource) -> None:
        """Serve a member client's socket until cancelled: read, then read the others."""
        self._reply_sources = (*self._reply_sources, source)
        try:
            while True:
                await trio.lowlevel.wait_readable(sock)
                source.read_ready()
                self._read_all()
        finally:
            self._reply_sources = tuple(s for s in self._reply_sources if s is not source)

    def _spin_for_replies(self) -> None:
        awaited = [s for s in self._reply_sources if s.awaiting_replies]
        if not awaited:
            return
        deadline = time.perf_counter() + self.spin
        while True:
            got = 0
            for source in awaited:
                got += source.read_ready()
            if got or time.perf_counter() >= deadline:
                return

    def _read_all(self) -> None:
        """After a batch of replies: the commands and other replies already waiting."""
        for read_ready in self._command_readers:
            read_ready()
        for source in self._reply_sources:
            if source.awaiting_replies:
                source.read_ready()
