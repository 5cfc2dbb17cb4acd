"""The admin socket: a line-oriented stream server, one task per connection.

A client writes a command line; the server answers with reply lines, the last of which
is ``OK`` or ``ERROR: <why>``. Several commands may follow on one connection; ``quit``
or end of input closes it. The original client sends ``<command>\\nquit\\n`` and reads
until the server closes, which this serves unchanged.

With a token (``--admin-token-file``) the first line must be ``auth <token>``: see
:mod:`rtpcluster.admin.token`. A TCP socket on an address other than loopback is
refused without one.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import socket as stdsocket
from collections.abc import Sequence
from dataclasses import dataclass

import trio

from rtpcluster.admin.commands import run_command
from rtpcluster.admin.registry import Reply
from rtpcluster.admin.token import (
    AUTH_WORD,
    MAX_TOKEN_LENGTH,
    TokenFileError,
    is_loopback,
    read_token_file,
)
from rtpcluster.cluster.control import ServiceControl
from rtpcluster.logthrottle import LogThrottle
from rtpcluster.transport.endpoint import Endpoint, EndpointError, Kind
from rtpcluster.transport.streams import Connection, StreamServer
from rtpcluster.transport.unixsock import (
    SocketOwnerError,
    SocketPathBusy,
    claim_socket_path,
    release_socket_path,
    remove_stale_socket,
    set_socket_access,
)
from rtpcluster.transport.unixsock import parse_owner as parse_socket_owner

log = logging.getLogger(__name__)

DEFAULT_ADMIN_SOCKET = "/var/run/rtp_cluster.sock"
MAX_LINE = 64 * 1024
SOCKET_MODE = 0o660
RECV_SIZE = 4096
LISTEN_BACKLOG = 64
# 32 connections: `rtpcluster ctl` opens one per command and closes it; that leaves room
# for several scripts and interactive sessions at once. At the limit the longest idle
# one is dropped, so a flood of silent connections cannot lock the operator out.
MAX_CONNECTIONS = 32
# An operator may sit in an interactive session (socat, nc) between commands.
IDLE_TIMEOUT = 300.0
# Before authentication: the auth line must come within 10 s and fit in 512 bytes
# ("auth " and a token of at most 256 characters, with room for a CR).
AUTH_TIMEOUT = 10.0
MAX_AUTH_LINE = 512
assert len(AUTH_WORD) + 1 + MAX_TOKEN_LENGTH < MAX_AUTH_LINE
# One warning per client address per minute for failed authentications.
AUTH_LOG_INTERVAL = 60.0


class AdminSocketError(Exception):
    """The admin socket cannot be set up; the message names it and says why."""


@dataclass(frozen=True, slots=True)
class AdminAccess:
    """What a connection must present, and what ``save`` may touch."""

    token: str | None = None  # None: no authentication (unix socket, loopback TCP)
    save_dirs: tuple[str, ...] = ()  # () : the configuration file's directory


def parse_admin_spec(spec: str) -> Endpoint:
    """``path`` (absolute or relative), ``unix:path``, ``tcp:HOST:PORT`` or ``tcp6:[::1]:PORT``."""
    try:
        endpoint = Endpoint.parse(spec, default_kind=Kind.UNIX)
    except EndpointError as err:
        raise AdminSocketError(f"admin socket {spec!r}: {err}") from None
    if endpoint.kind is Kind.CUNIX:
        endpoint = Endpoint(kind=Kind.UNIX, path=endpoint.path)
    if endpoint.kind.is_datagram:
        raise AdminSocketError(f"admin socket {spec!r}: must be a unix path or tcp:HOST:PORT")
    return endpoint


def check_exposure(endpoint: Endpoint, token: str | None) -> None:
    """Refuse a TCP admin socket reachable from other hosts when no token guards it."""
    if endpoint.kind.is_path or token is not None or is_loopback(endpoint):
        return
    raise AdminSocketError(
        f"admin socket {endpoint}: not a loopback address, so other hosts could run every "
        f"admin command; give --admin-token-file, or listen on 127.0.0.1"
    )


def parse_owner(owner: str) -> tuple[int, int]:
    """``user``, ``user:group`` or ``:group`` (names or numbers) as (uid, gid).

    -1 leaves that id unchanged; a lone user also sets the user's primary group.
    """
    try:
        return parse_socket_owner(owner)
    except SocketOwnerError as err:
        message = str(err)
        if not message.startswith("owner "):
            message = f"owner {owner!r}: {message}"
        raise AdminSocketError(message) from None


class _LineTooLong(Exception):
    pass


class _LineReader:
    """Lines (without ``\\r\\n``) from a connection, each at most ``limit`` bytes."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._buffer = bytearray()
        self._ended = False

    async def line(self, limit: int) -> str | None:
        """The next line; None at end of input (a last line without newline counts)."""
        while True:
            newline = self._buffer.find(b"\n")
            if 0 <= newline <= limit:
                line = bytes(self._buffer[:newline])
                del self._buffer[: newline + 1]
                return line.rstrip(b"\r").decode("utf-8", errors="replace")
            if newline > limit or len(self._buffer) > limit:
                raise _LineTooLong
            if self._ended:
                rest = bytes(self._buffer).rstrip(b"\r")
                self._buffer.clear()
                return rest.decode("utf-8", errors="replace") if rest.strip() else None
            data = await self._connection.receive_some(RECV_SIZE)
            if not data:
                self._ended = True
            self._buffer += data


async def _send_lines(connection: Connection, lines: Sequence[str]) -> None:
    if lines:
        await connection.send_all(("\n".join(lines) + "\n").encode())


