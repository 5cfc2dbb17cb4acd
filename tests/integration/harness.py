"""Run a cluster in-process against real RTPproxies, and talk to it over real sockets."""

from __future__ import annotations

import itertools
import socket as stdsocket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio

from rtpcluster.config import ClusterConfig, Config, MemberConfig
from rtpcluster.service import ServeOptions, Service, run_service
from rtpcluster.transport.endpoint import Endpoint
from tests.rtpproxies import RtpProxy, free_port

FAST_TIMERS: dict[str, Any] = {
    "heartbeat_interval": 0.2,
    "offline_probe_interval": 0.2,
    "member_timeout": 0.5,
}


def member_config(name: str, proxy: RtpProxy, **fields: Any) -> MemberConfig:
    return MemberConfig.model_validate(
        {"name": name, "protocol": proxy.kind, "address": proxy.address, **fields}
    )


def cluster_config(
    proxies: Sequence[RtpProxy], listen: Sequence[str], name: str = "c1", **settings: Any
) -> ClusterConfig:
    members = [member_config(f"m{i}", p) for i, p in enumerate(proxies)]
    values: dict[str, Any] = {**FAST_TIMERS, **settings}
    if "members" in values:
        members = values.pop("members")
    return ClusterConfig(
        name=name,
        listen=[Endpoint.parse(spec) for spec in listen],
        members=members,
        **values,
    )


async def wait_online(service: Service, cluster: str, count: int) -> None:
    """Wait (bounded) until ``count`` members of the cluster are online."""
    with trio.fail_after(10):
        while True:
            members = service.running[cluster].member_list()
            if sum(m.online for m in members) >= count:
                return
            await trio.sleep(0.02)


@asynccontextmanager
async def running_service(
    *clusters: ClusterConfig, online: int | None = None, config_path: str = "unused.xml"
) -> AsyncIterator[Service]:
    options = ServeOptions(config_path=config_path, admin_socket=None, stop_grace=0.5)
    async with trio.open_nursery() as nursery:
        service: Service = await nursery.start(
            run_service, Config(clusters=list(clusters)), options
        )
        for cluster in clusters:
            await wait_online(
                service, cluster.name, len(cluster.members) if online is None else online
            )
        try:
            yield service
        finally:
            service.stop()


_cookies = itertools.count(1)


class UdpControlClient:
    """A SIP server's view of the cluster: commands in datagrams with cookies."""

    def __init__(self, endpoint: str) -> None:
        ep = Endpoint.parse(endpoint)
        family = stdsocket.AF_INET6 if ":" in ep.host else stdsocket.AF_INET
        self.sock = trio.socket.socket(family, stdsocket.SOCK_DGRAM)
        self.address = (ep.host, ep.port)

    async def send_raw(self, data: bytes) -> None:
        await self.sock.sendto(data, self.address)

    async def receive(self, timeout: float = 5.0) -> bytes:
        with trio.fail_after(timeout):
            data: bytes = await self.sock.recv(65536)
            return data

    async def command(self, text: str, cookie: str | None = None, timeout: float = 5.0) -> str:
        cookie = cookie or f"t{next(_cookies)}"
        await self.send_raw(f"{cookie} {text}".encode())
        with trio.fail_after(timeout):
            while True:
                data = (await self.sock.recv(65536)).decode()
                got, _, reply = data.partition(" ")
                if got == cookie:
                    return reply

    def close(self) -> None:
        self.sock.close()


async def stream_command(endpoint: str, text: str, newline: bool = True) -> str:
    """One command over a unix/tcp stream; for ``unix:`` the reply ends at EOF."""
    ep = Endpoint.parse(endpoint)
    if ep.kind.is_path:
        stream = await trio.open_unix_socket(ep.path)
    else:
        stream = await trio.open_tcp_stream(ep.host, ep.port)
    async with stream:
        await stream.send_all(text.encode() + (b"\n" if newline else b""))
        chunks = []
        with trio.fail_after(5):
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    break
                chunks.append(data)
                if ep.kind.value != "unix" and data.endswith(b"\n"):
                    break
        return b"".join(chunks).decode()


def port_of(reply: str) -> int:
    return int(reply.split()[0])


def owner_of(reply: str, proxies: Sequence[RtpProxy]) -> RtpProxy:
    port = port_of(reply)
    for proxy in proxies:
        if proxy.owns_port(port):
            return proxy
    raise AssertionError(f"port {port} is in no member's range: {reply!r}")


async def heartbeat_round(service: Service, cluster: str) -> None:
    """Wait until every online member of the cluster has answered one more heartbeat."""
    members = [m for m in service.running[cluster].member_list() if m.online]
    seen = {id(m): m.heartbeats for m in members}
    with trio.fail_after(10):
        while any(m.heartbeats == seen[id(m)] for m in members if m.online):
            await trio.sleep(0.01)


async def direct_command(proxy: RtpProxy, command: str) -> str:
    """A command sent straight to a member, bypassing the cluster."""
    client = UdpControlClient(proxy.control)
    try:
        return await client.command(command)
    finally:
        client.close()


@asynccontextmanager
async def udp_cluster(
    proxies: Sequence[RtpProxy], online: int | None = None, **settings: Any
) -> AsyncIterator[tuple[Service, UdpControlClient]]:
    """A running cluster ``c1`` on a free loopback UDP port, and a client of it."""
    listen = f"udp:127.0.0.1:{free_port()}"
    config = cluster_config(proxies, [listen], **settings)
    async with running_service(config, online=online) as service:
        client = UdpControlClient(listen)
        try:
            yield service, client
        finally:
            client.close()
