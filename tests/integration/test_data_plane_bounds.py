"""Hostile and careless input on the data plane, over real sockets with real RTPproxies.

Each test plays an attack found against an earlier version and asserts the defence on
the cluster's own accounting: oversized cookies and datagrams, calls never forgotten
after their D, deferred deletes pushed out by a flood, and per-member call counts.
"""

from __future__ import annotations

import pytest
import trio

from rtpcluster.cluster import cluster as cluster_module
from rtpcluster.cluster import front as front_module
from rtpcluster.cluster import member as member_module
from rtpcluster.protocol import MAX_COOKIE_BYTES
from rtpcluster.service import Service
from tests.conftest import MemberFactory
from tests.integration.harness import (
    cluster_config,
    direct_command,
    owner_of,
    running_service,
    udp_cluster,
)
from testsupport import RtpProxy, UdpControlClient, free_port, stream_command


def _cluster(service: Service) -> cluster_module.Cluster:
    return service.running["c1"]


async def _probe(client: UdpControlClient, cookie: bytes = b"probe") -> None:
    """Send V and check its reply is the very next datagram: nothing else was answered."""
    await client.send_raw(cookie + b" V")
    assert await client.receive() == cookie + b" 20040107\n"


async def _wait_online(service: Service, name: str, online: bool) -> None:
    member = _cluster(service).members[name]
    with trio.fail_after(10):
        while member.online is not online:
            await member.state_changed.wait()


def _active_sessions(info_reply: str) -> int:
    for line in info_reply.splitlines():
        if line.startswith("active sessions:"):
            return int(line.split(":")[1])
    raise AssertionError(f"no active sessions in {info_reply!r}")


# --- finding 2: oversized cookies and datagrams ---------------------------------------------


