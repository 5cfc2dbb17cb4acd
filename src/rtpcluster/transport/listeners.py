"""Control-socket listeners on the SIP server's side.

A listener moves bytes and frames them the way RTPproxy's own socket of that kind
does; what a command means is the handler's business. Stopping a listener stops
accepting new work first and lets the commands already in flight get their replies.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket as stdsocket
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from rtpcluster.protocol import MAX_COMMAND_BYTES, MAX_DATAGRAM_BYTES, LineFramer, ProtocolError
from rtpcluster.transport.endpoint import Endpoint, Kind
from rtpcluster.transport.unixsock import (
    SocketPathBusy,
    claim_socket_path,
    release_socket_path,
    remove_stale_socket,
)

log = logging.getLogger(__name__)

UDP_RCVBUF = 4 * 1024 * 1024
UNIX_SOCKET_MODE = 0o666
RECV_SIZE = 65536
# One byte more than the longest datagram taken as a command: the kernel cuts a longer
# one to this size, and the handler sees by the length that it was too long (it answers
# E5). Reading no more also keeps a 64 KB flood from costing 64 KB of buffer per datagram.
DATAGRAM_RECV_SIZE = MAX_DATAGRAM_BYTES + 1

# A reply datagram and the address to send it to.
SendDatagram = Callable[[bytes, Any], None]
# (datagram, source address, send): called synchronously for every datagram; it answers
# through ``send`` (now or later) or not at all, and starts tasks of its own if it must.
DatagramHandler = Callable[[bytes, Any, SendDatagram], None]
# command text -> reply text (ending with a newline)
StreamHandler = Callable[[bytes], Awaitable[str]]


class ListenerError(Exception):
    """A listener could not be opened; the message names the endpoint."""


class Listener:
    """One control endpoint. ``run`` serves until cancelled or :meth:`stop_accepting`."""

    def __init__(
        self, endpoint: Endpoint, on_datagram: DatagramHandler, on_command: StreamHandler
    ) -> None:
        self.endpoint = endpoint
        self._on_datagram = on_datagram
        self._on_command = on_command
        self._accept_scope = trio.CancelScope()
        self._idle_scopes: set[trio.CancelScope] = set()
        self._stopping = False
        # Under load, readiness of other sockets is picked up without a trio wake-up:
        # after each batch the owner's hook may drain them (see Cluster), and others may
        # call drain() to handle what waits on this one.
        self.after_batch: Callable[[], None] = _nothing
        self.drain: Callable[[], None] = _nothing

    def stop_accepting(self) -> None:
        """Take no new commands; those in flight still get their replies."""
        self._stopping = True
        self._accept_scope.cancel()
        for scope in list(self._idle_scopes):
            scope.cancel()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        kind = self.endpoint.kind
        if kind.is_datagram:
            await self._run_udp(task_status)
        elif kind.is_path:
            await self._run_unix(task_status)
        else:
            await self._run_tcp(task_status)

    # --- datagram -------------------------------------------------------------------

    async def _run_udp(self, task_status: trio.TaskStatus[None]) -> None:
        family = stdsocket.AF_INET6 if self.endpoint.kind is Kind.UDP6 else stdsocket.AF_INET
        # A plain non-blocking socket: on the hot path every datagram waiting is read
        # per wake-up, and replies are sent without trio's per-call wrapping.
        sock = stdsocket.socket(family, stdsocket.SOCK_DGRAM)
        with sock:
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_RCVBUF, UDP_RCVBUF)
            host = self.endpoint.host
            if host == "*":
                host = "::" if family == stdsocket.AF_INET6 else "0.0.0.0"
            try:
                sock.bind((host, self.endpoint.port))
            except OSError as exc:
                raise ListenerError(f"cannot listen on {self.endpoint}: {exc.strerror}") from None
            recvfrom = sock.recvfrom
            handle = self._on_datagram

            def send(reply: bytes, addr: Any) -> None:
                try:  # noqa: SIM105 - not contextlib.suppress: this is the hot path
                    sock.sendto(reply, addr)
                except OSError:
                    pass  # a full buffer: the client retransmits

            def drain() -> None:
                """Handle every datagram waiting on the socket, without blocking."""
                while True:
                    try:
                        data, addr = recvfrom(DATAGRAM_RECV_SIZE)
                    except BlockingIOError:
                        return
                    except OSError:
                        continue
                    try:
                        handle(data, addr, send)
                    except Exception:
                        log.exception("%s: datagram handler failed", self.endpoint)

            with self._accept_scope:
                self.drain = drain
                task_status.started()
                try:
                    while True:
                        await trio.lowlevel.wait_readable(sock)
                        drain()
                        self.after_batch()
                finally:
                    self.drain = _nothing
            # Stopped accepting: keep the socket for the replies still to come, until the
            # owner cancels us.
            await trio.sleep_forever()

    # --- streams ----------------------------------------------------------------------

    async def _run_unix(self, task_status: trio.TaskStatus[None]) -> None:
        path = self.endpoint.path
        try:
            remove_stale_socket(path)
        except SocketPathBusy as exc:
            raise ListenerError(f"cannot listen on {self.endpoint.kind.value}:{exc}") from None
        sock = trio.socket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM)
        try:
            await sock.bind(path)
        except OSError as exc:
            sock.close()
            raise ListenerError(f"cannot listen on {self.endpoint}: {exc.strerror}") from None
        try:
            # The SIP server usually runs as a user of its own. A control socket on
            # loopback UDP is open to every local user; the unix one is made the same.
            os.chmod(path, UNIX_SOCKET_MODE)
            claim_socket_path(path)
            sock.listen(128)
            listener = trio.SocketListener(sock)
            await self._serve_streams([listener], task_status)
        finally:
            release_socket_path(path)
            with contextlib.suppress(OSError):
                os.unlink(path)

    async def _run_tcp(self, task_status: trio.TaskStatus[None]) -> None:
        host: str | None = self.endpoint.host
        if host == "*":
            host = None
        try:
            listeners = await trio.open_tcp_listeners(self.endpoint.port, host=host)
        except OSError as exc:
            raise ListenerError(f"cannot listen on {self.endpoint}: {exc.strerror}") from None
        await self._serve_streams(listeners, task_status)

    async def _serve_streams(
        self, listeners: list[trio.SocketListener], task_status: trio.TaskStatus[None]
    ) -> None:
        one_shot = self.endpoint.kind is Kind.UNIX
        serve = self._serve_one_shot if one_shot else self._serve_persistent
        async with trio.open_nursery() as connections:
            try:
                with self._accept_scope:
                    task_status.started()
                    async with trio.open_nursery() as acceptors:
                        for listener in listeners:
                            acceptors.start_soon(self._accept_loop, listener, connections, serve)
            finally:
                for listener in listeners:
                    await listener.aclose()

    async def _accept_loop(
        self,
        listener: trio.SocketListener,
        connections: trio.Nursery,
        serve: Callable[[trio.SocketStream], Awaitable[None]],
    ) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    await trio.sleep(0.05)
                    continue
                raise
            connections.start_soon(serve, stream)

    async def _serve_one_shot(self, stream: trio.SocketStream) -> None:
        """RTPproxy ``unix:``: the first read is the whole command; reply, then close."""
        async with stream:
            try:
                data = await stream.receive_some(MAX_COMMAND_BYTES)
                if not data:
                    return
                reply = await self._on_command(data)
                await stream.send_all(reply.encode())
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass

    async def _serve_persistent(self, stream: trio.SocketStream) -> None:
        """``cunix:``/``tcp:``: one command per line, replies in order, many per connection."""
        framer = LineFramer()
        async with stream:
            try:
                while not self._stopping:
                    idle = trio.CancelScope()
                    self._idle_scopes.add(idle)
                    data = b""
                    with idle:
                        data = await stream.receive_some(RECV_SIZE)
                    self._idle_scopes.discard(idle)
                    if idle.cancelled_caught or not data:
                        return
                    try:
                        lines = framer.feed(data)
                    except ProtocolError as exc:
                        await stream.send_all(f"{exc.reply}\n".encode())
                        return  # like RTPproxy: an over-long line ends the connection
                    for line in lines:
                        reply = await self._on_command(line)
                        await stream.send_all(reply.encode())
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass


def _nothing() -> None:
    pass
