"""The health task's rhythm on a virtual clock: heartbeats, fall, rise, hold-downs.

A hand-written member client (this module's unit test only) that answers or stays
silent as told, and trio's MockClock jumping over every wait, so the times of the
requests are exact: a failed heartbeat is not asked again at once, ``fall`` failed
heartbeats take ``fall`` intervals, an offline member on a rise streak is probed at the
heartbeat interval, a held-down one again as its hold-down ends.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
import trio
import trio.testing

from rtpcluster.cluster import health
from rtpcluster.cluster.member import OFFLINE, ONLINE, Member, MemberPolicy
from rtpcluster.config import ClusterConfig, MemberConfig
from rtpcluster.endpoint import Endpoint
from rtpcluster.protocol import format_info_reply
from rtpcluster.transport.member_client import MemberTimeout

HEARTBEAT = 1.0
PROBE = 5.0
TIMEOUT = 0.25


class ScriptedClient:
    """Answers like a healthy RTPproxy while ``answering``, else lets every request time out."""

    rtt = None

    def __init__(self) -> None:
        self.answering = True
        self.asked: list[tuple[float, str]] = []  # (trio time, command)

    async def request(self, command: str, timeout: float, lines: int = 1) -> str:
        self.asked.append((trio.current_time(), command))
        if not self.answering:
            await trio.sleep(timeout)
            raise MemberTimeout(f"no reply to {command}")
        if command == "V":
            return "20040107"
        if command.startswith("VF"):
            return "1"
        return format_info_reply({"active sessions": 0})

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()

    def close(self) -> None:
        pass

    def times_of(self, command: str, after: float) -> list[float]:
        """When ``command`` was asked, after the time ``after``."""
        return [t for t, c in self.asked if c == command and t > after]


def settings() -> Callable[[], ClusterConfig]:
    cluster = ClusterConfig(
        name="c1",
        listen=[Endpoint.parse("udp:127.0.0.1:1")],
        heartbeat_interval=HEARTBEAT,
        offline_probe_interval=PROBE,
        member_timeout=TIMEOUT,
    )
    return lambda: cluster


def make_member(client: ScriptedClient, **damping: float) -> Member:
    config = MemberConfig.model_validate({"name": "m", "protocol": "udp", "address": "127.0.0.1:9"})
    cluster = settings()().model_copy(update=damping)
    return Member(config, client, cluster="c1", policy=MemberPolicy.of(cluster))  # type: ignore[arg-type]


async def until(member: Member, condition: Callable[[], bool]) -> None:
    with trio.fail_after(3600):
        while not condition():
            await member.checked.wait()


async def test_fall_failed_heartbeats_take_fall_intervals_and_rise_probes_bring_it_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client = ScriptedClient()
    member = make_member(client, fall=3, rise=2)
    async with trio.open_nursery() as nursery:
        await nursery.start(health.watch, member, settings())
        assert member.state is ONLINE
        await until(member, lambda: member.heartbeats >= 3)
        client.answering = False
        hung_at = trio.current_time()
        await until(member, lambda: member.state is OFFLINE)
        out_at = trio.current_time()
        failed = client.times_of("Ib", after=hung_at)
        # one heartbeat per interval, failing or not: no quick retry after a failure
        assert failed == pytest.approx([failed[0] + n * HEARTBEAT for n in range(3)])
        assert out_at == pytest.approx(failed[-1] + TIMEOUT)

        # offline: probed after a heartbeat interval, then every probe interval
        await until(member, lambda: len(client.times_of("V", after=out_at)) >= 3)
        probes = client.times_of("V", after=out_at)
        assert probes == pytest.approx([failed[-1] + HEARTBEAT + n * PROBE for n in range(3)])

        client.answering = True
        back_from = trio.current_time()
        await until(member, lambda: member.state is ONLINE)
        good = client.times_of("V", after=back_from)
        # rise = 2 good probes, the second one heartbeat interval after the first
        assert len(good) == 2
        assert good[1] == pytest.approx(good[0] + HEARTBEAT)
        assert trio.current_time() == pytest.approx(good[1])
        nursery.cancel_scope.cancel()


async def test_a_failed_probe_ends_a_rise_streak(autojump_clock: trio.testing.MockClock) -> None:
    client = ScriptedClient()
    member = make_member(client, fall=1, rise=3)
    async with trio.open_nursery() as nursery:
        await nursery.start(health.watch, member, settings())
        client.answering = False
        await until(member, lambda: member.state is OFFLINE)
        client.answering = True
        await until(member, lambda: member.damping.good_in_a_row == 2)
        client.answering = False
        await until(member, lambda: not member.rising)
        failed_at = client.asked[-1][0]
        client.answering = True
        await until(member, lambda: member.state is ONLINE)
        good = client.times_of("V", after=failed_at + TIMEOUT)
        # after the failed probe: the probe interval, then 3 good ones a heartbeat apart
        assert good == pytest.approx([failed_at + PROBE + n * HEARTBEAT for n in range(3)])
        nursery.cancel_scope.cancel()


async def test_a_held_down_member_is_probed_again_as_its_hold_down_ends(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    client = ScriptedClient()
    member = make_member(client, fall=1, rise=1, flap_limit=2, hold_down=7.5)
    async with trio.open_nursery() as nursery:
        await nursery.start(health.watch, member, settings())
        for _ in range(2):
            client.answering = False
            await until(member, lambda: member.state is OFFLINE)
            client.answering = True
            if member.held_down_left() is not None:
                break
            await until(member, lambda: member.state is ONLINE)
        # the second out within the window: held down, though it answers every probe
        assert member.state is OFFLINE
        held_until = member.damping.held_until
        assert held_until is not None
        await until(member, lambda: member.state is ONLINE)
        assert trio.current_time() == pytest.approx(held_until)
        during = client.times_of("V", after=held_until - 7.5)
        # probes while it is held: every probe interval, and once more as the hold ends
        assert during[-1] == pytest.approx(held_until)
        assert all(b - a <= PROBE + 1e-9 for a, b in itertools.pairwise(during))
        nursery.cancel_scope.cancel()
    held = [r.getMessage() for r in caplog.records if "held down" in r.getMessage()]
    assert held == [
        "c1: member m: offline (no answer to 1 heartbeat in a row; held down for 7.5 s:"
        " out 2 times within 60 s)"
    ]