async def test_a_flood_of_huge_cookies_is_ignored_and_the_reply_cache_stays_in_its_bounds(
    rtpproxy: MemberFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(front_module, "REPLY_CACHE_BYTES", 256 * 1024)
    async with udp_cluster([rtpproxy()]) as (service, client):
        cluster = _cluster(service)
        cache = cluster.front.reply_cache
        assert cache.max_bytes == 256 * 1024
        # The attack that took the process from 319 MB to 1,958 MB: 65 KB cookie + V.
        # Two at a time (a loopback socket buffer holds three), then a probe: by its
        # reply the listener has handled both, and nothing answered them.
        huge = b"A" * 65000 + b" V"
        for _ in range(500):
            await client.send_raw(huge)
            await client.send_raw(huge)
            await _probe(client)
        assert cluster.front.datagrams_ignored == 1000
        assert len(cache) <= 500  # only the probes: no huge cookie is kept
        assert cache.held_bytes < 500 * 40

        # Cookies at the limit are answered and cached: thousands of distinct ones fill
        # the cache, which drops its oldest replies to stay within its byte bound.
        sent = 0
        for batch in range(30):
            cookies = [b"%0*d" % (MAX_COOKIE_BYTES, batch * 100 + n) for n in range(100)]
            for cookie in cookies:
                await client.send_raw(cookie + b" V")
            replies = {await client.receive() for _ in cookies}
            assert replies == {cookie + b" 20040107\n" for cookie in cookies}
            sent += len(cookies)
            assert cache.held_bytes <= cache.max_bytes
            assert len(cache) <= cache.max_entries
        assert cache.early_rotations > 0
        assert len(cache) < sent  # the oldest went
        # one byte more and there is no cookie to answer to
        await client.send_raw(b"c" * (MAX_COOKIE_BYTES + 1) + b" V")
        await _probe(client)
        assert cluster.front.datagrams_ignored == 1001


async def test_a_datagram_over_8191_bytes_gets_e5_and_never_reaches_the_member(
    rtpproxy: MemberFactory,
) -> None:
    member = rtpproxy()
    async with udp_cluster([member]) as (_, client):
        call = "x" * 8200
        await client.send_raw(f"c1 U {call} 127.0.0.1 4000 f".encode())
        assert await client.receive() == b"c1 E5\n"
        await client.send_raw(b"c2 " + b"B" * 65000)
        assert await client.receive() == b"c2 E5\n"
        # fits a client's datagram with a 1-byte cookie, not one with the cluster's own
        call = "y" * (8191 - len("c U  127.0.0.1 4000 f") - 10)
        reply = await client.command(f"U {call} 127.0.0.1 4000 f", cookie="c")
        assert reply == "E5\n"
        # RTPproxy would have cut them and answered an error: it saw none of them
        assert await direct_command(member, "G ncmds_errs") == "0\n"


async def test_commands_in_flight_are_bounded_and_the_rest_dropped_unanswered(
    rtpproxy: MemberFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(front_module, "MAX_DATAGRAMS_IN_FLIGHT", 16)
    member = rtpproxy()
    async with udp_cluster([member]) as (service, client):
        cluster = _cluster(service)
        await client.command("U held 127.0.0.1 4000 f")
        member.hang()
        try:
            for n in range(100):
                await client.send_raw(b"q%d L held 127.0.0.1 4002 f t" % n)
            replies = [await client.receive() for _ in range(16)]
            assert all(reply.endswith(b" E997\n") for reply in replies), replies
            assert cluster.front.datagrams_refused == 84
            await _probe(client)  # the 84 others got nothing
        finally:
            member.unhang()


# --- finding 3: calls are forgotten at their D -----------------------------------------------


async def test_a_thousand_calls_ended_by_d_leave_no_tracked_call(
    rtpproxy: MemberFactory,
) -> None:
    members = [rtpproxy(), rtpproxy()]
    udp = f"udp:127.0.0.1:{free_port()}"
    tcp = f"tcp:127.0.0.1:{free_port()}"
    async with running_service(cluster_config(members, [udp, tcp])) as service:
        cluster = _cluster(service)
        client = UdpControlClient(udp)
        try:
            for n in range(1000):
                assert owner_of(await client.command(f"U call{n} 127.0.0.1 4000 f{n}"), members)
                await client.command(f"L call{n} 127.0.0.1 4002 f{n} t{n}")
                if n == 500:
                    # tracked calls per member are counted as they go: they add up
                    tracked = [m.tracked_calls for m in cluster.info().members]
                    assert sum(tracked) == len(cluster.sessions) == 1
                assert await client.command(f"D call{n} f{n} t{n}") == "0\n"
            # over a stream socket the D takes the other path through the Router
            for n in range(50):
                await stream_command(tcp, f"U s{n} 127.0.0.1 4000 f")
                assert await stream_command(tcp, f"D s{n} f") == "0\n"
            assert len(cluster.sessions) == 0
            assert [m.tracked_calls for m in cluster.info().members] == [0, 0]
            for member in members:  # and every call really ended on its member
                assert _active_sessions(await direct_command(member, "Ib")) == 0
        finally:
            client.close()


async def test_what_ends_a_call_and_what_comes_after_its_d(rtpproxy: MemberFactory) -> None:
    members = [rtpproxy()]
    async with udp_cluster(members) as (service, client):
        sessions = _cluster(service).sessions
        await client.command("U end1 127.0.0.1 4000 f")
        # a retransmit of the D is answered from the cache: it never reaches the member
        assert await client.command("D end1 f", cookie="d-once") == "0\n"
        assert len(sessions) == 0
        assert await client.command("D end1 f", cookie="d-once") == "0\n"
        # the same D again later: the call is unknown, every member says E50
        assert await client.command("D end1 f") == "E995\n"
        # a weak D may leave the session alive: the call stays bound
        await client.command("U weak 127.0.0.1 4000 f")
        assert await client.command("Dw weak f") == "0\n"
        assert len(sessions) == 1
        assert await client.command("D weak f") == "0\n"
        assert len(sessions) == 0
        # query and delete ends it too
        await client.command("U qd 127.0.0.1 4000 f")
        counters = await client.command("Q qd f && D")
        assert len(counters.split()) == 5 and "&&" not in counters
        assert len(sessions) == 0
        # a D that fails keeps the binding
        await client.command("U bad 127.0.0.1 4000 f")
        assert await client.command("D bad other-tag") == "E50\n"
        assert len(sessions) == 1
        # a call this cluster never bound, found by asking every member: a D ends it
        # without binding it, an L binds it
        await direct_command(members[0], "U direct1 127.0.0.1 4000 f")
        await direct_command(members[0], "U direct2 127.0.0.1 4000 f")
        assert await client.command("D direct1 f") == "0\n"
        assert await client.command("L direct2 127.0.0.1 4002 f t") != "0\n"
        assert sessions.get("direct1") is None
        assert sessions.get("direct2") is not None


# --- finding 9: deferred deletes survive a flood ---------------------------------------------


async def test_real_deferred_deletes_survive_a_flood_and_reach_the_member_when_it_resumes(
    rtpproxy: MemberFactory,
) -> None:
    victim = rtpproxy()
    async with udp_cluster([victim]) as (service, client):
        cluster = _cluster(service)
        member = cluster.members["m0"]
        calls = [f"real{n}" for n in range(20)]
        for call in [*calls, "flooded"]:
            await client.command(f"U {call} 127.0.0.1 4000 f")
        victim.hang()
        try:
            # While the hung member still counts as online, 300 copies of one delete go
            # out at once (32 reach its socket, the rest wait their turn); all time out
            # and the delete is kept once.
            for n in range(300):
                await client.send_raw(b"f%d D flooded f" % n)
            replies = [await client.receive() for _ in range(300)]
            assert all(reply.endswith(b" 0\n") for reply in replies)
            await _wait_online(service, "m0", online=False)
            assert len(member.deferred) == 1
            # Offline now: the 20 real deletes are kept without being sent, so only the
            # kept ones can end those sessions.
            for call in calls:
                assert await client.command(f"D {call} f") == "0\n"
            assert len(member.deferred) == 21
            # Every call was forgotten with its kept delete: a flood of deletes for one
            # call-id, or for the others, keeps nothing more and pushes nothing out.
            for burst in range(50):
                for n in range(200):
                    call = "flooded" if n % 2 else calls[n % 20]
                    await client.send_raw(b"x%d_%d D %s f" % (burst, n, call.encode()))
                for _ in range(200):
                    assert (await client.receive()).endswith(b" E999\n")
            info = cluster.info().members[0]
            assert (info.deferred_deletes, info.deferred_dropped, info.tracked_calls) == (21, 0, 0)
        finally:
            victim.unhang()
        await _wait_online(service, "m0", online=True)
        with trio.fail_after(10):
            while member.deferred:
                await trio.sleep(0.05)
        for call in [*calls, "flooded"]:  # every session is gone from the member itself
            assert await direct_command(victim, f"Q {call} f") == "E50\n", call
        assert _active_sessions(await direct_command(victim, "Ib")) == 0


async def test_deferred_deletes_are_bounded_per_member_and_drops_counted(
    rtpproxy: MemberFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(member_module, "DEFERRED_MAX", 5)
    victim = rtpproxy()
    async with udp_cluster([victim]) as (service, client):
        for n in range(8):
            await client.command(f"U b{n} 127.0.0.1 4000 f")
        victim.hang()
        try:
            for n in range(8):
                assert await client.command(f"D b{n} f") == "0\n"
            info = _cluster(service).info().members[0]
            assert (info.deferred_deletes, info.deferred_dropped) == (5, 3)
        finally:
            victim.unhang()


# --- finding 10: tracked calls per member without a scan --------------------------------------


async def test_tracked_calls_per_member_follow_binds_ends_and_member_removal(
    rtpproxy: MemberFactory,
) -> None:
    members: list[RtpProxy] = [rtpproxy(), rtpproxy()]
    async with udp_cluster(members) as (service, client):
        cluster = _cluster(service)
        owners: dict[str, RtpProxy] = {}
        for n in range(200):
            owners[f"t{n}"] = owner_of(await client.command(f"U t{n} 127.0.0.1 4000 f"), members)
        for n in range(0, 200, 4):
            await client.command(f"D t{n} f")
            del owners[f"t{n}"]

        def tracked() -> list[int]:
            return [m.tracked_calls for m in cluster.info().members]

        expected = [sum(1 for o in owners.values() if o is m) for m in members]
        assert tracked() == expected
        assert sum(expected) == len(cluster.sessions) == 150
        cluster.sessions.rotate()  # ageing keeps the counts: the calls are old, not gone
        assert tracked() == expected
        await service.remove_member("c1", "m1", timeout=0.0)
        with trio.fail_after(10):
            while "m1" in cluster.members:
                await trio.sleep(0.05)
        assert tracked() == [expected[0]]
        assert len(cluster.sessions) == expected[0]
