"""Which socket a member address names, as the member client will reach it.

The configuration compares member addresses as written. Two spellings of one socket
(``localhost:22222`` and ``127.0.0.1:22222``; ``/var/run/rtpp.sock`` and
``/run/rtpp.sock`` through a symlink) only show as one after resolving them, which is
what a change made at run time does before it is applied.
"""

from __future__ import annotations

import os
import socket as stdsocket

import trio

from rtpcluster.transport.endpoint import Endpoint

SocketIdentity = tuple[str, str, int]
"""("path", real path, 0) or ("dgram"/"stream", IP address, port)."""


class ResolveError(Exception):
    """A member address that names no socket now; the message gives the reason."""


async def socket_identity(endpoint: Endpoint) -> SocketIdentity:
    """The socket ``endpoint`` reaches: the first address the member client would use.

    UDP clients take the first answer of their address family, stream clients the first
    answer of any family (see ``member_client``). Raises :class:`ResolveError`.
    """
    if endpoint.kind.is_path:
        return ("path", os.path.realpath(endpoint.path), 0)
    if endpoint.kind.is_datagram:
        family = stdsocket.AF_INET6 if endpoint.kind.is_inet6 else stdsocket.AF_INET
        socktype, label = stdsocket.SOCK_DGRAM, "dgram"
    else:
        family, socktype, label = stdsocket.AF_UNSPEC, stdsocket.SOCK_STREAM, "stream"
    try:
        infos = await trio.socket.getaddrinfo(endpoint.host, endpoint.port, family, socktype)
    except OSError as exc:
        raise ResolveError(f"cannot resolve {endpoint.host!r}: {exc.strerror or exc}") from None
    if not infos:
        raise ResolveError(f"cannot resolve {endpoint.host!r}: no address")
    sockaddr = infos[0][4]
    return (label, str(sockaddr[0]), int(sockaddr[1]))
