"""Members that die or hang while calls run; bad input from the SIP side."""

from __future__ import annotations

import logging
import re
from collections import Counter
from pathlib import Path

import pytest
import trio

from tests.conftest import MemberFactory
from tests.integration.harness import (
    OFFLINE_WITH_CAUSE,
    cluster_config,
    direct_command,
    owner_of,
    running_service,
    udp_cluster,
)
from testsupport import RtpProxy, UdpControlClient, free_port


async def _wait_state(service: object, name: str, online: bool) -> None:
    cluster = service.running["c1"]  # type: ignore[attr-defined]
    member = cluster.members[name]
    with trio.fail_after(10):
        while member.online is not online:
            await member.state_changed.wait()


async def _make_calls(
    client: UdpControlClient, prefix: str, count: int, members: list[RtpProxy]
) -> dict[str, RtpProxy]:
    owners = {}
    for n in range(count):
        reply = await client.command(f"U {prefix}{n} 127.0.0.1 4000 f{n}")
        owners[f"{prefix}{n}"] = owner_of(reply, members)
    return owners


async def test_killed_member_goes_offline_others_unaffected_and_it_comes_back(
    rtpproxy: MemberFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rtpcluster.cluster.member")
    members = [rtpproxy(), rtpproxy()]
    listen = f"udp:127.0.0.1:{free_port()}"
    async with running_service(cluster_config(members, [listen])) as service:
        client = UdpControlClient(listen)
        owners = await _make_calls(client, "k", 40, members)
        victim, survivor = members
        victim_port = victim.address.rsplit(":", 1)[1]
        victim.kill()
        # calls on the survivor keep working while the victim is being found dead
        for call, owner in owners.items():
            if owner is survivor:
                reply = await client.command(f"L {call} 127.0.0.1 4002 f{call[1:]} t")
                assert owner_of(reply, members) is survivor
        # new calls never fail while a healthy member is left
        for n in range(30):
            reply = await client.command(f"U new{n} 127.0.0.1 4000 f")
            assert owner_of(reply, members) is survivor
        await _wait_state(service, "m0", online=False)
        # a delete for a call on the dead member is answered at once
        dead_calls = [c for c, o in owners.items() if o is victim]
        assert await client.command(f"D {dead_calls[0]} f{dead_calls[0][1:]}") == "0\n"
        # it comes back on the same address and takes new calls again
        revived = RtpProxy(
            control=f"udp:127.0.0.1:{victim_port}",
            port_min=victim.port_min,
            port_max=victim.port_max,
        )
        revived.start(tmp_path)
        try:
            await _wait_state(service, "m0", online=True)
            served: Counter[int] = Counter()
            for n in range(60):
                reply = await client.command(f"U back{n} 127.0.0.1 4000 f")
                served[id(owner_of(reply, [revived, survivor]))] += 1
            assert served[id(revived)] > 0
        finally:
            revived.stop()
        client.close()
    # each move of m0 logged once, with its cause: no silent "offline" any more
    moves = [
        (r.levelname, r.getMessage())
        for r in caplog.records
        if r.name == "rtpcluster.cluster.member" and getattr(r, "member", None) == "m0"
    ]
    [offline] = [move for move in moves if ": offline (" in move[1]]
    assert offline[0] == "WARNING"
    assert re.fullmatch(OFFLINE_WITH_CAUSE, offline[1]), offline
    assert [text for _, text in moves if ": online (" in text] == [
        "c1: member m0: online (answers V and the capabilities it needs)",
        "c1: member m0: online (answered 2 probes in a row)",  # rise = 2
    ]


async def test_hung_member_is_detected_and_deletes_reach_it_after_it_resumes(
    rtpproxy: MemberFactory,
) -> None:
    members = [rtpproxy(), rtpproxy()]
    listen = f"udp:127.0.0.1:{free_port()}"
    async with running_service(cluster_config(members, [listen])) as service:
        client = UdpControlClient(listen)
        owners = await _make_calls(client, "h", 30, members)
        victim, survivor = members
        victim.hang()
        try:
            for n in range(20):
                reply = await client.command(f"U hn{n} 127.0.0.1 4000 f", timeout=2)
                assert owner_of(reply, members) is survivor
            await _wait_state(service, "m0", online=False)
            on_victim = [c for c, o in owners.items() if o is victim]
            for call in on_victim:
                assert await client.command(f"D {call} f{call[1:]}") == "0\n"
            for call, owner in owners.items():
                if owner is survivor:
                    assert await client.command(f"D {call} f{call[1:]}") == "0\n"
        finally:
            victim.unhang()
        await _wait_state(service, "m0", online=True)
        member = service.running["c1"].members["m0"]
        with trio.fail_after(10):
            while member.deferred:
                await trio.sleep(0.05)
        # every deferred delete reached it: no session of those calls is left
        for call in on_victim:
            reply = await direct_command(victim, f"Q {call} f{call[1:]}")
            assert reply.startswith("E50"), (call, reply)
        client.close()


async def test_bad_input_gets_an_error_or_silence_and_service_keeps_serving(
    rtpproxy: MemberFactory,
) -> None:
    members = [rtpproxy()]
    async with udp_cluster(members) as (_, client):
        assert await client.command("U too few") == "E1\n"
        assert await client.command("") == "E5\n"
        assert await client.command("K x") == "E0\n"
        assert await client.command("G nsess_created && D") == "E3\n"
        assert await client.command("D\x00 x y") == "E5\n"
        await client.send_raw(b"")  # nothing to answer to
        await client.send_raw(b"   \n")
        await client.send_raw(b"big " + b"A" * 65000)
        await client.send_raw(bytes(range(256)) * 4)
        reply = await client.command("U " + "x" * 9000 + " 127.0.0.1 4000 f")
        assert reply == "E5\n"
        # the next command still works, and the junk never reached the member
        offer = await client.command("U alive 127.0.0.1 4000 f")
        owner_of(offer, members)
        stats = await direct_command(members[0], "G ncmds_errs")
        assert stats == "0\n"


async def test_retransmits_are_answered_from_cache_and_reach_the_member_once(
    rtpproxy: MemberFactory,
) -> None:
    async with udp_cluster([rtpproxy()]) as (_, client):
        await client.command("U rt1 127.0.0.1 4000 f")
        # a second D of the same session would get E50 from the member: the cached
        # reply proves the retransmit never reached it
        assert await client.command("D rt1 f", cookie="same-cookie") == "0\n"
        assert await client.command("D rt1 f", cookie="same-cookie") == "0\n"
        # two copies at once: the copy that arrives while the first is in flight is
        # absorbed, so exactly one reply comes back
        await client.command("U rt2 127.0.0.1 4000 f")
        await client.send_raw(b"twice D rt2 f")
        await client.send_raw(b"twice D rt2 f")
        assert await client.receive() == b"twice 0\n"
        assert await client.command("V") == "20040107\n"  # and nothing else was queued


async def test_calls_on_healthy_members_never_fail_while_one_hangs_under_load(
    rtpproxy: MemberFactory,
) -> None:
    members = [rtpproxy(), rtpproxy(), rtpproxy()]
    victim = members[0]
    listen = f"udp:127.0.0.1:{free_port()}"
    failures: list[str] = []
    on_victim = 0
    completed = 0
    hung = trio.Event()

    async def worker(index: int, client: UdpControlClient) -> None:
        nonlocal on_victim, completed
        for n in range(60):
            if n == 10 and index == 0:
                victim.hang()
                hung.set()
            call = f"load{index}-{n}"
            offer = await client.command(f"U {call} 127.0.0.1 4000 f", timeout=3)
            if offer.startswith("E"):
                failures.append(f"new call {call}: {offer!r}")
                continue
            owner = owner_of(offer, members)
            if owner is victim:
                on_victim += 1
                continue  # calls on the hung member may fail: not counted
            for command in (f"L {call} 127.0.0.1 4002 f t", f"U {call} 127.0.0.1 4000 f t"):
                reply = await client.command(command, timeout=3)
                if reply.startswith("E") or owner_of(reply, members) is not owner:
                    failures.append(f"{command}: {reply!r}")
            reply = await client.command(f"D {call} f t", timeout=3)
            if reply != "0\n":
                failures.append(f"D {call}: {reply!r}")
            completed += 1

    async with running_service(cluster_config(members, [listen])) as service:
        clients = [UdpControlClient(listen) for _ in range(8)]
        try:
            async with trio.open_nursery() as nursery:
                for index, client in enumerate(clients):
                    nursery.start_soon(worker, index, client)
            assert hung.is_set()
            assert not service.running["c1"].members["m0"].online
        finally:
            victim.unhang()
            for client in clients:
                client.close()
    assert failures == []
    assert completed > 300