class AdminServer:
    """Serves admin connections for one control, guarded by an :class:`AdminAccess`."""

    def __init__(self, control: ServiceControl, access: AdminAccess) -> None:
        self._control = control
        self._access = access
        self._auth_log = LogThrottle(AUTH_LOG_INTERVAL)

    async def handle(self, connection: Connection) -> None:
        """Serve one admin client until it quits or hangs up."""
        reader = _LineReader(connection)
        try:
            if self._access.token is not None and not await self._authenticate(connection, reader):
                return
            while (line := await reader.line(MAX_LINE)) is not None:
                words = line.split()
                if not words:
                    continue
                if words[0].lower() == AUTH_WORD:
                    # Again after authenticating, or on a socket without a token.
                    if not self._token_matches(words):
                        await _send_lines(connection, self._auth_failed(connection).render())
                        return
                    reply = Reply()
                else:
                    reply = await run_command(self._control, line, self._access.save_dirs)
                await _send_lines(connection, reply.render())
                if reply.close:
                    return
        except _LineTooLong:
            await _send_lines(connection, ["ERROR: line too long"])

    async def _authenticate(self, connection: Connection, reader: _LineReader) -> bool:
        """Read the first line: only ``auth <token>`` lets the connection go on."""
        line: str | None = None
        with trio.move_on_after(AUTH_TIMEOUT):
            try:
                while (line := await reader.line(MAX_AUTH_LINE)) is not None and not line.strip():
                    pass
            except _LineTooLong:
                line = ""
        if line is None:
            return False  # hung up, or said nothing in time
        words = line.split()
        if words and words[0].lower() == AUTH_WORD and self._token_matches(words):
            await _send_lines(connection, ["OK"])
            return True
        if words and words[0].lower() != AUTH_WORD:
            reply = Reply(error="authentication required: send auth <token> first")
        else:
            reply = self._auth_failed(connection)
        await _send_lines(connection, reply.render())
        return False

    def _token_matches(self, words: list[str]) -> bool:
        """``auth <token>``: without a token configured there is nothing to check."""
        token = self._access.token
        if token is None:
            return True
        given = words[1] if len(words) == 2 else ""
        return hmac.compare_digest(given.encode(), token.encode())

    def _auth_failed(self, connection: Connection) -> Reply:
        peer = connection.peer[0] if isinstance(connection.peer, tuple) else "unix socket"
        suppressed = self._auth_log.allow(peer, trio.current_time())
        if suppressed is not None:
            more = f" ({suppressed} more since the last warning)" if suppressed else ""
            log.warning("admin: authentication failed from %s%s", peer, more)
        return Reply(error="authentication failed")


def _remove_stale_socket(path: str) -> None:
    try:
        remove_stale_socket(path)
    except SocketPathBusy as exc:
        raise AdminSocketError(f"admin socket {exc}") from None


async def _open_unix_listener(path: str, owner: str | None) -> trio.SocketListener:
    ids = parse_owner(owner) if owner else None
    _remove_stale_socket(path)
    sock = trio.socket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM)
    try:
        await sock.bind(path)
        set_socket_access(path, SOCKET_MODE, ids)
        sock.listen(LISTEN_BACKLOG)
        claim_socket_path(path)
    except OSError as err:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise AdminSocketError(f"admin socket {path}: {err.strerror or err}") from None
    return trio.SocketListener(sock)


async def _open_tcp_listeners(endpoint: Endpoint) -> list[trio.SocketListener]:
    try:
        host = None if endpoint.host == "*" else endpoint.host
        return await trio.open_tcp_listeners(endpoint.port, host=host)
    except OSError as err:
        raise AdminSocketError(f"admin socket {endpoint}: {err.strerror or err}") from None


async def serve_admin(
    control: ServiceControl,
    spec: str = DEFAULT_ADMIN_SOCKET,
    owner: str | None = None,
    *,
    token_file: str | None = None,
    save_dirs: Sequence[str] = (),
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``spec`` and serve admin connections until cancelled.

    A unix socket file gets mode 0660 and, with ``owner`` (``user:group``), that owner;
    a stale one left by a dead process is replaced, and the file is removed on exit.
    With ``token_file`` every connection must authenticate first; a TCP socket on a
    non-loopback address is refused without one. ``save_dirs`` are the directories
    ``save PATH`` may write into (default: the configuration file's).
    Raises :class:`AdminSocketError` before ``task_status.started()`` if it cannot listen.
    """
    endpoint = parse_admin_spec(spec)
    try:
        token = read_token_file(token_file) if token_file is not None else None
    except TokenFileError as err:
        raise AdminSocketError(str(err)) from None
    check_exposure(endpoint, token)
    server = AdminServer(control, AdminAccess(token=token, save_dirs=tuple(save_dirs)))
    streams = StreamServer(
        "admin", server.handle, max_connections=MAX_CONNECTIONS, idle_timeout=IDLE_TIMEOUT
    )
    path = endpoint.path if endpoint.kind.is_path else None
    if path is not None:
        listeners = [await _open_unix_listener(path, owner)]
    else:
        listeners = list(await _open_tcp_listeners(endpoint))
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(streams.serve, listeners)
            guarded = "token required" if token is not None else "no token"
            log.info("admin interface listening on %s (%s)", spec, guarded)
            task_status.started()
    finally:
        # No awaits here: under cancellation they would raise before the cleanup is done.
        if path is not None:
            release_socket_path(path)
            with contextlib.suppress(OSError):
                os.unlink(path)
        for listener in listeners:
            listener.socket.close()
