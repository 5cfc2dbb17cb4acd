"""Owners of socket files, given as ``user:group``: parsed against the local accounts.

Pure look-ups in the user and group databases (no sockets, nothing else of ours), so the
configuration, the listeners and the admin socket all parse an owner alike.
"""

from __future__ import annotations

import contextlib
import grp
import pwd


class SocketOwnerError(ValueError):
    """An owner spec that names no user or group; the message says which."""


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
