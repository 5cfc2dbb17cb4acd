"""Disconnect-notification tags: what a member is given instead of the SIP server's tag.

For a notify socket under ``dest_socket_prefix`` the router asks the member to notify
the relay (``tcp:%%CC_SELF%%:<relay port>``) with a tag this process issued::

    <suffix> <mac> <original tag>

``suffix`` is the socket name after the prefix, ``mac`` the first 16 bytes (32 hex
digits) of HMAC-SHA256 over prefix, suffix and original tag, keyed with a key only this
process knows (random per process, or kept in ``<key_file>``). The relay
(:mod:`rtpcluster.cluster.notify`) delivers a line only when :func:`verify_line` accepts
it. Pure functions and the key file; no sockets, no trio: the router calls
:func:`relay_notify_args` on the command path.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import logging
import os
import re
import secrets
import stat
from dataclasses import dataclass
from urllib.parse import quote, unquote_to_bytes

from rtpcluster.config.models import DisconnectNotify

log = logging.getLogger(__name__)

NOTIFY_WILDCARD_HOST = "%%CC_SELF%%"

KEY_BYTES = 32  # HMAC-SHA256 key: the hash's block-size half, as RFC 2104 suggests
# 16 bytes of the MAC: a forger needs about 2**128 tries per accepted line; as 32 hex digits
# the tag grows by 33 characters only.
MAC_BYTES = 16
MAC_HEX = 2 * MAC_BYTES
# Longest original tag (decoded) that is relayed. SIP servers send short tags (Kamailio a
# dialog id, the Sippy B2BUA "r <call number>"); 1 KiB keeps the U well inside RTPproxy's
# 8 KiB command limit even URL-encoded (x3).
MAX_TAG_BYTES = 1024
# Longest socket suffix: a unix socket path has 107 bytes at most anyway.
MAX_SUFFIX_CHARS = 107
_MAC_DOMAIN = b"rtpcluster disconnect notify v1"
# A suffix is one or more file names of this charset, separated by "/".
_NAME = re.compile(r"[A-Za-z0-9._-]+\Z")
_HEX_KEY = re.compile(rb"[0-9a-fA-F]{64}\Z")


def valid_suffix(suffix: str) -> bool:
    """A relative path of plain file names: no "..", ".", empty part, or odd character."""
    if not suffix or len(suffix) > MAX_SUFFIX_CHARS:
        return False
    return all(
        part not in (".", "..") and _NAME.match(part) is not None for part in suffix.split("/")
    )


def _mac(key: bytes, prefix: str, suffix: str, tag: bytes) -> bytes:
    message = b"\0".join((_MAC_DOMAIN, prefix.encode(), suffix.encode(), tag))
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:MAC_HEX].encode()


def issue_tag(key: bytes, prefix: str, suffix: str, tag: bytes) -> bytes | None:
    """The tag a member is given for a notification of ``tag`` to ``prefix + suffix``.

    None when it cannot be relayed: a suffix outside the file-name charset, or a tag
    that would not come back as one line (CR, LF, NUL) or is too long.
    """
    if not valid_suffix(suffix) or len(tag) > MAX_TAG_BYTES:
        return None
    if b"\n" in tag or b"\r" in tag or b"\0" in tag:
        return None
    return b"%s %s %s" % (suffix.encode(), _mac(key, prefix, suffix, tag), tag)


@dataclass(frozen=True)
class Notification:
    """A verified line: deliver ``tag`` to ``prefix + suffix``."""

    suffix: str
    tag: bytes


def verify_line(key: bytes, prefix: str, line: bytes) -> Notification | None:
    """The notification a line from a member carries, or None unless we issued its tag."""
    parts = line.split(b" ", 2)
    if len(parts) != 3 or len(parts[1]) != MAC_HEX:
        return None
    raw_suffix, mac, tag = parts
    try:
        suffix = raw_suffix.decode("ascii")
    except UnicodeDecodeError:
        return None
    if not valid_suffix(suffix):
        return None
    if not hmac.compare_digest(mac, _mac(key, prefix, suffix, tag)):
        return None
    return Notification(suffix, tag)


class KeyFileError(OSError):
    """The ``<key_file>`` cannot be used; the message names it and says why."""


def load_key_file(path: str) -> bytes:
    """The key kept in ``path`` (64 hex digits); a new one is written if it is missing.

    Refused: a symlink, anything but a regular file, a file of another user, or one that
    group or others may read or write (the key is what makes tags unforgeable).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return _create_key_file(path)
    except OSError as exc:
        reason = "is a symlink" if exc.errno == errno.ELOOP else exc.strerror
        raise KeyFileError(f"key_file {path}: {reason}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileError(f"key_file {path}: not a regular file")
        if info.st_uid != os.geteuid():
            raise KeyFileError(
                f"key_file {path}: owned by uid {info.st_uid}, not by this user ({os.geteuid()})"
            )
        if info.st_mode & 0o077:
            raise KeyFileError(
                f"key_file {path}: mode {stat.S_IMODE(info.st_mode):04o} lets other users"
                " read or change the key; chmod 600 it"
            )
        text = os.read(fd, 256).strip()
    finally:
        os.close(fd)
    if not _HEX_KEY.match(text):
        raise KeyFileError(f"key_file {path}: expected {2 * KEY_BYTES} hex digits")
    return bytes.fromhex(text.decode())


def _create_key_file(path: str) -> bytes:
    key = secrets.token_bytes(KEY_BYTES)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        return load_key_file(path)  # created meanwhile (another cluster of this process)
    except OSError as exc:
        raise KeyFileError(f"key_file {path}: cannot create it: {exc.strerror}") from None
    with os.fdopen(fd, "w") as file:
        file.write(key.hex() + "\n")
    log.info("disconnect notify: wrote a new key to %s", path)
    return key


# Keys by key file; None: the key of this process, new at every start (tags issued before
# a restart are then unknown and dropped).
_KEYS: dict[str | None, bytes] = {None: secrets.token_bytes(KEY_BYTES)}


def tag_key(config: DisconnectNotify) -> bytes:
    """The key tags of this relay are made with; a key file is read once per process."""
    key = _KEYS.get(config.key_file)
    if key is None:
        assert config.key_file is not None
        key = _KEYS[config.key_file] = load_key_file(config.key_file)
    return key


def relay_notify_args(
    config: DisconnectNotify, notify_socket: str, notify_tag: str
) -> tuple[str, str] | None:
    """Notify socket and tag to give a member instead of the SIP server's own.

    ``notify_tag`` as it came in the command (URL-encoded). None when the socket is not
    under the prefix or the notification cannot be relayed: the caller strips the pair.
    """
    prefix = config.dest_socket_prefix
    if not notify_socket.startswith(prefix):
        return None
    try:
        key = tag_key(config)
    except KeyFileError:
        return None  # reported when the relay starts
    issued = issue_tag(key, prefix, notify_socket[len(prefix) :], unquote_to_bytes(notify_tag))
    if issued is None:
        return None
    target = f"tcp:{NOTIFY_WILDCARD_HOST}:{config.inbound_address.port}"
    return target, quote(issued, safe="")
