"""The HTTP endpoint of a running service with real RTPproxy members (rtp-io).

Metrics are parsed with prometheus_client's own text parser; member state changes are
awaited on the member's event, then the endpoint is asked. The counters are checked
against what the test did to real members: calls made, a retransmit, a killed member, a
hung one, a lookup of a call the cluster does not know.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

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
from tests.integration.harness import (
    cluster_config,
    direct_command,
    member_config,
    owner_of,
    wait_online,
)
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
    proxies: list[RtpProxy], config_path: str = "unused.xml", **settings: Any
) -> AsyncIterator[Endpoint]:
    control = f"udp:127.0.0.1:{free_port()}"
    config: ClusterConfig = cluster_config(proxies, [control], **settings)
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


def cluster_key(name: str, **more: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return (name, frozenset({"cluster": "c1", **more}.items()))


def grown(before: Samples, after: Samples) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The counters that changed between two scrapes, by how much (gauges left out)."""
    return {
        key: after[key] - before.get(key, 0.0)
        for key in after
        if key[0].endswith(("_total", "_count", "_sum", "_bucket"))
        and not key[0].startswith("process_")
        and after[key] != before.get(key, 0.0)
    }


def commands(samples: Samples) -> float:
    """Every reply counted in rtpcluster_commands_total of c1."""
    return sum(
        value
        for (name, labels), value in samples.items()
        if name == "rtpcluster_commands_total" and ("cluster", "c1") in labels
    )


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


async def test_new_calls_total_grows_by_the_calls_made(rtpproxy: MemberFactory) -> None:
    async with http_service([rtpproxy(), rtpproxy()]) as endpoint:
        before = await endpoint.metrics()
        await new_calls(endpoint, 5)
        after = await endpoint.metrics()
        changed = grown(before, after)
        assert changed.pop(cluster_key("rtpcluster_new_calls_total", result="placed")) == 5
        assert changed.pop(cluster_key("rtpcluster_commands_total", op="U", result="ok")) == 5
        member_ok = [
            changed.pop(member_key("rtpcluster_member_commands_total", m, result="ok"), 0.0)
            for m in ("m0", "m1")
        ]
        assert sum(member_ok) == 5  # each offer reached one member, once
        assert changed.pop(cluster_key("rtpcluster_command_duration_seconds_count")) == 5
        assert changed.pop(cluster_key("rtpcluster_command_duration_seconds_sum")) > 0
        # nothing else counted: no failover, no refusal, no broadcast, no state change
        assert {key[0] for key in changed} <= {"rtpcluster_command_duration_seconds_bucket"}
        assert after[cluster_key("rtpcluster_command_duration_seconds_bucket", le="+Inf")] == 5


async def test_a_retransmit_is_answered_from_the_cache_and_counted_as_cached(
    rtpproxy: MemberFactory,
) -> None:
    async with http_service([rtpproxy()]) as endpoint:
        client = UdpControlClient(endpoint.control)
        try:
            await client.command("U rtx1 127.0.0.1 4000 f1")
            before = await endpoint.metrics()
            assert await client.command("D rtx1 f1", cookie="same") == "0\n"
            assert await client.command("D rtx1 f1", cookie="same") == "0\n"
        finally:
            client.close()
        changed = grown(before, await endpoint.metrics())
        assert changed[cluster_key("rtpcluster_retransmits_total")] == 1
        assert changed[cluster_key("rtpcluster_commands_total", op="D", result="ok")] == 1
        assert changed[cluster_key("rtpcluster_commands_total", op="D", result="cached")] == 1
        # the member saw the D once: the retransmit never reached it
        assert changed[member_key("rtpcluster_member_commands_total", "m0", result="ok")] == 1
        assert changed[cluster_key("rtpcluster_command_duration_seconds_count")] == 2


