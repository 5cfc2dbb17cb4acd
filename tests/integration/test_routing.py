"""Calls through the cluster to real RTPproxies over real sockets."""

from __future__ import annotations

import socket
from collections import Counter

import pytest

from tests.conftest import MemberFactory
from tests.integration.harness import cluster_config, owner_of, running_service
from testsupport import UdpControlClient, free_port


@pytest.fixture
def listen_udp() -> str:
    return f"udp:127.0.0.1:{free_port()}"


async def test_calls_stay_on_the_member_that_created_them(
    rtpproxy: MemberFactory, listen_udp: str
) -> None:
    members = [rtpproxy(), rtpproxy()]
    async with running_service(cluster_config(members, [listen_udp])):
        client = UdpControlClient(listen_udp)
        served: Counter[str] = Counter()
        for n in range(200):
            offer = await client.command(f"U call{n} 127.0.0.1 4000 ftag{n}")
            owner = owner_of(offer, members)
            served[owner.control] += 1
            answer = await client.command(f"L call{n} 127.0.0.1 4002 ftag{n} ttag{n}")
            assert owner_of(answer, members) is owner
            reoffer = await client.command(f"U call{n} 127.0.0.1 4000 ftag{n} ttag{n}")
            assert owner_of(reoffer, members) is owner
            assert await client.command(f"D call{n} ftag{n} ttag{n}") == "0\n"
        assert set(served) == {m.control for m in members}
        client.close()


async def test_a_burst_beyond_what_one_member_buffers_is_served_in_full(
    rtpproxy: MemberFactory, listen_udp: str
) -> None:
    import trio

    member = rtpproxy()
    async with running_service(cluster_config([member], [listen_udp])) as service:
        client = UdpControlClient(listen_udp)
        burst = 600  # sessions: each takes two of the member's 2000 RTP ports
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
        for n in range(burst):  # all at once: far more than the member's socket buffers
            await client.send_raw(f"b{n} U burst{n} 127.0.0.1 4000 f".encode())
        replies = {}
        with trio.fail_after(10):
            while len(replies) < burst:
                cookie, _, reply = (await client.receive()).decode().partition(" ")
                replies[cookie] = reply
        assert all(owner_of(reply, [member]) is member for reply in replies.values())
        assert service.running["c1"].members["m0"].online
        client.close()
