"""Disconnect-notification relay: session-timeout notices from members to the SIP server.

A SIP server asks for a notification on a unix socket (``U ... /var/run/b2bua.sock tag``)
that a member on another host, or in another process, cannot reach. For a socket under
``dest_socket_prefix`` the router asks the member to notify this relay instead
(``tcp:%%CC_SELF%%:<relay port>``), with a tag this process issued::

    <suffix> <mac> <original tag>

``suffix`` is the socket name after the prefix, ``mac`` the first 16 bytes (32 hex
digits) of HMAC-SHA256 over prefix, suffix and original tag, keyed with a key only this
process knows. RTPproxy writes that tag back, one line per timed-out session. The relay
delivers a line only when its MAC verifies, and then writes only the original tag to
``<dest_socket_prefix><suffix>``, so whoever can connect to the relay can at most repeat a
notification this process asked for: no free text reaches any socket.

Before delivery the destination is resolved (symlinks followed) and must stay under the
prefix and must not be one of this process's own sockets (control or admin). Each
destination has its own bounded queue and writer task with a write timeout, so a SIP
server that accepts and never reads delays only its own notifications. Failures are
counted and logged at most once per destination (or peer) per interval.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import ipaddress
import logging
import os
import re
import secrets
import socket as stdsocket
import stat
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote_to_bytes

import trio

from rtpcluster.cluster.member import Member
from rtpcluster.config.models import DisconnectNotify
from rtpcluster.logthrottle import LogThrottle
from rtpcluster.protocol import MAX_COMMAND_BYTES, LineFramer, ProtocolError
from rtpcluster.transport.streams import Connection, StreamServer
from rtpcluster.transport.unixsock import is_own_socket

log = logging.getLogger(__name__)

NOTIFY_WILDCARD_HOST = "%%CC_SELF%%"

# --- tags ----------------------------------------------------------------------------------

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


def resolve_destination(prefix: str, suffix: str) -> str | None:
    """The real path a notification for ``suffix`` goes to, or None if outside the prefix.

    Symlinks are followed: the result must still start with the (resolved) prefix.
    """
    directory, start = os.path.split(prefix)
    root = os.path.realpath(directory or ".")
    inside = os.path.join(root, start) if start else root.rstrip("/") + "/"
    resolved = os.path.realpath(prefix + suffix)
    if not resolved.startswith(inside) or resolved == inside:
        return None
    return resolved


# --- the relay -----------------------------------------------------------------------------

# Relay connections come from members, one per RTPproxy. RTPproxy keeps its connection
# and writes a notification without looking for a close first: a line sent on a
# connection we closed is lost. So connections stay open long (a day), and 64 of them
# bound the descriptors.
RELAY_MAX_CONNECTIONS = 64
RELAY_IDLE_TIMEOUT = 86400.0
RELAY_WRITE_TIMEOUT = 5.0  # we never write to a member; StreamServer wants a value
READ_SIZE = 16384
# Per destination: notifications waiting (a burst of timeouts at once, e.g. after a
# network cut, is hundreds), how long one write may take before the destination counts
# as stuck, how long a connect may take, and how long an unused connection stays open.
DESTINATION_QUEUE = 1024
WRITE_TIMEOUT = 2.0
CONNECT_TIMEOUT = 2.0
DESTINATION_IDLE = 60.0
# Distinct destinations at once: a SIP server has one notify socket, a host a few.
MAX_DESTINATIONS = 64
# Warnings of one kind for one destination or peer: at most one per this many seconds.
WARN_INTERVAL = 10.0
# Replies a destination sends back (the B2BUA answers each line): read and dropped, at
# most this many bytes before each write.
DRAIN_BYTES = 65536


def _normalise(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


class _Destination:
    """One unix socket notifications go to: its queue and, while open, its connection."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.queue_in, self.queue_out = trio.open_memory_channel[bytes](DESTINATION_QUEUE)
        self.sock: stdsocket.socket | None = None
        self.stream: trio.SocketStream | None = None

    def close(self) -> None:
        if self.stream is not None:
            self.stream.socket.close()
        self.sock = None
        self.stream = None

    def peer_closed(self) -> bool:
        """Drop what the peer sent back; True if it closed the connection meanwhile.

        Checked before each write: a line written to a connection the peer has already
        closed would be lost without an error.
        """
        assert self.sock is not None
        drained = 0
        while drained < DRAIN_BYTES:
            try:
                data = self.sock.recv(READ_SIZE, stdsocket.MSG_DONTWAIT)
            except BlockingIOError:
                return False
            except OSError:
                return True
            if not data:
                return True
            drained += len(data)
        return False


