"""Clients that carry one command to a member RTPproxy and bring its reply back.

One client per member. Each keeps many commands in flight at once; a slow member only
delays the commands sent to it. A client never decides anything about routing: it
either returns the member's reply text or raises :class:`MemberTimeout` /
:class:`MemberUnavailable`.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import socket as stdsocket
from collections import deque
from collections.abc import Callable
from typing import Protocol

import trio

from rtpcluster.endpoint import Endpoint, Kind
from rtpcluster.protocol import (
    MAX_COMMAND_BYTES,
    MAX_DATAGRAM_BYTES,
    ProtocolError,
    ReplyAssembler,
    split_cookie,
)
from rtpcluster.transport.buffers import RECV_SIZE, UDP_RCVBUF
from rtpcluster.transport.pump import DatagramPump

MIN_RTO = 0.03
TIMER_TICK = 0.01  # resolution of retransmits and deadlines
# Commands sent to one UDP member and not yet answered. RTPproxy keeps the kernel's
# default receive buffer and drops datagrams beyond about 40 in flight; the rest wait.
MAX_IN_FLIGHT = 32
MAX_RTO = 0.25
# A command that does not fit in a member's 8 KiB command buffer with our cookie (or the
# newline of a stream) is answered E5 here and never sent: RTPproxy would cut a datagram
# and run its front part, or drop a stream connection. Only a command close to the limit
# from the client can grow past it on the way (our cookie, an added L<lan_address>).
TOO_LONG_REPLY = "E5\n"


class MemberError(Exception):
    """The member gave no usable reply."""


class MemberTimeout(MemberError):
    """No reply within the deadline."""


class MemberUnavailable(MemberError):
    """The member could not be reached at all (connection refused, no socket file)."""


class MemberClient(Protocol):
    @property
    def rtt(self) -> float | None:
        """Smoothed round-trip time in seconds, None before the first answer."""
        ...

    async def request(self, command: str, timeout: float, lines: int = 1) -> str:
        """Send ``command`` (no trailing newline) and return the reply text."""
        ...

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Background work of the client (a receiver); runs until cancelled."""
        ...

    def close(self) -> None: ...


class _RttEstimator:
    """Smoothed round-trip time, as TCP keeps it (RFC 6298 gains)."""

    __slots__ = ("rtt", "rttvar")

    def __init__(self) -> None:
        self.rtt: float | None = None
        self.rttvar = 0.0

    def sample(self, value: float) -> None:
        if self.rtt is None:
            self.rtt = value
            self.rttvar = value / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.rtt - value)
            self.rtt = 0.875 * self.rtt + 0.125 * value

    def rto(self) -> float:
        if self.rtt is None:
            return 0.1
        return min(MAX_RTO, max(MIN_RTO, self.rtt + 4 * self.rttvar))


_cookie_prefix = f"{os.getpid():x}{int.from_bytes(os.urandom(3), 'big'):06x}_"
_cookie_counter = itertools.count(1)


def new_cookie() -> str:
    """A cookie unique across everything this process sends to any member.

    RTPproxy caches replies by cookie alone, so a client's cookie is never reused.
    """
    return _cookie_prefix + str(next(_cookie_counter))


class _Waiter:
    __slots__ = ("event", "reply")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.reply: str | None = None


