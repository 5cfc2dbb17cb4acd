"""The admin token: a shared secret in a file that the service and ``rtpcluster ctl`` read.

With a token, the first line on every admin connection must be ``auth <token>``; the
server compares in constant time and answers ``OK`` or ``ERROR: authentication
failed`` (and closes). A TCP admin socket on a non-loopback address is refused without
one: anyone who can reach it could otherwise create clusters and write files.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import stat

from rtpcluster.transport.endpoint import Endpoint

# 16 characters at the least: a short token can be guessed over the network. 256 at
# most: the auth line is the only input read from a client that has not authenticated,
# and it must stay small.
MIN_TOKEN_LENGTH = 16
MAX_TOKEN_LENGTH = 256
AUTH_WORD = "auth"


class TokenFileError(Exception):
    """The token file cannot be used; the message names it and says why."""


def read_token_file(path: str) -> str:
    """The token in ``path`` (surrounding white space dropped).

    Refused: a file every local user may read or write (the token would be theirs),
    anything but a regular file, a token shorter than 16 or longer than 256 characters,
    or one with spaces or control characters (the auth line splits on spaces).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as err:
        raise TokenFileError(f"token file {path}: {err.strerror or err}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise TokenFileError(f"token file {path}: not a regular file")
        mode = stat.S_IMODE(info.st_mode)
        if mode & (stat.S_IROTH | stat.S_IWOTH):
            raise TokenFileError(
                f"token file {path}: readable or writable by every user (mode {mode:04o}); "
                f"chmod o-rw {path}"
            )
        data = os.read(fd, MAX_TOKEN_LENGTH + 64)
    finally:
        os.close(fd)
    try:
        token = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise TokenFileError(f"token file {path}: not ASCII text") from None
    if not MIN_TOKEN_LENGTH <= len(token) <= MAX_TOKEN_LENGTH:
        raise TokenFileError(
            f"token file {path}: the token must have {MIN_TOKEN_LENGTH} to "
            f"{MAX_TOKEN_LENGTH} characters, it has {len(token)}"
        )
    if not token.isprintable() or any(char.isspace() for char in token):
        raise TokenFileError(f"token file {path}: the token must not contain spaces")
    return token


def is_loopback(endpoint: Endpoint) -> bool:
    """Whether a TCP endpoint only accepts connections from this host.

    ``*``, ``0.0.0.0`` and ``::`` are every interface. A host name counts as loopback
    when every address it resolves to is (``localhost``); one that cannot be resolved
    does not.
    """
    host = endpoint.host
    if host in ("", "*"):
        return False
    try:
        return _loopback_ip(host)
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, endpoint.port, type=socket.SOCK_STREAM)
    except OSError:
        return False
    return bool(infos) and all(_loopback_ip(str(info[4][0])) for info in infos)


def _loopback_ip(text: str) -> bool:
    ip = ipaddress.ip_address(text.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback
