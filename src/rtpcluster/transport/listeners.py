"""Control-socket listeners on the SIP server's side.

A listener moves bytes and frames them the way RTPproxy's own socket of that kind
does; what a command means is the handler's business. Stopping a listener stops
accepting new work first and lets the commands already in flight get their replies.
Binding (:func:`bind_endpoint`, :func:`reopen_endpoint`) and serving (:class:`Listener`)
are separate steps, so a change can bind every socket it needs before it stops anything.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket as stdsocket
import stat
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from rtpcluster.protocol import MAX_COMMAND_BYTES, MAX_DATAGRAM_BYTES, LineFramer, ProtocolError
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
# One byte more than the longest datagram taken as a command: the kernel cuts a longer
# one to this size, and the handler sees by the length that it was too long (it answers
# E5). Reading no more also keeps a 64 KB flood from costing 64 KB of buffer per datagram.
DATAGRAM_RECV_SIZE = MAX_DATAGRAM_BYTES + 1

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
    """A listener could not be opened; the message names the endpoint and the OS reason."""


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


@dataclass(frozen=True, slots=True)
class _FileAccess:
    """Who may connect to a unix socket file: its mode, and its owner if one is set."""

    mode: int
    owner: tuple[int, int] | None = None  # (uid, gid); None: left as bind(2) made it
    owner_text: str = ""  # as the <listen> gave it, for messages


class BoundSockets:
    """The bound sockets of one control endpoint, not served yet, and their options.

    Binding is the step that can fail (a busy port, a path in use), so it is a step of
    its own: a reload binds every new endpoint before it stops or changes anything. The
    holder hands the sockets to a :class:`Listener`, which closes them when it ends, or
    closes them itself.

    The sockets of an endpoint whose options change (:func:`reopen_endpoint`) are those
    of the running listener, shared: its unix socket file, and a new mode or owner of
    it, pass to this holder only when its listener starts serving (:meth:`start_serving`).
    """

    def __init__(
        self,
        endpoint: Endpoint,
        options: StreamOptions | None = None,
        *,
        datagram: stdsocket.socket | None = None,
        streams: Sequence[trio.SocketListener] = (),
        socket_file: tuple[int, int] | None = None,
        reopened: bool = False,
        new_access: _FileAccess | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.options = options
        self.datagram = datagram
        self.streams = list(streams)
        self._socket_file = socket_file  # (st_dev, st_ino) of the unix socket file
        self._owns_file = False
        self._new_access = new_access  # what a reopened file gets once served
        if socket_file is not None and not reopened:
            self._own_socket_file()  # a file it just made: nobody else's

    def _own_socket_file(self) -> None:
        path = self.endpoint.path
        _socket_file_owners[path] = self
        claim_socket_path(path)
        self._owns_file = True

    def start_serving(self) -> None:
        """Called by the listener that serves these sockets, before it takes commands.

        A reopened unix socket file gets its new mode and owner now, and this holder
        becomes the one that removes the file in the end. Setting them was tried on a
        file beside it beforehand (:func:`reopen_endpoint`); should it fail now anyway,
        the file keeps the narrower of the two modes, and the error is logged.
        """
        if self._socket_file is None or self._owns_file:
            return
        if self._new_access is not None:
            try:
                _change_access(self.endpoint.path, self._socket_file, self._new_access)
            except OSError as exc:
                log.error("%s: %s", self.endpoint, _access_failure(self._new_access, exc))
        self._own_socket_file()

    def close(self) -> None:
        """Release the sockets, and the unix socket file if it is still ours; idempotent."""
        if self.datagram is not None:
            self.datagram.close()
        for listener in self.streams:
            listener.socket.close()
        if self._owns_file and self._socket_file is not None:
            path = self.endpoint.path
            if _socket_file_owners.get(path) is self:
                del _socket_file_owners[path]
                release_socket_path(path)
                _unlink_if_same(path, self._socket_file)
        self._socket_file = None
        self._owns_file = False


# The newest BoundSockets of each unix socket path in this process. A listener that goes
# keeps its file until its last connection ends; a successor bound meanwhile has taken
# the path over (the old file was stale, or it is the same file, reopened with other
# options), and only the successor removes the file then. The inode number alone cannot
# tell: a freed one is given to the next file at once.
_socket_file_owners: dict[str, BoundSockets] = {}


async def bind_endpoint(endpoint: Endpoint, options: StreamOptions | None = None) -> BoundSockets:
    """Bind the sockets of ``endpoint`` (streams also listen); :class:`ListenerError` if not.

    A unix socket file gets the mode and owner of ``options`` before it listens.
    """
    if endpoint.kind.is_datagram:
        return _bind_udp(endpoint)
    if endpoint.kind.is_path:
        return await _bind_unix(endpoint, options)
    return await _bind_tcp(endpoint, options)


def reopen_endpoint(running: BoundSockets, options: StreamOptions | None) -> BoundSockets:
    """The sockets of a running listener, for a successor that serves them with ``options``.

    The endpoint keeps its sockets: nothing is bound again, so no connection waiting to
    be accepted is lost and no other process can take the address meanwhile. A new mode
    or owner of a unix socket file is tried first on a scratch file in the same
    directory; applying it waits for :meth:`BoundSockets.start_serving`. Raises
    :class:`ListenerError` (a bad owner, a mode or owner this process may not give, out
    of descriptors) having changed nothing.
    """
    endpoint = running.endpoint
    new_access = None
    if endpoint.kind.is_path:
        before, after = _access_of(endpoint, running.options), _access_of(endpoint, options)
        if after != before:
            if after.owner is None and before.owner is not None:
                # The attribute was removed: back to the owner a fresh bind gives it.
                after = _FileAccess(after.mode, (os.geteuid(), os.getegid()))
            _rehearse_access(endpoint, after)
            new_access = after
    try:
        datagram = None if running.datagram is None else running.datagram.dup()
        streams = [trio.SocketListener(listener.socket.dup()) for listener in running.streams]
    except OSError as exc:
        raise _cannot_listen(endpoint, exc) from None
    return BoundSockets(
        endpoint,
        options,
        datagram=datagram,
        streams=streams,
        socket_file=running._socket_file,
        reopened=True,
        new_access=new_access,
    )


def _bind_udp(endpoint: Endpoint) -> BoundSockets:
    family = stdsocket.AF_INET6 if endpoint.kind is Kind.UDP6 else stdsocket.AF_INET
    # A plain non-blocking socket: on the hot path every datagram waiting is read
    # per wake-up, and replies are sent without trio's per-call wrapping.
    sock = stdsocket.socket(family, stdsocket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_RCVBUF, UDP_RCVBUF)
        host = endpoint.host
        if host == "*":
            host = "::" if family == stdsocket.AF_INET6 else "0.0.0.0"
        sock.bind((host, endpoint.port))
    except OSError as exc:
        sock.close()
        raise _cannot_listen(endpoint, exc) from None
    return BoundSockets(endpoint, datagram=sock)


async def _bind_unix(endpoint: Endpoint, options: StreamOptions | None) -> BoundSockets:
    path = endpoint.path
    access = _access_of(endpoint, options)
    try:
        remove_stale_socket(path)
    except SocketPathBusy as exc:
        raise ListenerError(f"cannot listen on {endpoint.kind.value}:{exc}") from None
    sock = trio.socket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM)
    try:
        await sock.bind(path)
    except OSError as exc:
        sock.close()
        raise _cannot_listen(endpoint, exc) from None
    error: ListenerError
    try:
        # The SIP server usually runs as a user of its own. By default a unix control
        # socket is open to every local user, as one on loopback UDP is; a <listen>
        # with mode and owner narrows that. Set before listen(2): nobody connects
        # under the mode bind(2) gave the file.
        try:
            set_socket_access(path, access.mode, access.owner)
        except OSError as exc:
            raise ListenerError(
                f"cannot listen on {endpoint}: {_access_failure(access, exc)}"
            ) from None
        sock.listen(LISTEN_BACKLOG)
        made = os.stat(path)
    except ListenerError as exc:
        error = exc
    except OSError as exc:
        error = _cannot_listen(endpoint, exc)
    else:
        return BoundSockets(
            endpoint,
            options,
            streams=[trio.SocketListener(sock)],
            socket_file=(made.st_dev, made.st_ino),
        )
    sock.close()
    with contextlib.suppress(OSError):
        os.unlink(path)
    raise error


async def _bind_tcp(endpoint: Endpoint, options: StreamOptions | None) -> BoundSockets:
    host: str | None = endpoint.host
    if host == "*":
        host = None
    try:
        listeners = await trio.open_tcp_listeners(endpoint.port, host=host)
    except OSError as exc:
        raise _cannot_listen(endpoint, exc) from None
    return BoundSockets(endpoint, options, streams=listeners)


def _access_of(endpoint: Endpoint, options: StreamOptions | None) -> _FileAccess:
    """The mode and owner the socket file of ``endpoint`` gets with ``options``."""
    mode = UNIX_SOCKET_MODE if options is None or options.mode is None else options.mode
    if options is None or not options.owner:
        return _FileAccess(mode)
    try:
        return _FileAccess(mode, parse_owner(options.owner), options.owner)
    except SocketOwnerError as exc:
        raise ListenerError(f"cannot listen on {endpoint}: {exc}") from None


def _access_failure(access: _FileAccess, error: OSError) -> str:
    given = f" and owner {access.owner_text}" if access.owner_text else ""
    return f"cannot set mode {access.mode:04o}{given}: {error.strerror or error}"


def _rehearse_access(endpoint: Endpoint, access: _FileAccess) -> None:
    """Give ``access`` to a scratch file beside the socket: what the kernel allows there
    (chown to another user or a group this process is not in) it allows the socket too.
    """
    directory = os.path.dirname(endpoint.path) or "."
    scratch = None
    try:
        descriptor, scratch = tempfile.mkstemp(prefix=".rtpcluster-", dir=directory)
        os.close(descriptor)
        set_socket_access(scratch, access.mode, access.owner)
    except OSError as exc:
        raise ListenerError(
            f"cannot listen on {endpoint}: {_access_failure(access, exc)}"
        ) from None
    finally:
        if scratch is not None:
            with contextlib.suppress(OSError):
                os.unlink(scratch)


def _change_access(path: str, socket_file: tuple[int, int], access: _FileAccess) -> None:
    """Give the running socket file at ``path`` its new mode and owner.

    First the bits both modes share, then the owner, then the new mode: at no moment
    may anyone connect whom neither the old nor the new ``<listen>`` lets in (a new
    group with the old group bits, say).
    """
    status = os.lstat(path)
    if (status.st_dev, status.st_ino) != socket_file:
        raise FileNotFoundError(0, "the socket file was replaced by another file", path)
    os.chmod(path, stat.S_IMODE(status.st_mode) & access.mode)
    set_socket_access(path, access.mode, access.owner)


def _cannot_listen(endpoint: Endpoint, error: OSError) -> ListenerError:
    return ListenerError(f"cannot listen on {endpoint}: {error.strerror or error}")


def _unlink_if_same(path: str, socket_file: tuple[int, int]) -> None:
    """Remove ``path`` unless another file has been put there since (not ours to remove)."""
    with contextlib.suppress(OSError):
        status = os.lstat(path)
        if (status.st_dev, status.st_ino) == socket_file:
            os.unlink(path)


class Listener:
    """One control endpoint on sockets already bound (see :func:`bind_endpoint`).

    Streams are served through a :class:`StreamServer` with the connection limit and
    idle timeout of the sockets' options. ``run`` serves until cancelled, :meth:`close`
    or :meth:`stop_accepting`; it closes the sockets when it ends.
    """

    def __init__(
        self, bound: BoundSockets, on_datagram: DatagramHandler, on_command: StreamHandler
    ) -> None:
        self.endpoint = bound.endpoint
        self.bound = bound
        self._on_datagram = on_datagram
        self._on_command = on_command
        self._run_scope = trio.CancelScope()
        self._accept_scope = trio.CancelScope()
        self._streams = None if self.endpoint.kind.is_datagram else self._stream_server()
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

    def close(self) -> None:
        """Stop now: replies still in flight are not sent, the sockets are released."""
        self._run_scope.cancel()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            with self._run_scope:
                self.bound.start_serving()
                if self._streams is None:
                    await self._run_udp(task_status)
                else:
                    await self._streams.serve(self.bound.streams, task_status=task_status)
        finally:
            self.bound.close()

    # --- datagram -------------------------------------------------------------------

    async def _run_udp(self, task_status: trio.TaskStatus[None]) -> None:
        sock = self.bound.datagram
        assert sock is not None
        with sock:
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

    def _stream_server(self) -> StreamServer:
        one_shot = self.endpoint.kind is Kind.UNIX
        max_connections = STREAM_MAX_CONNECTIONS
        idle_timeout = ONE_SHOT_IDLE_TIMEOUT if one_shot else PERSISTENT_IDLE_TIMEOUT
        options = self.bound.options
        if options is not None:
            max_connections = options.max_connections or max_connections
            idle_timeout = options.idle_timeout or idle_timeout
        return StreamServer(
            str(self.endpoint),
            self._serve_one_shot if one_shot else self._serve_persistent,
            max_connections=max_connections,
            idle_timeout=idle_timeout,
        )

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
