"""Clients that carry one command to a member RTPproxy and bring its reply back.

One client per member. Each keeps many commands in flight at once; a slow member only
delays the commands sent to it. A client never decides anything about routing: it
either returns the member's reply text or raises :class:`MemberTimeout` /
:class:`MemberUnavailable`.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket as stdsocket
from collections import deque
from typing import Protocol

import trio

from rtpcluster.protocol import ProtocolError, ReplyAssembler, split_cookie
from rtpcluster.transport.endpoint import Endpoint, Kind
from rtpcluster.transport.listeners import UDP_RCVBUF, send_datagram

RECV_SIZE = 65536
MIN_RTO = 0.03
MAX_RTO = 0.25


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


_cookie_prefix = f"{os.getpid():x}{int.from_bytes(os.urandom(3), 'big'):06x}"
_cookie_counter = itertools.count(1)


def new_cookie() -> str:
    """A cookie unique across everything this process sends to any member.

    RTPproxy caches replies by cookie alone, so a client's cookie is never reused.
    """
    return f"{_cookie_prefix}_{next(_cookie_counter)}"


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


class UdpMemberClient:
    """UDP member: one socket, our own cookies, retransmits inside one deadline."""

    def __init__(self, endpoint: Endpoint, cmd_out_address: str | None = None) -> None:
        self.endpoint = endpoint
        self.cmd_out_address = cmd_out_address
        self._est = _RttEstimator()
        self._waiters: dict[str, _Waiter] = {}
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
        task_status.started()
        waiters = self._waiters
        recv = sock.recv
        try:
            while True:
                await trio.lowlevel.wait_readable(sock)
                while True:
                    try:
                        data = recv(RECV_SIZE)
                    except BlockingIOError:
                        break
                    except OSError:
                        continue  # ICMP port unreachable: nobody listens; waiters time out
                    try:
                        cookie, body = split_cookie(data)
                    except ProtocolError:
                        continue
                    waiter = waiters.pop(cookie.decode("latin-1"), None)
                    if waiter is not None:
                        waiter.reply = body.decode("utf-8", "replace")
                        waiter.event.set()
        finally:
            self._sock = None
            sock.close()

    async def request(self, command: str, timeout: float, lines: int = 1) -> str:
        del lines  # a datagram reply is always whole
        if self._sock is None:
            with trio.move_on_after(timeout):
                await self._ready.wait()
            if self._sock is None:
                raise MemberUnavailable(f"no socket to {self.endpoint}")
        sock = self._sock
        cookie = new_cookie()
        waiter = _Waiter()
        self._waiters[cookie] = waiter
        data = f"{cookie} {command}".encode()
        start = trio.current_time()
        deadline = start + timeout
        rto = self._est.rto()
        sends = 0
        try:
            while True:
                await send_datagram(sock, data)
                sends += 1
                with trio.move_on_at(min(deadline, trio.current_time() + rto)):
                    await waiter.event.wait()
                if waiter.reply is not None:
                    if sends == 1:
                        self._est.sample(trio.current_time() - start)
                    return waiter.reply
                if trio.current_time() >= deadline:
                    raise MemberTimeout(f"{self.endpoint}: no reply in {timeout:.3f} s")
                rto = min(rto * 2, MAX_RTO * 2)
        finally:
            self._waiters.pop(cookie, None)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()


async def _open_stream(endpoint: Endpoint) -> trio.SocketStream:
    try:
        if endpoint.kind.is_path:
            return await trio.open_unix_socket(endpoint.path)
        return await trio.open_tcp_stream(endpoint.host, endpoint.port)
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
        start = trio.current_time()
        with trio.move_on_after(timeout):
            stream = await _open_stream(self.endpoint)
            async with stream:
                await stream.send_all(command.encode() + b"\n")
                assembler = ReplyAssembler()
                while True:
                    data = await stream.receive_some(RECV_SIZE)
                    if data:
                        assembler.feed(data)
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

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
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
        stream = await _open_stream(self.endpoint)
        self._stream = stream
        self._assembler = ReplyAssembler()
        self._nursery.start_soon(self._reader, stream, self._generation)
        return stream

    async def request(self, command: str, timeout: float, lines: int = 1) -> str:
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


def make_client(endpoint: Endpoint, cmd_out_address: str | None = None) -> MemberClient:
    """The client that speaks to a member on ``endpoint``."""
    if endpoint.kind.is_datagram:
        return UdpMemberClient(endpoint, cmd_out_address)
    if endpoint.kind is Kind.UNIX:
        return UnixOneShotClient(endpoint)
    return StreamMemberClient(endpoint)
