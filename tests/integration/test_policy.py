"""Placement policy and cluster-wide commands against real RTPproxies."""

from __future__ import annotations

from collections import Counter

import pytest

from rtpcluster.config import MemberStatus
from tests.conftest import MemberFactory
from tests.integration.harness import (
    cluster_config,
    direct_command,
    member_config,
    owner_of,
    running_service,
    udp_cluster,
)
from testsupport import RtpProxy, UdpControlClient, free_port


@pytest.fixture
def listen() -> str:
    return f"udp:127.0.0.1:{free_port()}"


async def test_new_calls_follow_the_weights(rtpproxy: MemberFactory) -> None:
    light, heavy = rtpproxy(), rtpproxy()
    members = [
        member_config("light", light, weight=100, capacity=100_000),
        member_config("heavy", heavy, weight=300, capacity=100_000),
    ]
    async with udp_cluster([], members=members) as (_, client):
        served: Counter[str] = Counter()
        for n in range(400):
            reply = await client.command(f"U w{n} 127.0.0.1 4000 f")
            served["heavy" if owner_of(reply, [light, heavy]) is heavy else "light"] += 1
        # expectation 300 of 400, standard deviation about 8.7: a bound of 5.7 sigma
        assert 250 <= served["heavy"] <= 350, served


@pytest.mark.parametrize("limit", ["hard", "soft"])
async def test_capacity_limit(rtpproxy: MemberFactory, limit: str) -> None:
    proxies = [rtpproxy(), rtpproxy()]
    members = [member_config(f"m{i}", p, capacity=5) for i, p in enumerate(proxies)]
    async with udp_cluster([], members=members, capacity_limit=limit) as (_, client):
        served: Counter[int] = Counter()
        for n in range(10):
            served[id(owner_of(await client.command(f"U c{n} 127.0.0.1 4000 f"), proxies))] += 1
        assert sorted(served.values()) == [5, 5], "each member filled to its capacity"
        extra = await client.command("U over 127.0.0.1 4000 f")
        if limit == "hard":
            assert extra == "E998\n"
        else:
            owner_of(extra, proxies)


async def test_suspended_and_draining_members_take_no_new_calls_but_keep_theirs(
    rtpproxy: MemberFactory,
) -> None:
    proxies = [rtpproxy(), rtpproxy(), rtpproxy()]
    async with udp_cluster(proxies) as (service, client):
        owners = {}
        for n in range(30):
            owners[f"s{n}"] = owner_of(await client.command(f"U s{n} 127.0.0.1 4000 f"), proxies)
        await service.suspend_member("c1", "m0")
        service.running["c1"].remove_member("m1", None)
        assert service.running["c1"].members["m1"].status is MemberStatus.DRAINING
        for n in range(30):
            reply = await client.command(f"U new{n} 127.0.0.1 4000 f")
            assert owner_of(reply, proxies) is proxies[2]
        for call, owner in owners.items():
            reply = await client.command(f"L {call} 127.0.0.1 4002 f t")
            assert owner_of(reply, proxies) is owner
        await service.resume_member("c1", "m0")
        placed = {
            id(owner_of(await client.command(f"U r{n} 127.0.0.1 4000 f"), proxies))
            for n in range(40)
        }
        assert id(proxies[0]) in placed
        assert id(proxies[1]) not in placed


async def test_calls_are_found_again_after_a_cluster_restart(
    rtpproxy: MemberFactory, listen: str
) -> None:
    proxies = [rtpproxy(), rtpproxy()]
    config = cluster_config(proxies, [listen])
    owners = {}
    async with running_service(config):
        client = UdpControlClient(listen)
        for n in range(20):
            owners[f"r{n}"] = owner_of(await client.command(f"U r{n} 127.0.0.1 4000 f"), proxies)
        client.close()
    # a new cluster process knows none of these calls: it asks the members
    async with running_service(config) as service:
        client = UdpControlClient(listen)
        for call, owner in owners.items():
            reply = await client.command(f"L {call} 127.0.0.1 4002 f t")
            assert owner_of(reply, proxies) is owner
            # a re-offer with swapped tags is looked up, not created anew
            reply = await client.command(f"U {call} 127.0.0.1 4004 t f")
            assert owner_of(reply, proxies) is owner
        assert len(service.running["c1"].sessions) == len(owners)
        assert await client.command("L nowhere 127.0.0.1 4002 f t") == "0\n"
        assert await client.command("Q nowhere f t") == "E995\n"
        for call in owners:
            assert await client.command(f"D {call} f t") == "0\n"
        for proxy in proxies:
            assert (await direct_command(proxy, "Ib")).splitlines()[1] == "active sessions: 0"
        client.close()


async def test_wan_and_lan_addresses(rtpproxy: MemberFactory) -> None:
    both, wan_only = rtpproxy(), rtpproxy()
    members = [
        member_config("both", both, wan_address="192.0.2.1", lan_address="127.0.0.1"),
        member_config("wan", wan_only, wan_address="2001:db8::1"),
    ]
    async with udp_cluster([], members=members) as (_, client):
        seen = set()
        for n in range(30):
            reply = await client.command(f"U wl{n} 127.0.0.1 4000 f")
            owner = owner_of(reply, [both, wan_only])
            expected = "192.0.2.1" if owner is both else "2001:db8::1 6"
            assert reply == f"{reply.split()[0]} {expected}\n"
            seen.add(id(owner))
            answer = await client.command(f"L wl{n} 127.0.0.1 4002 f t")
            assert answer.split()[1] == expected.split()[0]
        assert seen == {id(both), id(wan_only)}


async def test_cluster_wide_commands(rtpproxy: MemberFactory) -> None:
    proxies = [rtpproxy(), rtpproxy()]
    async with udp_cluster(proxies) as (_, client):
        for n in range(10):
            await client.command(f"U g{n} 127.0.0.1 4000 f")
        direct = [int(await direct_command(p, "G nsess_created")) for p in proxies]
        assert await client.command("G nsess_created") == f"{sum(direct)}\n"
        verbose = await client.command("Gv nsess_created total_duration")
        name_value = dict(item.split("=") for item in verbose.split())
        assert int(name_value["nsess_created"]) == 10
        assert "." in name_value["total_duration"]
        assert await client.command("G no_such_stat") == "E68\n"
        assert await client.command("V") == "20040107\n"
        assert await client.command("VF 20050322") == "1\n"
        assert await client.command("VF 20170313") == "0\n"
        assert await client.command("X") == "0\n"
        for proxy in proxies:
            assert (await direct_command(proxy, "Ib")).splitlines()[1] == "active sessions: 0"


async def test_no_member_online_is_E999() -> None:
    dead = RtpProxy(control=f"udp:127.0.0.1:{free_port()}", port_min=1, port_max=2)
    async with udp_cluster([dead], online=0) as (_, client):
        assert await client.command("U x 127.0.0.1 4000 f") == "E999\n"
        assert await client.command("L x 127.0.0.1 4000 f t") == "E999\n"
        assert await client.command("V") == "20040107\n"
        # a SIP server starting now still sees the base protocol it requires
        assert await client.command("VF 20050322") == "1\n"
        assert await client.command("VF 20170313") == "0\n"
