"""Disconnect-notification relay.

Members that cannot reach the SIP server's notify socket (it is a local unix socket)
are told to notify ``tcp:%%CC_SELF%%:<relay port>``, i.e. this relay, with a tag that
carries the socket suffix in front of the SIP server's own tag. The relay accepts
connections from member addresses only, splits the suffix off each line and writes the
tag to ``<dest_socket_prefix><suffix>``.
"""

from __future__ import annotations

import ipaddress
import logging
import socket as stdsocket
from collections.abc import Callable, Sequence

import trio

from rtpcluster.cluster.member import Member
from rtpcluster.config.models import DisconnectNotify
from rtpcluster.protocol import LineFramer, ProtocolError

log = logging.getLogger(__name__)


def _normalise(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


class NotifyRelay:
    def __init__(self, config: DisconnectNotify, members: Callable[[], Sequence[Member]]) -> None:
        self.config = config
        self._members = members
        self._targets: dict[str, trio.SocketStream] = {}
        self._target_lock = trio.Lock()
        self.delivered = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        endpoint = self.config.inbound_address
        host = None if endpoint.host in ("*", "") else endpoint.host
        listeners = await trio.open_tcp_listeners(endpoint.port, host=host)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(trio.serve_listeners, self._serve, listeners)
                task_status.started()
        finally:
            for stream in self._targets.values():
                stream.socket.close()

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

    async def _serve(self, stream: trio.SocketStream) -> None:
        async with stream:
            peer = _normalise(str(stream.socket.getpeername()[0]))
            if peer not in await self._member_addresses():
                log.warning("notify relay: refused a connection from %s (not a member)", peer)
                return
            framer = LineFramer()
            try:
                while True:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    for line in framer.feed(data):
                        await self._relay(line.decode("utf-8", "replace"))
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, ProtocolError):
                return

    async def _relay(self, line: str) -> None:
        suffix, _, tag = line.partition(" ")
        if not suffix or ".." in suffix.split("/"):
            log.warning("notify relay: bad socket suffix %r", suffix)
            return
        path = self.config.dest_socket_prefix + suffix
        payload = (tag + "\n").encode()
        last: Exception | None = None
        async with self._target_lock:
            for _attempt in range(2):
                stream = self._targets.get(path)
                try:
                    if stream is None:
                        stream = await trio.open_unix_socket(path)
                        self._targets[path] = stream
                    await stream.send_all(payload)
                    self.delivered += 1
                    return
                except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    self._targets.pop(path, None)
                    if stream is not None:
                        stream.socket.close()
                    last = exc
            log.warning("notify relay: cannot deliver to %s: %s", path, last)
