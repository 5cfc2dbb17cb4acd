"""Disconnect-notification relay: session-timeout notices from members to the SIP server.

A SIP server asks for a notification on a unix socket (``U ... /var/run/b2bua.sock tag``)
that a member on another host, or in another process, cannot reach. For a socket under
``dest_socket_prefix`` the member is given this relay's address and a tag this process
issued (:mod:`rtpcluster.cluster.notify_tags`); RTPproxy writes that tag back, one line
per timed-out session. The relay delivers a line only when its MAC verifies, and then
writes only the original tag to ``<dest_socket_prefix><suffix>``, so whoever can connect
to the relay can at most repeat a notification this process asked for: no free text
reaches any socket.

Before delivery the destination is resolved (symlinks followed) and must stay under the
prefix and must not be one of this process's own sockets (control or admin). Each
destination has its own bounded queue and writer task with a write timeout, so a SIP
server that accepts and never reads delays only its own notifications. Failures are
counted and logged at most once per destination (or peer) per interval.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket as stdsocket
from collections.abc import Callable, Hashable, Sequence

import trio

from rtpcluster.cluster.member import Member
from rtpcluster.cluster.notify_tags import KeyFileError, tag_key, verify_line
from rtpcluster.config.models import DisconnectNotify
from rtpcluster.logthrottle import LogThrottle
from rtpcluster.protocol import MAX_COMMAND_BYTES, LineFramer, ProtocolError
from rtpcluster.transport.streams import Connection, StreamServer
from rtpcluster.transport.unixsock import is_own_socket

log = logging.getLogger(__name__)


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
