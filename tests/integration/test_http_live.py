"""The HTTP endpoint of a running service with real RTPproxy members (rtp-io).

Metrics are parsed with prometheus_client's own text parser; member state changes are
awaited on the member's event, then the endpoint is asked.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from rtpcluster.admin.commands import run_command
from rtpcluster.cluster.control import ControlError
from rtpcluster.config import ClusterConfig, Config, save_config
from rtpcluster.config.models import http_endpoint
from rtpcluster.service import ServeOptions, Service, run_service
from tests.conftest import MemberFactory
from tests.http_client import http_get
from tests.integration.harness import cluster_config, wait_online
from testsupport import RtpProxy, UdpControlClient, free_port

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Endpoint:
    def __init__(self, service: Service, port: int, control: str) -> None:
        self.service = service
        self.port = port
        self.control = control

    async def metrics(self) -> Samples:
        reply = await http_get(self.port, "/metrics")
        assert reply.status == 200
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(reply.text)
            for s in family.samples
        }

    async def member_offline(self, name: str, cluster: str = "c1") -> None:
        member = self.service.running[cluster].members[name]
        with trio.fail_after(15):
            while member.online:
                await member.state_changed.wait()


@asynccontextmanager
async def http_service(
    proxies: list[RtpProxy], config_path: str = "unused.xml"
) -> AsyncIterator[Endpoint]:
    control = f"udp:127.0.0.1:{free_port()}"
    config: ClusterConfig = cluster_config(proxies, [control])
    port = free_port(socket.SOCK_STREAM)
    options = ServeOptions(
        config_path=config_path,
        admin_socket=None,
        stop_grace=0.2,
        http=http_endpoint(f"127.0.0.1:{port}"),
    )
    async with trio.open_nursery() as nursery:
        service: Service = await nursery.start(run_service, Config(clusters=[config]), options)
        await wait_online(service, "c1", len(proxies))
        try:
            yield Endpoint(service, port, control)
        finally:
            service.stop()


def member_key(name: str, member: str, **more: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return (name, frozenset({"cluster": "c1", "member": member, **more}.items()))


async def test_member_up_follows_a_killed_member(rtpproxy: MemberFactory) -> None:
    proxies = [rtpproxy(), rtpproxy()]
    async with http_service(proxies) as endpoint:
        got = await endpoint.metrics()
        assert got[member_key("rtpcluster_member_up", "m0")] == 1
        assert got[member_key("rtpcluster_member_up", "m1")] == 1
        assert got[member_key("rtpcluster_member_status", "m0", status="ACTIVE")] == 1
        assert got[member_key("rtpcluster_member_rtt_seconds", "m0")] > 0
        ready = await http_get(endpoint.port, "/ready")
        assert (ready.status, ready.text) == (200, "ready: 1 cluster\n")

        proxies[0].kill()
        await endpoint.member_offline("m0")
        got = await endpoint.metrics()
        assert got[member_key("rtpcluster_member_up", "m0")] == 0
        assert got[member_key("rtpcluster_member_up", "m1")] == 1
        assert (await http_get(endpoint.port, "/ready")).status == 200  # m1 takes calls

        proxies[1].kill()
        await endpoint.member_offline("m1")
        assert (await endpoint.metrics())[member_key("rtpcluster_member_up", "m1")] == 0
        ready = await http_get(endpoint.port, "/ready")
        assert (ready.status, ready.text) == (503, "no member taking new calls in cluster c1\n")
        assert (await http_get(endpoint.port, "/healthz")).status == 200


async def new_calls(endpoint: Endpoint, count: int) -> None:
    client = UdpControlClient(endpoint.control)
    try:
        for i in range(count):
            reply = await client.command(f"U call{i}@test 127.0.0.1 4000 from{i}")
            assert not reply.startswith("E"), reply
    finally:
        client.close()


async def test_tracked_calls_follow_real_calls(rtpproxy: MemberFactory) -> None:
    async with http_service([rtpproxy(), rtpproxy()]) as endpoint:
        before = await endpoint.metrics()
        assert before[("rtpcluster_calls_tracked", frozenset({("cluster", "c1")}))] == 0
        await new_calls(endpoint, 6)
        got = await endpoint.metrics()
        assert got[("rtpcluster_calls_tracked", frozenset({("cluster", "c1")}))] == 6
        per_member = [got[member_key("rtpcluster_member_tracked_calls", m)] for m in ("m0", "m1")]
        assert sum(per_member) == 6
        sessions = [got[member_key("rtpcluster_member_sessions", m)] for m in ("m0", "m1")]
        assert sum(sessions) >= 6


@pytest.mark.xfail(strict=True, reason="the executors count new calls once issue 10 lands")
async def test_new_calls_total_grows_by_the_calls_made(rtpproxy: MemberFactory) -> None:
    async with http_service([rtpproxy(), rtpproxy()]) as endpoint:
        key = ("rtpcluster_new_calls_total", frozenset({("cluster", "c1"), ("result", "placed")}))
        before = (await endpoint.metrics())[key]
        await new_calls(endpoint, 5)
        assert (await endpoint.metrics())[key] == before + 5


async def test_api_serves_the_ls_json_document_of_the_same_service(
    rtpproxy: MemberFactory,
) -> None:
    async with http_service([rtpproxy(), rtpproxy()]) as endpoint:
        reply = await http_get(endpoint.port, "/api/v1/clusters")
        assert reply.status == 200 and reply.headers["content-type"] == "application/json"
        api = json.loads(reply.body)
        admin = json.loads("\n".join((await run_command(endpoint.service, "ls --json")).lines))
        assert api.keys() == admin.keys() == {"clusters", "session_store"}
        assert api["session_store"] == admin["session_store"]
        assert api["session_store"]["url"] == "memory"
        [api_cluster], [admin_cluster] = api["clusters"], admin["clusters"]
        assert api_cluster.keys() == admin_cluster.keys()
        for api_member, admin_member in zip(
            api_cluster["members"], admin_cluster["members"], strict=True
        ):
            assert api_member.keys() == admin_member.keys()
            for key in ("name", "address", "online", "status", "weight", "capacity"):
                assert api_member[key] == admin_member[key]
        one = await http_get(endpoint.port, "/api/v1/clusters/c1")
        assert json.loads(one.body)["name"] == "c1"
        assert (await http_get(endpoint.port, "/api/v1/clusters/c2")).status == 404


async def test_ready_and_api_follow_reloads_refused_or_applied(
    rtpproxy: MemberFactory, tmp_path: Path
) -> None:
    """A reload refused at binding leaves /ready and the API as they were; one that adds a
    cluster without members makes /ready name it."""
    proxies = [rtpproxy(), rtpproxy()]
    config_file = tmp_path / "rtp_cluster.xml"
    async with http_service(proxies, config_path=str(config_file)) as endpoint:
        c1 = endpoint.service.running["c1"].config
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
            holder.bind(("127.0.0.1", 0))  # another program holds this port
            busy = f"udp:127.0.0.1:{holder.getsockname()[1]}"
            save_config(Config(clusters=[c1, cluster_config([], [busy], name="c2")]), config_file)
            refusal = f"reload failed, nothing changed: c2: cannot listen on {busy}: "
            with pytest.raises(ControlError, match=re.escape(refusal)):
                await endpoint.service.reload()
        ready = await http_get(endpoint.port, "/ready")
        assert (ready.status, ready.text) == (200, "ready: 1 cluster\n")
        api = json.loads((await http_get(endpoint.port, "/api/v1/clusters")).body)
        assert [c["name"] for c in api["clusters"]] == ["c1"]
        assert [m["online"] for m in api["clusters"][0]["members"]] == [True, True]

        spare = f"udp:127.0.0.1:{free_port()}"
        save_config(Config(clusters=[c1, cluster_config([], [spare], name="c2")]), config_file)
        await endpoint.service.reload()
        ready = await http_get(endpoint.port, "/ready")
        assert (ready.status, ready.text) == (503, "no member taking new calls in cluster c2\n")
        api = json.loads((await http_get(endpoint.port, "/api/v1/clusters")).body)
        assert [c["name"] for c in api["clusters"]] == ["c1", "c2"]
