"""StreamServer: the one accept loop for every stream socket of the service.

Control sockets (``unix:``, ``cunix:``, ``tcp:``), the admin socket and the notify relay
all serve connections through it, so each of them gets the same defences:

- a connection limit: at the limit, the connection idle the longest is dropped to make
  room; when none is idle, the new one is closed at once;
- an idle timeout on every read and a write timeout on every write, so a peer that
  connects and says nothing, or never reads its replies, holds a descriptor for a
  bounded time only;
- accept(2) failures for lack of descriptors are logged once per burst, not once per
  retry, and free a descriptor by dropping the longest-idle connection;
- :meth:`StreamServer.stop_accepting` for a graceful stop: no new connection, idle ones
  closed, a command being worked on still gets its reply.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Awaitable, Callable, Sequence

import trio

from rtpcluster.logthrottle import LogThrottle

log = logging.getLogger(__name__)

# accept(2) errors that mean "out of resources, try again later".
ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# Seconds between accept attempts while out of descriptors: the loop must not spin.
ACCEPT_RETRY = 0.1
# At most one line a minute about failing accept(2) calls, and one about recovering.
ACCEPT_LOG_INTERVAL = 60.0
# Defaults, overridden per server. 256 connections: a SIP server uses one per worker
# (Kamailio's default is 8 to 32 children); 60 s idle: RTPproxy clients send a command
# at least every few seconds while calls run, and reconnect when dropped.
DEFAULT_MAX_CONNECTIONS = 256
DEFAULT_IDLE_TIMEOUT = 60.0
DEFAULT_WRITE_TIMEOUT = 5.0

ConnectionHandler = Callable[["Connection"], Awaitable[None]]


class Connection:
    """One accepted stream, read and written with the server's timeouts."""

    __slots__ = ("_server", "_wait", "last_active", "peer", "stream")

    def __init__(self, server: StreamServer, stream: trio.SocketStream) -> None:
        self._server = server
        self.stream = stream
        self.last_active = trio.current_time()
        self._wait: trio.CancelScope | None = None  # set while waiting for the peer
        try:
            self.peer: object = stream.socket.getpeername()
        except OSError:
            self.peer = None

    @property
    def idle(self) -> bool:
        """True while waiting for the peer to send (nothing of theirs is being worked on)."""
        return self._wait is not None

    async def receive_some(self, max_bytes: int) -> bytes:
        """The next bytes from the peer; ``b""`` at end of input, idle timeout or stop."""
        if self._server.stopping:
            return b""
        with trio.CancelScope(deadline=trio.current_time() + self._server.idle_timeout) as wait:
            self._wait = wait
            try:
                data = await self.stream.receive_some(max_bytes)
            finally:
                self._wait = None
        if wait.cancelled_caught:
            return b""
        self.last_active = trio.current_time()
        return data

    async def send_all(self, data: bytes) -> None:
        """Send, or raise BrokenResourceError if the peer does not read for a while."""
        with trio.move_on_after(self._server.write_timeout) as write:
            await self.stream.send_all(data)
        if write.cancelled_caught:
            raise trio.BrokenResourceError("peer does not read its replies")
        self.last_active = trio.current_time()

    def close_if_idle(self) -> bool:
        """End a connection waiting for its peer; its handler sees end of input."""
        if self._wait is None:
            return False
        self._wait.cancel()
        return True


class StreamServer:
    """Serves ``handler(connection)`` for each connection accepted on the listeners."""

    def __init__(
        self,
        name: str,
        handler: ConnectionHandler,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        write_timeout: float = DEFAULT_WRITE_TIMEOUT,
    ) -> None:
        self.name = name
        self._handler = handler
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.write_timeout = write_timeout
        self.stopping = False
        self._accepting = trio.CancelScope()
        self._connections: dict[Connection, None] = {}  # insertion order: oldest first
        self.dropped = 0  # connections closed to make room, or refused at the limit
        self._accept_failures = 0  # failed accept(2) calls in the current burst
        self._accept_log = LogThrottle(ACCEPT_LOG_INTERVAL)

    def __len__(self) -> int:
        return len(self._connections)

    def stop_accepting(self) -> None:
        """No new connection; idle ones end, a command being worked on gets its reply."""
        self.stopping = True
        self._accepting.cancel()
        for connection in list(self._connections):
            connection.close_if_idle()

    async def serve(
        self,
        listeners: Sequence[trio.SocketListener],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept until cancelled or stopped; connections still open are served out."""
        async with trio.open_nursery() as connections:
            try:
                with self._accepting:
                    async with trio.open_nursery() as acceptors:
                        for listener in listeners:
                            acceptors.start_soon(self._accept_loop, listener, connections)
                        task_status.started()
            finally:
                for listener in listeners:
                    listener.socket.close()

    async def _accept_loop(self, listener: trio.SocketListener, connections: trio.Nursery) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in ACCEPT_CAPACITY_ERRNOS:
                    raise
                self._accept_failed(exc)
                await trio.sleep(ACCEPT_RETRY)
                continue
            if (
                self._accept_failures
                and self._accept_log.allow("again", trio.current_time()) is not None
            ):
                log.warning(
                    "%s: accepting again after %d failed attempts",
                    self.name,
                    self._accept_failures,
                )
                self._accept_failures = 0
            if len(self._connections) >= self.max_connections and not self._drop_oldest_idle():
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    log.warning(
                        "%s: %d connections, none idle: refused a new one (%d so far)",
                        self.name,
                        len(self._connections),
                        self.dropped,
                    )
                stream.socket.close()
                continue
            connections.start_soon(self._serve_one, Connection(self, stream))

    def _accept_failed(self, exc: OSError) -> None:
        # Out of descriptors for good (more connections allowed than descriptors), every
        # retry frees one by a drop, accepts once and fails again: the lines about it
        # are throttled, or a sustained shortage would log ten of each per second.
        self._accept_failures += 1
        if self._accept_log.allow("failed", trio.current_time()) is not None:
            log.error(
                "%s: accept failed: %s; retrying every %.1f s, dropping idle connections",
                self.name,
                exc.strerror or exc,
                ACCEPT_RETRY,
            )
        self._drop_oldest_idle()

    def _drop_oldest_idle(self) -> bool:
        idle = [c for c in self._connections if c.idle]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c.last_active)
        oldest.close_if_idle()
        # Forget it now: its task ends at its next checkpoint, and the new connection
        # must find the room made for it.
        self._connections.pop(oldest, None)
        self.dropped += 1
        return True

    async def _serve_one(self, connection: Connection) -> None:
        self._connections[connection] = None
        try:
            await self._handler(connection)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            log.debug("%s: connection ended: %s", self.name, exc)
        finally:
            self._connections.pop(connection, None)
            connection.stream.socket.close()
