"""CommandFront: where the control sockets' commands enter a cluster.

For a datagram: the cookie (protocol.cookie), the reply cache that answers retransmits,
and the bounds on the work in flight; then the inline executor. For a stream command:
the task executor, in the connection's task. Either way it counts the commands in flight,
so that a graceful stop can wait for their replies, and every reply that goes out (its op,
result and latency: ``ClusterCounters.replied``; a retransmit answered from the cache:
``replied_from_cache``), the one place all replies pass.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import Any

import trio

from rtpcluster.cluster.counters import ClusterCounters, op_label
from rtpcluster.cluster.reply_cache import MAX_BYTES, MAX_ENTRIES, ReplyCache
from rtpcluster.protocol import MAX_DATAGRAM_BYTES, ProtocolError, join_cookie, split_cookie
from rtpcluster.transport.listeners import SendDatagram

REPLY_CACHE_LIFETIME = 30.0
REPLY_CACHE_ENTRIES = MAX_ENTRIES
REPLY_CACHE_BYTES = MAX_BYTES
# UDP commands in flight at once, all clients together: what they hold (closures, parsed
# command, the member client's pending entry) is bounded by these. A member that hangs
# keeps its commands for member_timeout (0.5 s) before it is taken offline: at 10,000
# commands/s over two members that is 2,500 in flight, which 4,096 covers. 8 MiB of
# datagrams: 1,000 commands at the 8 KiB limit, or all 4,096 at 2 KiB, ten times a long
# real command.
MAX_DATAGRAMS_IN_FLIGHT = 4096
MAX_BYTES_IN_FLIGHT = 8 * 1024 * 1024

# (command, respond, abandon): the inline executor's entry point
Dispatch = Callable[[bytes, Callable[[str], None], Callable[[], None]], None]


class CommandFront:
    def __init__(
        self,
        dispatch: Dispatch,
        handle: Callable[[bytes], Awaitable[str]],
        counters: ClusterCounters,
    ) -> None:
        self._dispatch = dispatch
        self._handle = handle
        self._counters = counters
        self.reply_cache = ReplyCache(REPLY_CACHE_LIFETIME, REPLY_CACHE_ENTRIES, REPLY_CACHE_BYTES)
        # Datagrams answered by no command: without a cookie to answer to (blank, or one
        # over MAX_COOKIE_BYTES), or refused because MAX_DATAGRAMS_IN_FLIGHT were in flight.
        self.datagrams_ignored = 0
        self.datagrams_refused = 0
        self.inflight = 0  # commands received and not answered yet, datagrams and streams
        self._inflight_bytes = 0  # command bytes of the datagrams in flight
        self._stopping = False
        self._idle = trio.Event()

    def on_datagram(self, data: bytes, addr: Any, send: SendDatagram) -> None:
        """A UDP command: cookie, retransmit cache, then the executor; the reply goes to send.

        What a datagram may hold is bounded (protocol.cookie: the cookie, the datagram)
        and so is the work in flight for them all (MAX_DATAGRAMS_IN_FLIGHT commands,
        MAX_BYTES_IN_FLIGHT bytes): past that a datagram is dropped unanswered, as by a
        full socket buffer, and the client's retransmit comes back later.
        """
        arrived = perf_counter()
        try:
            cookie, body = split_cookie(data)
        except ProtocolError:
            self.datagrams_ignored += 1  # no cookie to answer with
            return
        counters = self._counters
        if len(data) > MAX_DATAGRAM_BYTES:
            counters.replied(op_label(body), "E5", perf_counter() - arrived)
            send(join_cookie(cookie, "E5"), addr)  # cut by the listener: never run a part
            return
        key = (cookie, addr)
        cache = self.reply_cache
        known = cache.begin(key)
        if known is not None:
            if known:
                counters.replied_from_cache(op_label(body), perf_counter() - arrived)
                send(known, addr)
            return  # else the first copy is still being worked on: its reply answers both
        size = len(data)
        if (
            self.inflight >= MAX_DATAGRAMS_IN_FLIGHT
            or self._inflight_bytes + size > MAX_BYTES_IN_FLIGHT
        ):
            cache.abandon(key)
            self.datagrams_refused += 1
            return
        self.inflight += 1
        self._inflight_bytes += size

        def respond(reply: str) -> None:
            out = join_cookie(cookie, reply)
            cache.finish(key, out)
            self._inflight_bytes -= size
            self._done_one()
            counters.replied(op_label(body), reply, perf_counter() - arrived)
            send(out, addr)

        def abandon() -> None:
            cache.abandon(key)  # a retransmit after a restart is worked on afresh
            self._inflight_bytes -= size
            self._done_one()

        self._dispatch(body, respond, abandon)

    async def on_command(self, data: bytes) -> str:
        """A command from a stream listener (no cookie, no cache)."""
        arrived = perf_counter()
        self.inflight += 1
        try:
            reply = await self._handle(data)
        finally:
            self._done_one()
        self._counters.replied(op_label(data), reply, perf_counter() - arrived)
        return reply

    def _done_one(self) -> None:
        self.inflight -= 1
        if self.inflight == 0 and self._stopping:
            self._idle.set()

    async def wait_idle(self) -> None:
        """From now on, tell when no command is in flight; return once none is."""
        self._stopping = True
        if self.inflight:
            await self._idle.wait()
