"""Run a cluster in-process against real RTPproxies, and talk to it over real sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio

from rtpcluster.config import ClusterConfig, Config, MemberConfig
from rtpcluster.endpoint import Endpoint
from rtpcluster.service import ServeOptions, Service, run_service
from testsupport import RtpProxy, UdpControlClient, free_port

FAST_TIMERS: dict[str, Any] = {
    "heartbeat_interval": 0.2,
    "offline_probe_interval": 0.2,
    "member_timeout": 0.5,
}


# The log line of member m0 of c1 taken offline, with its cause: what it left unanswered,
# or how its connection failed.
OFFLINE_WITH_CAUSE = r"c1: member m0: offline \((no answer to .+ in a row|connection failed: .+)\)"


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
