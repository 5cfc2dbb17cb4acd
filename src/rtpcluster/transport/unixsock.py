"""Taking over a unix socket path at start-up."""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import pwd
import socket
import stat


class SocketPathBusy(OSError):
    """The path cannot be used; the message says why."""


class SocketOwnerError(ValueError):
    """An owner spec that names no user or group; the message says which."""


# Real paths of the unix sockets this process listens on (control, admin, relay). Nothing
# the process writes on request of a client (a notify relay delivery, an admin ``save``)
# may land on one of them.
_OWN_SOCKETS: set[str] = set()


def claim_socket_path(path: str) -> None:
    """Record ``path`` as a socket of this process (call it once bound)."""
    _OWN_SOCKETS.add(os.path.realpath(path))


def release_socket_path(path: str) -> None:
    _OWN_SOCKETS.discard(os.path.realpath(path))


def is_own_socket(path: str) -> bool:
    """True when ``path`` (after following symlinks) is a socket this process listens on."""
    return os.path.realpath(path) in _OWN_SOCKETS


def remove_stale_socket(path: str) -> None:
    """Remove a socket file left by a dead process; refuse a live one or any other file.

    A live server answers a connect, a dead one's file refuses it: two rtpclusters (or
    an RTPproxy) never steal each other's socket.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise SocketPathBusy(f"{path}: exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError as err:
        if err.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise SocketPathBusy(f"{path}: {err.strerror}") from None
    else:
        raise SocketPathBusy(f"{path}: another server is listening on it")
    finally:
        probe.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def parse_owner(owner: str) -> tuple[int, int]:
    """``user``, ``user:group`` or ``:group`` (names or numbers) as (uid, gid).

    -1 leaves that id unchanged; a lone user also sets the user's primary group.
    Raises :class:`SocketOwnerError` naming the missing user or group.
    """
    user, _, group = owner.strip().partition(":")
    uid = _resolve(user, "user") if user else -1
    gid = _resolve(group, "group") if group else -1
    if user and not group:
        with contextlib.suppress(KeyError):
            gid = pwd.getpwuid(uid).pw_gid
    if uid == -1 and gid == -1:
        raise SocketOwnerError(f"owner {owner!r}: expected user:group")
    return uid, gid


def _resolve(name: str, kind: str) -> int:
    if name.isdigit():
        return int(name)
    try:
        if kind == "user":
            return pwd.getpwnam(name).pw_uid
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise SocketOwnerError(f"no such {kind}: {name}") from None


def set_socket_access(path: str, mode: int, owner: tuple[int, int] | None) -> None:
    """Give the socket file at ``path`` its owner (if any), then its mode.

    Connecting to a unix socket needs write permission on the file: the mode decides
    who may talk to the server behind it.
    """
    if owner is not None:
        os.chown(path, *owner)
    os.chmod(path, mode)
