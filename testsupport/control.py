"""RTPproxy control clients for tests and benchmarks: one command, one reply.

A control socket is named the way our config and RTPproxy's ``-s`` name it:
``udp:127.0.0.1:PORT``, ``udp6:[::1]:PORT``, ``tcp:127.0.0.1:PORT``, ``unix:PATH``,
``cunix:PATH``. Datagram kinds carry a cookie and the reply is the datagram that
carries it back; ``unix:`` takes one command per connection and ends its reply at EOF;
``cunix:`` and ``tcp:`` take ``\\n``-terminated lines and answer one line each (only
udp/udp6 use cookies, in every RTPproxy release).

:func:`ask` blocks (for processes and the benchmark); :class:`UdpControlClient` and
:func:`stream_command` are trio's, for tests that run the cluster in-process. This
module parses the names itself, so that it does not depend on the code under test.
"""

from __future__ import annotations

import itertools
import socket
import struct
import time
from dataclasses import dataclass

import trio

DEFAULT_PORT = 22222  # RTPproxy's, for udp/tcp specs without a port
RECEIVE_SIZE = 65536  # a UDP datagram's maximum: no reply is cut short

_cookies = itertools.count(1)


def new_cookie() -> str:
    """A cookie no other command of this process has used (RTPproxy caches by cookie)."""
    return f"t{next(_cookies)}"


@dataclass(frozen=True)
class ControlSocket:
    """A parsed control socket name: ``kind`` and either ``host``/``port`` or ``path``."""

    kind: str
    host: str = ""
    port: int = 0
    path: str = ""

    @classmethod
    def parse(cls, spec: str) -> ControlSocket:
        kind, colon, rest = spec.partition(":")
        if not colon or not rest:
            raise ValueError(f"not a control socket: {spec!r}")
        if kind in ("unix", "cunix"):
            return cls(kind, path=rest)
        if kind not in ("udp", "udp6", "tcp", "tcp6"):
            raise ValueError(f"unknown control socket kind {kind!r} in {spec!r}")
        if rest.startswith("["):  # [v6 address] or [v6 address]:port
            host, _, after = rest[1:].partition("]")
            port = after.removeprefix(":")
        elif rest.count(":") == 1:
            host, _, port = rest.partition(":")
        else:  # a v4 address or a name without a port, or a bare v6 address
            host, port = rest, ""
        return cls(kind, host=host, port=int(port) if port else DEFAULT_PORT)

    @property
    def is_datagram(self) -> bool:
        return self.kind in ("udp", "udp6")

    @property
    def family(self) -> socket.AddressFamily:
        if self.path:
            return socket.AF_UNIX
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET


def reply_to(cookie: str, datagram: bytes) -> str | None:
    """The reply text of ``datagram`` if it carries ``cookie``, else None."""
    got, _, reply = datagram.decode(errors="replace").partition(" ")
    return reply if got == cookie else None


# --------------------------------------------------------------------------- blocking


def ask(control: str, command: str, timeout: float = 1.0) -> str | None:
    """Send one command; its reply as sent (cookie removed, newline kept).

    None when nothing came back within ``timeout`` seconds or the socket refused
    (a stopped, hung or not yet started RTPproxy).
    """
    where = ControlSocket.parse(control)
    try:
        if where.is_datagram:
            return _ask_datagram(where, command, timeout)
        return _ask_stream(where, command, timeout)
    except OSError:  # refused, reset, or timed out (TimeoutError is an OSError)
        return None


def _ask_datagram(where: ControlSocket, command: str, timeout: float) -> str | None:
    cookie = new_cookie()
    deadline = time.monotonic() + timeout
    with socket.socket(where.family, socket.SOCK_DGRAM) as sock:
        sock.connect((where.host, where.port))
        sock.send(f"{cookie} {command}".encode())
        # A late reply to an earlier command may arrive first: skip it.
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            reply = reply_to(cookie, sock.recv(RECEIVE_SIZE))
            if reply is not None:
                return reply
    return None


def _ask_stream(where: ControlSocket, command: str, timeout: float) -> str | None:
    one_shot = where.kind == "unix"
    with socket.socket(where.family, socket.SOCK_STREAM) as sock:
        if where.path:
            # With a Python timeout the socket is non-blocking, and a unix connect fails
            # at once (EAGAIN) while the listener's backlog is full; blocking, it waits
            # for room as a SIP server's would, bounded by SO_SNDTIMEO.
            seconds, fraction = divmod(timeout, 1.0)
            limit = struct.pack("ll", int(seconds), int(fraction * 1e6))  # struct timeval
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, limit)
            sock.connect(where.path)
        sock.settimeout(timeout)
        if not where.path:
            sock.connect((where.host, where.port))
        sock.sendall(command.encode() if one_shot else command.encode() + b"\n")
        chunks: list[bytes] = []
        while chunk := sock.recv(RECEIVE_SIZE):
            chunks.append(chunk)
            if not one_shot and chunk.endswith(b"\n"):
                break
    return b"".join(chunks).decode(errors="replace") or None


# --------------------------------------------------------------------------- trio


class UdpControlClient:
    """A SIP server's view of a control socket: commands in datagrams with cookies."""

    def __init__(self, endpoint: str) -> None:
        where = ControlSocket.parse(endpoint)
        self.sock = trio.socket.socket(where.family, socket.SOCK_DGRAM)
        self.address = (where.host, where.port)

    async def send_raw(self, data: bytes) -> None:
        await self.sock.sendto(data, self.address)

    async def receive(self, timeout: float = 5.0) -> bytes:
        with trio.fail_after(timeout):
            data: bytes = await self.sock.recv(RECEIVE_SIZE)
            return data

    async def command(self, text: str, cookie: str | None = None, timeout: float = 5.0) -> str:
        cookie = cookie or new_cookie()
        await self.send_raw(f"{cookie} {text}".encode())
        with trio.fail_after(timeout):
            while True:
                reply = reply_to(cookie, await self.sock.recv(RECEIVE_SIZE))
                if reply is not None:
                    return reply

    def close(self) -> None:
        self.sock.close()


async def stream_command(endpoint: str, text: str, newline: bool = True) -> str:
    """One command over a unix/cunix/tcp stream; for ``unix:`` the reply ends at EOF."""
    where = ControlSocket.parse(endpoint)
    if where.path:
        stream = await trio.open_unix_socket(where.path)
    else:
        stream = await trio.open_tcp_stream(where.host, where.port)
    async with stream:
        await stream.send_all(text.encode() + (b"\n" if newline else b""))
        chunks = []
        with trio.fail_after(5):
            while True:
                data = await stream.receive_some(RECEIVE_SIZE)
                if not data:
                    break
                chunks.append(data)
                if where.kind != "unix" and data.endswith(b"\n"):
                    break
        return b"".join(chunks).decode()