def _bind_address(cmd_out: str | None) -> tuple[str, int] | None:
    if not cmd_out:
        return None
    host, port = cmd_out, 0
    if cmd_out.startswith("["):
        host, _, rest = cmd_out[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else 0
    elif cmd_out.count(":") == 1:
        host, port_text = cmd_out.split(":")
        port = int(port_text)
    return (host, port)


ReplyCallback = Callable[[str | None], None]


class _Pending:
    """One command to a UDP member: its datagram, deadline and who wants the reply."""

    __slots__ = ("callback", "data", "deadline", "next_send", "rto", "sends", "start")

    def __init__(self, data: bytes, start: float, deadline: float, rto: float) -> None:
        self.data = data
        self.start = start
        self.deadline = deadline
        self.rto = rto
        self.next_send = min(deadline, start + rto)
        self.sends = 1
        self.callback: ReplyCallback = _ignore


def _ignore(reply: str | None) -> None:
    del reply


class UdpMemberClient:
    """UDP member: one socket, our own cookies, retransmits inside one deadline.

    The hot path is callback based: :meth:`submit` sends at once and the reply (or
    ``None`` at the deadline) is handed to a callback from the receive loop, so a command
    costs no task, event or cancel scope. One timer task retransmits and expires.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        cmd_out_address: str | None = None,
        pump: DatagramPump | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.cmd_out_address = cmd_out_address
        # Its socket is read through the cluster's pump, with the listeners' sockets.
        self._pump = pump or DatagramPump()
        self._est = _RttEstimator()
        self._pending: dict[bytes, _Pending] = {}  # by cookie
        self._work = trio.Event()  # set when the first command becomes pending
        self._in_flight = 0  # sent and not answered
        self._queued: deque[bytes] = deque()  # cookies waiting for a slot, oldest first
        self._sock: stdsocket.socket | None = None
        self._ready = trio.Event()

    @property
    def rtt(self) -> float | None:
        return self._est.rtt

    async def _open(self) -> stdsocket.socket:
        family = stdsocket.AF_INET6 if self.endpoint.kind is Kind.UDP6 else stdsocket.AF_INET
        infos = await trio.socket.getaddrinfo(
            self.endpoint.host, self.endpoint.port, family, stdsocket.SOCK_DGRAM
        )
        if not infos:
            raise MemberUnavailable(f"cannot resolve {self.endpoint}")
        family, _, _, _, sockaddr = infos[0]
        sock = stdsocket.socket(family, stdsocket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_RCVBUF, UDP_RCVBUF)
            bind = _bind_address(self.cmd_out_address)
            if bind is not None:
                sock.bind(bind)
            sock.connect(sockaddr)
        except OSError:
            sock.close()
            raise
        return sock

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        sock = await self._open()
        self._sock = sock
        self._ready.set()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._retransmit_loop)
                task_status.started()
                await self._pump.pump_replies(sock, self)
        finally:
            self._sock = None
            sock.close()
            self._expire_all()

    @property
    def awaiting_replies(self) -> bool:
        return bool(self._pending)

    def read_ready(self) -> int:
        """Hand every reply waiting on the socket to its callback, without blocking.

        Returns how many datagrams were read.
        """
        sock = self._sock
        if sock is None:
            return 0
        pending = self._pending
        recv = sock.recv
        count = 0
        while True:
            try:
                data = recv(RECV_SIZE)
                count += 1
            except BlockingIOError:
                return count
            except OSError:
                continue  # ICMP port unreachable: nobody listens; the deadline expires it
            try:
                cookie, body = split_cookie(data)
            except ProtocolError:
                continue
            entry = pending.pop(cookie, None)
            if entry is None:
                continue  # a late answer to a retransmit or an expired command
            if entry.sends == 1:
                self._est.sample(trio.current_time() - entry.start)
            self._in_flight -= 1
            if self._queued:
                self._release()
            entry.callback(body.decode("utf-8", "replace"))

    async def _retransmit_loop(self) -> None:
        """Every TIMER_TICK while commands are pending: retransmit or expire them.

        A scan of the pending commands per tick costs less than a timer per command:
        most commands are answered long before their first retransmit is due.

        The socket is read before anything expires: after a stall of this process (no
        CPU for a while on a loaded host, a paused VM) the tick and the replies that came
        meanwhile are due together, and a reply waiting in the socket must not count as
        silence. One ``recv`` that finds nothing costs about a microsecond per tick.
        """
        while True:
            if not self._pending:
                self._work = trio.Event()
                await self._work.wait()
            await trio.sleep(TIMER_TICK)
            self.read_ready()
            now = trio.current_time()
            expired: list[_Pending] = []
            for cookie, entry in list(self._pending.items()):
                if now >= entry.deadline:
                    del self._pending[cookie]
                    if entry.sends:
                        self._in_flight -= 1
                    expired.append(entry)
                    continue
                if entry.next_send > now:
                    continue
                self._send(entry.data)
                entry.sends += 1
                entry.rto = min(entry.rto * 2, MAX_RTO * 2)
                entry.next_send = min(entry.deadline, now + entry.rto)
            if expired and self._queued:
                self._release()
            for entry in expired:
                entry.callback(None)

    def _send(self, data: bytes) -> None:
        sock = self._sock
        if sock is not None:
            try:  # noqa: SIM105 - not contextlib.suppress: this is the hot path
                sock.send(data)
            except OSError:
                pass  # a full buffer or an ICMP error: the retransmit covers it

    def _expire_all(self) -> None:
        pending, self._pending = self._pending, {}
        self._in_flight = 0
        self._queued.clear()
        for entry in pending.values():
            entry.callback(None)

    def submit(self, command: str, timeout: float, callback: ReplyCallback) -> None:
        """Send now; ``callback(reply)`` later, or ``callback(None)`` at the deadline."""
        if self._sock is None:
            callback(None)  # not running: nothing can answer
            return
        cookie = new_cookie().encode()
        data = cookie + b" " + command.encode()
        if len(data) > MAX_DATAGRAM_BYTES:
            callback(TOO_LONG_REPLY)
            return
        now = trio.current_time()
        rto = self._est.rto()
        entry = _Pending(data, now, now + timeout, rto)
        entry.callback = callback
        if not self._pending:
            self._work.set()
        self._pending[cookie] = entry
        if self._in_flight < MAX_IN_FLIGHT:
            self._in_flight += 1
            self._send(entry.data)
        else:
            entry.sends = 0
            entry.next_send = math.inf
            self._queued.append(cookie)

    def _release(self) -> None:
        """Send queued commands while fewer than MAX_IN_FLIGHT are unanswered."""
        now = trio.current_time()
        while self._queued and self._in_flight < MAX_IN_FLIGHT:
            entry = self._pending.get(self._queued.popleft())
            if entry is None:
                continue  # expired while it waited
            self._in_flight += 1
            entry.sends = 1
            entry.start = now
            entry.next_send = min(entry.deadline, now + entry.rto)
            self._send(entry.data)

    async def request(self, command: str, timeout: float, lines: int = 1) -> str:
        del lines  # a datagram reply is always whole
        done = trio.Event()
        result: list[str | None] = []

        def deliver(reply: str | None) -> None:
            result.append(reply)
            done.set()

        self.submit(command, timeout, deliver)
        await done.wait()
        reply = result[0]
        if reply is None:
            raise MemberTimeout(f"{self.endpoint}: no reply in {timeout:.3f} s")
        return reply

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()


def _too_long_for_stream(command: str) -> bool:
    """Does ``command`` with its newline overflow RTPproxy's 8 KiB stream buffer?"""
    if len(command) * 4 < MAX_COMMAND_BYTES:  # UTF-8 takes at most 4 bytes a character
        return False
    return len(command.encode()) + 1 > MAX_COMMAND_BYTES


async def _open_stream(endpoint: Endpoint, cmd_out_address: str | None = None) -> trio.SocketStream:
    try:
        if endpoint.kind.is_path:
            return await trio.open_unix_socket(endpoint.path)
        bind = _bind_address(cmd_out_address)
        local = bind[0] if bind is not None else None
        return await trio.open_tcp_stream(endpoint.host, endpoint.port, local_address=local)
    except OSError as exc:
        raise MemberUnavailable(f"{endpoint}: {exc.strerror or exc}") from None


class UnixOneShotClient:
    """``unix`` member: one connection per command, as RTPproxy's ``unix:`` socket wants.

    The command goes out with a newline, so a ``cunix:`` socket serves too; the reply
    ends at the expected number of lines or at EOF.
    """

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._est = _RttEstimator()

    @property
    def rtt(self) -> float | None:
        return self._est.rtt

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()

    async def request(self, command: str, timeout: float, lines: int = 1) -> str:
        if _too_long_for_stream(command):
            return TOO_LONG_REPLY
        start = trio.current_time()
        with trio.move_on_after(timeout):
            stream = await _open_stream(self.endpoint)
            async with stream:
                try:
                    await stream.send_all(command.encode() + b"\n")
                except trio.BrokenResourceError:  # EPIPE or ECONNRESET: it hung up on us
                    raise MemberUnavailable(f"{self.endpoint}: closed without a reply") from None
                assembler = ReplyAssembler()
                received = False
                while True:
                    try:
                        data = await stream.receive_some(RECV_SIZE)
                    except trio.BrokenResourceError:  # a reset: what came may be cut short
                        raise MemberUnavailable(
                            f"{self.endpoint}: closed without a reply"
                        ) from None
                    if data:
                        received = True
                        assembler.feed(data)
                    elif not received:
                        raise MemberUnavailable(f"{self.endpoint}: closed without a reply")
                    else:
                        assembler.feed(b"\n")  # EOF ends the last line
                    reply = assembler.pop(lines)
                    if reply is not None:
                        self._est.sample(trio.current_time() - start)
                        return reply
                    if not data:
                        raise MemberUnavailable(f"{self.endpoint}: closed without a reply")
        raise MemberTimeout(f"{self.endpoint}: no reply in {timeout:.3f} s")

    def close(self) -> None:
        pass


class StreamMemberClient:
    """``cunix``/``tcp``/``tcp6`` member: one persistent connection, replies in order.

    Replies carry no cookie, so they are matched to requests by order. When a command
    times out the connection is out of step and is dropped; the next command reconnects.
    """

    def __init__(self, endpoint: Endpoint, cmd_out_address: str | None = None) -> None:
        self.endpoint = endpoint
        self.cmd_out_address = cmd_out_address
        self._est = _RttEstimator()
        self._stream: trio.SocketStream | None = None
        self._pending: deque[tuple[_Waiter, int]] = deque()
        self._send_lock = trio.Lock()
        self._assembler = ReplyAssembler()
        self._nursery: trio.Nursery | None = None
        self._generation = 0

    @property
    def rtt(self) -> float | None:
        return self._est.rtt

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    async def _reader(self, stream: trio.SocketStream, generation: int) -> None:
        try:
            while True:
                data = await stream.receive_some(RECV_SIZE)
                if not data:
                    break
                self._assembler.feed(data)
                while self._pending:
                    waiter, lines = self._pending[0]
                    reply = self._assembler.pop(lines)
                    if reply is None:
                        break
                    self._pending.popleft()
                    waiter.reply = reply
                    waiter.event.set()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            if generation == self._generation:
                self._drop()

    def _drop(self) -> None:
        """Forget the connection and wake everyone waiting on it."""
        self._generation += 1
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.socket.close()
        self._assembler = ReplyAssembler()
        while self._pending:
            waiter, _ = self._pending.popleft()
            waiter.event.set()

    async def _connect(self) -> trio.SocketStream:
        if self._stream is not None:
            return self._stream
        if self._nursery is None:
            raise MemberUnavailable(f"{self.endpoint}: client not running")
        stream = await _open_stream(self.endpoint, self.cmd_out_address)
        self._stream = stream
        self._assembler = ReplyAssembler()
        self._nursery.start_soon(self._reader, stream, self._generation)
        return stream

    async def request(self, command: str, timeout: float, lines: int = 1) -> str:
        if _too_long_for_stream(command):
            return TOO_LONG_REPLY
        start = trio.current_time()
        waiter = _Waiter()
        with trio.move_on_after(timeout) as scope:
            async with self._send_lock:
                stream = await self._connect()
                self._pending.append((waiter, lines))
                try:
                    await stream.send_all(command.encode() + b"\n")
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    self._drop()
                    raise MemberUnavailable(f"{self.endpoint}: connection lost") from None
            await waiter.event.wait()
        if waiter.reply is not None:
            self._est.sample(trio.current_time() - start)
            return waiter.reply
        if scope.cancelled_caught:
            self._drop()
            raise MemberTimeout(f"{self.endpoint}: no reply in {timeout:.3f} s")
        raise MemberUnavailable(f"{self.endpoint}: connection lost")

    def close(self) -> None:
        self._drop()


def make_client(
    endpoint: Endpoint, cmd_out_address: str | None = None, pump: DatagramPump | None = None
) -> MemberClient:
    """The client that speaks to a member on ``endpoint``; a UDP one reads through ``pump``."""
    if endpoint.kind.is_datagram:
        return UdpMemberClient(endpoint, cmd_out_address, pump)
    if endpoint.kind is Kind.UNIX:
        return UnixOneShotClient(endpoint)
    return StreamMemberClient(endpoint, cmd_out_address)
