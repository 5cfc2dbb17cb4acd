"""The admin socket: a line-oriented stream server, one task per connection.

A client writes a command line; the server answers with reply lines, the last of which
is ``OK`` or ``ERROR: <why>``. Several commands may follow on one connection; ``quit``
or end of input closes it. The original client sends ``<command>\\nquit\\n`` and reads
until the server closes, which this serves unchanged.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import logging
import os
import pwd
import socket as stdsocket
from collections.abc import AsyncIterator

import trio

from rtpcluster.admin.commands import run_command
from rtpcluster.cluster.control import ServiceControl
from rtpcluster.transport.endpoint import Endpoint, EndpointError, Kind
from rtpcluster.transport.unixsock import (
    SocketPathBusy,
    claim_socket_path,
    release_socket_path,
    remove_stale_socket,
)

log = logging.getLogger(__name__)

DEFAULT_ADMIN_SOCKET = "/var/run/rtp_cluster.sock"
MAX_LINE = 64 * 1024
SOCKET_MODE = 0o660


class AdminSocketError(Exception):
    """The admin socket cannot be set up; the message names it and says why."""


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


def parse_owner(owner: str) -> tuple[int, int]:
    """``user``, ``user:group`` or ``:group`` (names or numbers) as (uid, gid).

    -1 leaves that id unchanged; a lone user also sets the user's primary group.
    """
    user, _, group = owner.partition(":")
    try:
        uid = _resolve(user, "user") if user else -1
        gid = _resolve(group, "group") if group else -1
    except KeyError as err:
        raise AdminSocketError(f"owner {owner!r}: {err.args[0]}") from None
    if user and not group:
        with contextlib.suppress(KeyError):
            gid = pwd.getpwuid(uid).pw_gid
    if uid == -1 and gid == -1:
        raise AdminSocketError(f"owner {owner!r}: expected user:group")
    return uid, gid


def _resolve(name: str, kind: str) -> int:
    """A user or group name (or number) as its id; KeyError names what is missing."""
    if name.isdigit():
        return int(name)
    try:
        if kind == "user":
            return pwd.getpwnam(name).pw_uid
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise KeyError(f"no such {kind}: {name}") from None


async def _read_lines(stream: trio.abc.ReceiveStream) -> AsyncIterator[str]:
    """Yield lines (without ``\\r\\n``) until end of input."""
    buffer = bytearray()
    while True:
        newline = buffer.find(b"\n")
        if newline >= 0:
            line = bytes(buffer[:newline])
            del buffer[: newline + 1]
            yield line.rstrip(b"\r").decode("utf-8", errors="replace")
            continue
        if len(buffer) > MAX_LINE:
            raise ValueError("line too long")
        data = await stream.receive_some(4096)
        if not data:
            if buffer.strip():
                yield bytes(buffer).rstrip(b"\r").decode("utf-8", errors="replace")
            return
        buffer += data


async def handle_connection(control: ServiceControl, stream: trio.abc.Stream) -> None:
    """Serve one admin client until it quits or hangs up."""
    async with stream:
        try:
            async for line in _read_lines(stream):
                if not line.strip():
                    continue
                reply = await run_command(control, line)
                lines = reply.render()
                if lines:
                    await stream.send_all(("\n".join(lines) + "\n").encode())
                if reply.close:
                    return
        except ValueError:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.send_all(b"ERROR: line too long\n")
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            log.debug("admin client went away")


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
        os.chmod(path, SOCKET_MODE)
        if ids is not None:
            os.chown(path, *ids)
        sock.listen(64)
        claim_socket_path(path)
    except OSError as err:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise AdminSocketError(f"admin socket {path}: {err.strerror or err}") from None
    return trio.SocketListener(sock)


async def _open_tcp_listeners(endpoint: Endpoint) -> list[trio.SocketListener]:
    try:
        return await trio.open_tcp_listeners(endpoint.port, host=endpoint.host)
    except OSError as err:
        raise AdminSocketError(f"admin socket {endpoint}: {err.strerror or err}") from None


async def serve_admin(
    control: ServiceControl,
    spec: str = DEFAULT_ADMIN_SOCKET,
    owner: str | None = None,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``spec`` and serve admin connections until cancelled.

    A unix socket file gets mode 0660 and, with ``owner`` (``user:group``), that owner;
    a stale one left by a dead process is replaced, and the file is removed on exit.
    Raises :class:`AdminSocketError` before ``task_status.started()`` if it cannot listen.
    """
    endpoint = parse_admin_spec(spec)
    path = endpoint.path if endpoint.kind.is_path else None
    if path is not None:
        listeners = [await _open_unix_listener(path, owner)]
    else:
        listeners = list(await _open_tcp_listeners(endpoint))
    try:
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(_accept_loop, control, listener, nursery)
            log.info("admin interface listening on %s", spec)
            task_status.started()
    finally:
        # No awaits here: under cancellation they would raise before the cleanup is done.
        if path is not None:
            release_socket_path(path)
            with contextlib.suppress(OSError):
                os.unlink(path)
        for listener in listeners:
            listener.socket.close()


async def _accept_loop(
    control: ServiceControl, listener: trio.SocketListener, nursery: trio.Nursery
) -> None:
    async with listener:
        while True:
            try:
                stream = await listener.accept()
            except OSError as err:
                if err.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.error("admin accept failed: %s; retrying", err)
                    await trio.sleep(0.1)
                    continue
                raise
            nursery.start_soon(handle_connection, control, stream)
