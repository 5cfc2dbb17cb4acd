"""A small blocking admin client, as ``rtpcluster ctl`` uses it.

It speaks like the original client: send ``<command>\\nquit\\n``, read until the server
closes, and judge the reply by its last line. With a token, ``auth <token>`` goes first
and its one-line reply is taken off before the command's reply is returned.
"""

from __future__ import annotations

import socket
import time

from rtpcluster.admin.server import AdminSocketError, parse_admin_spec
from rtpcluster.admin.token import AUTH_WORD

DEFAULT_TIMEOUT = 30.0


class AdminConnectError(Exception):
    """The admin socket could not be reached; the message names it."""


class AdminTimeoutError(Exception):
    """The server did not finish its reply in time."""


def _connect(spec: str, timeout: float) -> socket.socket:
    try:
        endpoint = parse_admin_spec(spec)
    except AdminSocketError as err:
        raise AdminConnectError(str(err)) from None
    try:
        if endpoint.kind.is_path:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(endpoint.path)
            except BaseException:
                sock.close()
                raise
            return sock
        return socket.create_connection(endpoint.sockaddr, timeout=timeout)
    except OSError as err:
        reason = err.strerror or str(err) or type(err).__name__
        raise AdminConnectError(f"cannot connect to admin socket {spec}: {reason}") from None


def send_command(
    spec: str, line: str, timeout: float = DEFAULT_TIMEOUT, token: str | None = None
) -> tuple[list[str], bool]:
    """Send one command line; return the reply lines and whether the last one is ``OK``.

    ``timeout`` bounds the whole exchange, not each read. With ``token`` the connection
    authenticates first, and the command goes only once the server said ``OK`` to that
    (a refused client is cut off, and over TCP what it sent unread would reset the
    connection before the refusal could be read); a refusal is returned as the reply.
    """
    deadline = time.monotonic() + timeout
    sock = _connect(spec, timeout)
    received = bytearray()

    def receive() -> bool:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        data = sock.recv(65536)
        received.extend(data)
        return bool(data)

    with sock:
        try:
            if token is not None:
                sock.sendall(f"{AUTH_WORD} {token}\n".encode())
                while b"\n" not in received and receive():
                    pass
                answer, _, rest = bytes(received).partition(b"\n")
                if answer.rstrip(b"\r") != b"OK":
                    text = answer.decode("utf-8", errors="replace").strip()
                    return [text or "ERROR: the server closed the connection"], False
                received[:] = rest
            sock.sendall(line.strip().encode() + b"\nquit\n")
            while receive():
                pass
        except TimeoutError:
            raise AdminTimeoutError(
                f"admin socket {spec}: no complete reply within {timeout:g} s"
            ) from None
        except OSError as err:
            raise AdminConnectError(f"admin socket {spec}: {err.strerror or err}") from None
    lines = received.decode("utf-8", errors="replace").splitlines()
    return lines, bool(lines) and lines[-1] == "OK"
