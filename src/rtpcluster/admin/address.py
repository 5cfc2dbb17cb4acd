"""Where the admin socket is, and who may use it: parsed without opening anything.

The command line (``serve`` checks its flags before it starts, ``ctl`` connects) and the
admin client use these without importing the trio admin server.
"""

from __future__ import annotations

from rtpcluster.admin.token import is_loopback
from rtpcluster.endpoint import Endpoint, EndpointError, Kind
from rtpcluster.owner import SocketOwnerError
from rtpcluster.owner import parse_owner as parse_socket_owner

# The original RTP Cluster's admin socket: its scripts and `rtpcluster ctl` find it here.
DEFAULT_ADMIN_SOCKET = "/var/run/rtp_cluster.sock"


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
