"""Control-socket listeners on the SIP server's side.

A listener moves bytes and frames them the way RTPproxy's own socket of that kind
does; what a command means is the handler's business. Stopping a listener stops
accepting new work first and lets the commands already in flight get their replies.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket as stdsocket
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import trio

from rtpcluster.protocol import MAX_COMMAND_BYTES, LineFramer, ProtocolError
from rtpcluster.transport.endpoint import Endpoint, Kind
from rtpcluster.transport.streams import Connection, StreamServer
from rtpcluster.transport.unixsock import (
    SocketOwnerError,
    SocketPathBusy,
    claim_socket_path,
    parse_owner,
    release_socket_path,
    remove_stale_socket,
    set_socket_access,
)

log = logging.getLogger(__name__)

UDP_RCVBUF = 4 * 1024 * 1024
UNIX_SOCKET_MODE = 0o666
RECV_SIZE = 65536

# Stream connections (a <listen> may set its own, see StreamOptions).
# 256 at once per listener: Kamailio and OpenSIPS hold one per worker process (8 to 32
# by default), a B2BUA a handful; 256 leaves most of a 1,024-descriptor limit to the
# members and the admin socket even without the raised limit. At the limit the longest
# idle connection is dropped for the new one: a flood of silent connections only ever
# pushes out its own.
STREAM_MAX_CONNECTIONS = 256
# unix: carries one command per connection, written right after connecting: a peer
# silent for 10 s is not a client.
ONE_SHOT_IDLE_TIMEOUT = 10.0
# cunix:/tcp: connections stay open between calls and may be quiet for minutes on a
# quiet system; clients reconnect when dropped, and the limit above is what bounds
# descriptors, so this only reaps peers that went away without closing.
PERSISTENT_IDLE_TIMEOUT = 300.0
STREAM_RECV_SIZE = 65536
LISTEN_BACKLOG = 128

# A reply datagram and the address to send it to.
SendDatagram = Callable[[bytes, Any], None]
# (datagram, source address, send): called synchronously for every datagram; it answers
# through ``send`` (now or later) or not at all, and starts tasks of its own if it must.
DatagramHandler = Callable[[bytes, Any, SendDatagram], None]
# command text -> reply text (ending with a newline)
StreamHandler = Callable[[bytes], Awaitable[str]]


class ListenerError(Exception):
    """A listener could not be opened; the message names the endpoint."""


class StreamOptions(Protocol):
    """What a ``<listen>`` may set for a stream listener; None keeps the default."""

    @property
    def mode(self) -> int | None: ...  # unix/cunix: file mode of the socket

    @property
    def owner(self) -> str | None: ...  # unix/cunix: ``user:group`` of the socket

    @property
    def max_connections(self) -> int | None: ...

    @property
    def idle_timeout(self) -> float | None: ...


class Listener:
    """One control endpoint. ``run`` serves until cancelled or :meth:`stop_accepting`."""

    def __init__(
        self,
        endpoint: Endpoint,
        on_datagram: DatagramHandler,
        on_command: StreamHandler,
        *,
        options: StreamOptions | None = None,
    ) -> None:
        self.endpoint = endpoint
        self._on_datagram = on_datagram
        self._on_command = on_command
        self._options = options
        self._accept_scope = trio.CancelScope()
        self._streams = None if endpoint.kind.is_datagram else self._stream_server()
        # Under load, readiness of other sockets is picked up without a trio wake-up:
        # after each batch the owner's hook may drain them (see Cluster), and others may
        # call drain() to handle what waits on this one.
        self.after_batch: Callable[[], None] = _nothing
        self.drain: Callable[[], None] = _nothing

    def stop_accepting(self) -> None:
        """Take no new commands; those in flight still get their replies."""
        self._accept_scope.cancel()
        if self._streams is not None:
            self._streams.stop_accepting()

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
                        data, addr = recvfrom(RECV_SIZE)
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

    def _stream_server(self) -> StreamServer:
        one_shot = self.endpoint.kind is Kind.UNIX
        max_connections = STREAM_MAX_CONNECTIONS
        idle_timeout = ONE_SHOT_IDLE_TIMEOUT if one_shot else PERSISTENT_IDLE_TIMEOUT
        if self._options is not None:
            max_connections = self._options.max_connections or max_connections
            idle_timeout = self._options.idle_timeout or idle_timeout
        return StreamServer(
            str(self.endpoint),
            self._serve_one_shot if one_shot else self._serve_persistent,
            max_connections=max_connections,
            idle_timeout=idle_timeout,
        )

    def _socket_access(self) -> tuple[int, tuple[int, int] | None]:
        """The mode and (uid, gid) the socket file gets."""
        options = self._options
        mode = UNIX_SOCKET_MODE if options is None or options.mode is None else options.mode
        if options is None or not options.owner:
            return mode, None
        try:
            return mode, parse_owner(options.owner)
        except SocketOwnerError as exc:
            raise ListenerError(f"cannot listen on {self.endpoint}: {exc}") from None

    async def _run_unix(self, task_status: trio.TaskStatus[None]) -> None:
        path = self.endpoint.path
        mode, owner = self._socket_access()
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
            # The SIP server usually runs as a user of its own. By default a unix control
            # socket is open to every local user, as one on loopback UDP is; a <listen>
            # with mode and owner narrows that.
            try:
                set_socket_access(path, mode, owner)
            except OSError as exc:
                given = f" and owner {self._options.owner}" if owner and self._options else ""
                raise ListenerError(
                    f"cannot listen on {self.endpoint}: cannot set mode {mode:04o}{given}: "
                    f"{exc.strerror}"
                ) from None
            claim_socket_path(path)
            sock.listen(LISTEN_BACKLOG)
            await self._serve_streams([trio.SocketListener(sock)], task_status)
        finally:
            sock.close()
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
        assert self._streams is not None
        await self._streams.serve(listeners, task_status=task_status)

    async def _serve_one_shot(self, connection: Connection) -> None:
        """RTPproxy ``unix:``: the first read is the whole command; reply, then close."""
        data = await connection.receive_some(MAX_COMMAND_BYTES)
        if data:
            reply = await self._on_command(data)
            await connection.send_all(reply.encode())

    async def _serve_persistent(self, connection: Connection) -> None:
        """``cunix:``/``tcp:``: one command per line, replies in order, many per connection."""
        framer = LineFramer()
        while data := await connection.receive_some(STREAM_RECV_SIZE):
            try:
                lines = framer.feed(data)
            except ProtocolError as exc:
                await connection.send_all(f"{exc.reply}\n".encode())
                return  # like RTPproxy: an over-long line ends the connection
            for line in lines:
                reply = await self._on_command(line)
                await connection.send_all(reply.encode())


def _nothing() -> None:
    pass