class NotifyRelay:
    """Accepts members' notification connections and delivers verified tags."""

    def __init__(
        self,
        config: DisconnectNotify,
        members: Callable[[], Sequence[Member]],
    ) -> None:
        self.config = config
        self._members = members
        self._key = b""  # set by run()
        self._destinations: dict[str, _Destination] = {}
        self._throttle = LogThrottle(WARN_INTERVAL)
        self._nursery: trio.Nursery | None = None
        self.server = StreamServer(
            "notify relay",
            self._serve,
            max_connections=RELAY_MAX_CONNECTIONS,
            idle_timeout=RELAY_IDLE_TIMEOUT,
            write_timeout=RELAY_WRITE_TIMEOUT,
        )
        self.delivered = 0  # tags written to a destination
        self.rejected = 0  # lines whose tag this process did not issue, or malformed
        self.refused = 0  # verified lines for a destination outside the prefix or our own
        self.dropped = 0  # verified lines not delivered: queue full, no connection, stuck

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            self._key = tag_key(self.config)
        except KeyFileError as exc:
            raise KeyFileError(f"disconnect_notify {exc}") from None
        endpoint = self.config.inbound_address
        host = None if endpoint.host in ("*", "") else endpoint.host
        try:
            listeners = await trio.open_tcp_listeners(endpoint.port, host=host)
        except OSError as exc:
            raise OSError(
                exc.errno, f"disconnect_notify {endpoint}: {exc.strerror or exc}"
            ) from None
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(self.server.serve, listeners)
                task_status.started()
        finally:
            for destination in self._destinations.values():
                destination.close()
            self._destinations.clear()

    # --- reading members' lines ------------------------------------------------------------

    async def _member_addresses(self) -> set[str]:
        addresses: set[str] = set()
        for member in self._members():
            address = member.config.address
            if address.kind.is_path:
                continue
            try:
                infos = await trio.socket.getaddrinfo(address.host, None, 0, stdsocket.SOCK_STREAM)
            except OSError:
                continue
            addresses.update(_normalise(str(info[4][0])) for info in infos)
        return addresses

    async def _serve(self, connection: Connection) -> None:
        peer_address = connection.peer
        peer = _normalise(str(peer_address[0])) if isinstance(peer_address, tuple) else "?"
        if peer not in await self._member_addresses():
            self._warn(("refused peer", peer), "refused a connection from %s (not a member)", peer)
            return
        framer = LineFramer()
        while True:
            data = await connection.receive_some(READ_SIZE)
            if not data:
                return
            try:
                lines = framer.feed(data)
            except ProtocolError:
                self.rejected += 1
                self._warn(
                    ("long line", peer),
                    "line from %s longer than %d bytes: connection closed",
                    peer,
                    MAX_COMMAND_BYTES,
                )
                return
            for line in lines:
                self._relay(line, peer)

    def _relay(self, line: bytes, peer: str) -> None:
        prefix = self.config.dest_socket_prefix
        notification = verify_line(self._key, prefix, line)
        if notification is None:
            self.rejected += 1
            self._warn(
                ("rejected", peer),
                "dropped a line from %s: not a tag this process issued",
                peer,
            )
            return
        path = resolve_destination(prefix, notification.suffix)
        if path is None or is_own_socket(path):
            self.refused += 1
            where = prefix + notification.suffix
            self._warn(
                ("refused", where),
                "not delivering to %s: %s",
                where,
                "outside dest_socket_prefix" if path is None else "a socket of rtpcluster",
            )
            return
        destination = self._destinations.get(path)
        if destination is None:
            if len(self._destinations) >= MAX_DESTINATIONS:
                self._drop(path, f"more than {MAX_DESTINATIONS} destinations at once")
                return
            destination = self._destinations[path] = _Destination(path)
            assert self._nursery is not None
            self._nursery.start_soon(self._deliver, destination)
        try:
            destination.queue_in.send_nowait(notification.tag + b"\n")
        except trio.WouldBlock:
            self._drop(path, f"{DESTINATION_QUEUE} notifications waiting")

    # --- delivering --------------------------------------------------------------------------

    async def _deliver(self, destination: _Destination) -> None:
        """Writer of one destination; ends (and forgets it) after a while unused."""
        try:
            while True:
                payload = None
                with trio.move_on_after(DESTINATION_IDLE):
                    payload = await destination.queue_out.receive()
                if payload is None:
                    return
                await self._write(destination, payload)
        finally:
            # No checkpoint from the last receive to here: nothing was queued meanwhile.
            destination.close()
            if self._destinations.get(destination.path) is destination:
                del self._destinations[destination.path]

    async def _write(self, destination: _Destination, payload: bytes) -> None:
        failure = ""
        for _attempt in range(2):  # a kept connection may have been closed: one reconnect
            if destination.stream is not None and destination.peer_closed():
                destination.close()
            if destination.stream is None:
                failure = await self._connect(destination)
                if failure:
                    break
            assert destination.stream is not None
            with trio.move_on_after(WRITE_TIMEOUT) as write:
                try:
                    await destination.stream.send_all(payload)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    destination.close()
                    failure = str(exc) or type(exc).__name__
                    continue
                self.delivered += 1
                log.debug("notify relay: delivered %r to %s", payload[:-1], destination.path)
                return
            if write.cancelled_caught:
                destination.close()
                failure = f"does not read (write took more than {WRITE_TIMEOUT:g} s)"
                break
        self._drop(destination.path, failure)

    async def _connect(self, destination: _Destination) -> str:
        """Open the destination's connection; the reason on failure, else ""."""
        sock = stdsocket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM)
        sock.setblocking(False)
        tsock = trio.socket.from_stdlib_socket(sock)
        with trio.move_on_after(CONNECT_TIMEOUT) as connecting:
            try:
                await tsock.connect(destination.path)
            except OSError as exc:
                tsock.close()
                return exc.strerror or str(exc)
        if connecting.cancelled_caught:
            tsock.close()
            return f"connect took more than {CONNECT_TIMEOUT:g} s"
        destination.sock = sock
        destination.stream = trio.SocketStream(tsock)
        return ""

    # --- accounting --------------------------------------------------------------------------

    def _drop(self, path: str, reason: str) -> None:
        self.dropped += 1
        self._warn(("drop", path), "notification for %s dropped: %s", path, reason)

    def _warn(self, key: Hashable, message: str, *args: object) -> None:
        suppressed = self._throttle.allow(key, trio.current_time())
        if suppressed is None:
            return
        if suppressed:
            log.warning(
                "notify relay: " + message + " (and %d more since the last such line)",
                *args,
                suppressed,
            )
        else:
            log.warning("notify relay: " + message, *args)