async def test_a_killed_member_is_down_changed_once_and_new_calls_go_elsewhere(
    rtpproxy: MemberFactory,
) -> None:
    proxies = [rtpproxy(), rtpproxy()]
    async with http_service(proxies) as endpoint:
        before = await endpoint.metrics()
        assert before[member_key("rtpcluster_member_state_changes_total", "m0")] == 1  # online
        proxies[0].kill()
        await endpoint.member_offline("m0")
        after = await endpoint.metrics()
        assert after[member_key("rtpcluster_member_up", "m0")] == 0
        changed = grown(before, after)
        assert changed[member_key("rtpcluster_member_state_changes_total", "m0")] == 1
        assert member_key("rtpcluster_member_state_changes_total", "m1") not in changed
        assert after[member_key("rtpcluster_member_downtime_seconds_total", "m0")] > 0
        assert (
            after[member_key("rtpcluster_member_downtime_seconds_total", "m1")]
            == (before[member_key("rtpcluster_member_downtime_seconds_total", "m1")])
        )

        client = UdpControlClient(endpoint.control)
        try:
            reply = await client.command("U after-kill 127.0.0.1 4000 f1")
        finally:
            client.close()
        assert owner_of(reply, proxies) is proxies[1]
        changed = grown(after, await endpoint.metrics())
        assert changed[cluster_key("rtpcluster_new_calls_total", result="placed")] == 1
        assert changed[member_key("rtpcluster_member_commands_total", "m1", result="ok")] == 1

        [cluster] = json.loads((await http_get(endpoint.port, "/api/v1/clusters")).body)["clusters"]
        m0 = cluster["members"][0]
        assert (m0["name"], m0["state"], m0["online"], m0["state_changes"]) == (
            "m0",
            "offline",
            False,
            2,
        )
        assert m0["downtime"] > 0 and m0["last_change_age"] >= 0


async def test_a_new_call_its_hung_member_leaves_unanswered_fails_over(
    rtpproxy: MemberFactory,
) -> None:
    """m1 holds one call at capacity 1, so the balancer picks m0 for the next; m0 hangs
    (SIGSTOP), its offer times out, and the call is placed on m1 after all."""
    proxies = [rtpproxy(), rtpproxy()]
    members = [member_config("m0", proxies[0]), member_config("m1", proxies[1], capacity=1)]
    async with http_service(proxies, members=members) as endpoint:
        client = UdpControlClient(endpoint.control)
        try:
            # each new call lands on m1 with probability 1/2 until m1 holds one (then
            # none does): 60 tries all missing it has odds of 2**-60
            for n in range(60):
                reply = await client.command(f"U fill{n} 127.0.0.1 4000 f1")
                if owner_of(reply, proxies) is proxies[1]:
                    break
            else:
                raise AssertionError("no call landed on m1")
            before = await endpoint.metrics()
            proxies[0].hang()
            try:
                reply = await client.command("U over 127.0.0.1 4000 f1")
            finally:
                proxies[0].unhang()
        finally:
            client.close()
        assert owner_of(reply, proxies) is proxies[1]
        changed = grown(before, await endpoint.metrics())
        assert changed[cluster_key("rtpcluster_new_calls_total", result="failover")] == 1
        assert cluster_key("rtpcluster_new_calls_total", result="placed") not in changed
        assert changed[member_key("rtpcluster_member_commands_total", "m0", result="timeout")] == 1
        assert changed[member_key("rtpcluster_member_commands_total", "m1", result="ok")] == 1
        assert changed[cluster_key("rtpcluster_commands_total", op="U", result="ok")] == 1


async def test_lookups_by_broadcast_and_the_histogram_counting_every_reply(
    rtpproxy: MemberFactory,
) -> None:
    proxies = [rtpproxy(), rtpproxy()]
    async with http_service(proxies) as endpoint:
        # a call the cluster never saw, created on m1 behind its back
        created = await direct_command(proxies[1], "U elsewhere 127.0.0.1 4000 f1")
        before = await endpoint.metrics()
        client = UdpControlClient(endpoint.control)
        try:
            assert await client.command("L nowhere 127.0.0.1 4002 f1 t1") == "0\n"
            found = await client.command("L elsewhere 127.0.0.1 4002 f1 t1")
            assert await client.command("K junk") == "E0\n"  # an error: counted too
            assert await client.command("V") == "20040107\n"  # answered here
        finally:
            client.close()
        assert owner_of(found, proxies) is owner_of(created, proxies) is proxies[1]
        after = await endpoint.metrics()
        changed = grown(before, after)
        lookups = "rtpcluster_broadcast_lookups_total"
        assert changed[cluster_key(lookups, result="not_found")] == 1
        assert changed[cluster_key(lookups, result="found")] == 1
        assert changed[cluster_key("rtpcluster_commands_total", op="L", result="ok")] == 2
        assert changed[cluster_key("rtpcluster_commands_total", op="-", result="error")] == 1
        assert changed[cluster_key("rtpcluster_commands_total", op="V", result="ok")] == 1
        # each broadcast asked both members
        for m in ("m0", "m1"):
            assert changed[member_key("rtpcluster_member_commands_total", m, result="ok")] == 2
        count = after[cluster_key("rtpcluster_command_duration_seconds_count")]
        assert count == commands(after) and commands(after) - commands(before) == 4
        assert after[cluster_key("rtpcluster_command_duration_seconds_bucket", le="+Inf")] == count


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
