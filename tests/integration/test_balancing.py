"""Flap damping, slow start, backup members and live weights, against real RTPproxies.

What is observed: the members' moves (awaited through ``Member.state_changed`` and
``Member.checked``, the event of each heartbeat or probe round), where new calls land
(the RTP port of each reply names the member), what ``ls`` shows and what the log says.
Each bound on a count of random placements is stated where it is used.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import trio

from rtpcluster.admin.commands import run_command
from rtpcluster.cluster.member import OFFLINE, ONLINE, Member
from rtpcluster.config import Config, load_config, save_config
from rtpcluster.service import Service
from tests.conftest import MemberFactory
from tests.integration.harness import cluster_config, member_config, owner_of, udp_cluster
from tests.integration.test_admin_live import check_config, live_service
from testsupport import RtpProxy, UdpControlClient, free_port

MEMBER_LOG = "rtpcluster.cluster.member"
WAIT = 15.0  # seconds any one awaited move may take before the test fails


def bound(calls: int, share: float) -> float:
    """Five standard deviations of a binomial count: exceeded by chance about 6e-7."""
    return 5 * math.sqrt(calls * share * (1 - share))


async def next_check(member: Member) -> None:
    """Until the member's next heartbeat or probe round has ended."""
    with trio.fail_after(WAIT):
        await member.checked.wait()


async def checked_until(member: Member, condition: Callable[[], bool]) -> None:
    with trio.fail_after(WAIT):
        while not condition():
            await member.checked.wait()


async def moved_until(member: Member, condition: Callable[[], bool]) -> None:
    with trio.fail_after(WAIT):
        while not condition():
            await member.state_changed.wait()


async def place(
    client: UdpControlClient, prefix: str, count: int, proxies: Sequence[RtpProxy]
) -> dict[str, str]:
    """``count`` new calls: the control socket of the member that took each."""
    owners = {}
    for n in range(count):
        call = f"{prefix}{n}"
        reply = await client.command(f"U {call} 127.0.0.1 4000 f")
        owners[call] = owner_of(reply, proxies).control
    return owners


async def served_by(
    client: UdpControlClient, prefix: str, count: int, proxies: Sequence[RtpProxy]
) -> Counter[str]:
    """``count`` new calls: how many each member took, by control socket."""
    return Counter((await place(client, prefix, count, proxies)).values())


async def still_there(
    client: UdpControlClient, owners: dict[str, str], proxies: Sequence[RtpProxy]
) -> None:
    """Every call is answered by the member that took it."""
    for call, owner in owners.items():
        reply = await client.command(f"L {call} 127.0.0.1 4002 f t")
        assert owner_of(reply, proxies).control == owner, (call, reply)


def moves_of(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == MEMBER_LOG and r.getMessage().startswith(f"c1: member {name}: ")
    ]


async def ls(service: Service, cluster: str = "c1") -> str:
    return "\n".join((await run_command(service, f"ls {cluster}")).render())


# --- rise and fall -----------------------------------------------------------------------


async def test_a_member_hung_for_less_than_fall_heartbeats_stays_online(
    rtpproxy: MemberFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=MEMBER_LOG)
    victim, healthy = rtpproxy(), rtpproxy()
    proxies = [victim, healthy]
    # fall 3 heartbeats, 0.3 s apart. The victim is stopped until two heartbeats in a row
    # have failed (each after its 0.25 s timeout) and resumed at once: stopped for about
    # 0.3 + 0.25 s, less than fall intervals (0.9 s). The third heartbeat, due 0.3 s
    # after the second, is answered once it runs again. (The fixed rule before flap
    # damping took a member out at the second failure.)
    timers = {"heartbeat_interval": 0.3, "member_timeout": 0.25, "fall": 3}
    async with udp_cluster(proxies, **timers) as (service, client):
        m0 = service.running["c1"].members["m0"]
        owners = await place(client, "s", 40, proxies)
        on_healthy = [c for c, o in owners.items() if o == healthy.control]
        failed: list[str] = []
        resumed = trio.Event()

        async def use_calls_on_the_healthy_member() -> None:
            while not resumed.is_set():
                for call in on_healthy:
                    reply = await client.command(f"L {call} 127.0.0.1 4002 f t", timeout=2)
                    if reply.startswith("E") or owner_of(reply, proxies) is not healthy:
                        failed.append(f"{call}: {reply!r}")

        caplog.clear()
        victim.hang()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(use_calls_on_the_healthy_member)
                await checked_until(m0, lambda: m0.failures >= 2)
                victim.unhang()
                await checked_until(m0, lambda: m0.failures == 0)  # answered again
                resumed.set()
        finally:
            victim.unhang()
        assert m0.state is ONLINE
        assert moves_of(caplog, "m0") == []  # never taken out
        assert failed == []
        served = await served_by(client, "after", 40, proxies)
        assert served[victim.control] > 0  # equal weights: none of 40 has a chance of 1e-12


async def test_a_member_hung_longer_goes_offline_and_takes_calls_after_rise_good_probes(
    rtpproxy: MemberFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=MEMBER_LOG)
    victim, healthy = rtpproxy(), rtpproxy()
    proxies = [victim, healthy]
    rise = 3
    timers = {
        "heartbeat_interval": 0.3,
        "offline_probe_interval": 1.0,
        "member_timeout": 0.25,
        "fall": 2,
        "rise": rise,
    }
    async with udp_cluster(proxies, **timers) as (service, client):
        m0 = service.running["c1"].members["m0"]
        caplog.clear()
        victim.hang()
        try:
            await moved_until(m0, lambda: m0.state is OFFLINE)
        finally:
            round_then = m0.checked  # the round in progress as it runs again
            victim.unhang()
        assert moves_of(caplog, "m0") == [
            "c1: member m0: offline (no answer to 2 heartbeats in a row)"
        ]
        # Count the probe rounds that end after the resume. The first may have been sent
        # while it was stopped (answered or not); every later one is answered. So it must
        # come back at round rise or rise + 1, and take no new call before.
        rounds = 0
        while m0.state is OFFLINE:
            with trio.fail_after(WAIT):
                await round_then.wait()
            round_then = m0.checked
            rounds += 1
            if m0.state is OFFLINE:
                assert rounds < rise + 1
                assert "state = offline" in await ls(service)
                served = await served_by(client, f"out{rounds}-", 5, proxies)
                assert served == {healthy.control: 5}
        assert rise <= rounds <= rise + 1
        assert moves_of(caplog, "m0")[1:] == [
            f"c1: member m0: online (answered {rise} probes in a row)"
        ]
        served = await served_by(client, "back", 40, proxies)
        assert served[victim.control] > 0  # equal weights: none of 40 has a chance of 1e-12


async def test_a_member_that_flaps_five_times_is_held_down(
    rtpproxy: MemberFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=MEMBER_LOG)
    victim, healthy = rtpproxy(), rtpproxy()
    proxies = [victim, healthy]
    # One failed heartbeat takes it out, one good probe brings it back: five flaps take
    # a few seconds, well inside the default window (5 outs in 60 s).
    timers = {
        "heartbeat_interval": 0.2,
        "offline_probe_interval": 0.2,
        "member_timeout": 0.25,
        "fall": 1,
        "rise": 1,
        "hold_down": 2.0,
    }
    async with udp_cluster(proxies, **timers) as (service, client):
        m0 = service.running["c1"].members["m0"]
        caplog.clear()
        for flap in range(5):
            victim.hang()
            try:
                await moved_until(m0, lambda: m0.state is OFFLINE)
            finally:
                victim.unhang()
            if flap < 4:
                assert m0.held_down_left() is None
                await moved_until(m0, lambda: m0.state is ONLINE)
        held_until = m0.damping.held_until
        assert held_until is not None and m0.held_down_left() is not None
        text = await ls(service)
        assert "held down = " in text and "sec (flapping)" in text
        # it answers every probe, and stays out (no new call) until the hold-down ends
        held_rounds = 0
        while m0.held_down_left() is not None:
            assert m0.state is OFFLINE
            served = await served_by(client, f"held{held_rounds}-", 3, proxies)
            assert served == {healthy.control: 3}
            await next_check(m0)
            held_rounds += 1
        assert held_rounds > 0
        await moved_until(m0, lambda: m0.state is ONLINE)
        assert trio.current_time() >= held_until
        assert "held down" not in await ls(service)
    held = [m for m in moves_of(caplog, "m0") if "held down" in m]
    assert held == [
        "c1: member m0: offline (no answer to 1 heartbeat in a row; held down for 2 s:"
        " out 5 times within 60 s)"
    ]


# --- slow start ---------------------------------------------------------------------------


async def test_a_recovered_members_share_grows_over_its_slow_start(
    rtpproxy: MemberFactory,
) -> None:
    victim, healthy = rtpproxy(), rtpproxy()
    proxies = [victim, healthy]
    ramp = 3.0
    members = [
        member_config("m0", victim, weight=100, capacity=100_000),
        member_config("m1", healthy, weight=100, capacity=100_000),
    ]
    timers = {
        "heartbeat_interval": 0.2,
        "offline_probe_interval": 0.2,
        "member_timeout": 0.25,
        "fall": 1,
        "rise": 1,
        "slow_start": ramp,
    }
    async with udp_cluster([], members=members, **timers) as (service, client):
        m0, m1 = (service.running["c1"].members[name] for name in ("m0", "m1"))
        assert m0.ramp_since is None  # it started with the service: not ramped
        victim.hang()
        try:
            await moved_until(m0, lambda: m0.state is OFFLINE)
        finally:
            victim.unhang()
        await moved_until(m0, lambda: m0.state is ONLINE)
        start = m0.ramp_since
        assert start is not None
        assert "effective weight = " in await ls(service)

        # Calls in three thirds of the ramp and after it, at most 150 in each. Before each
        # call the victim's chance is read from the weights in effect (the pick reads
        # them the same way, microseconds later).
        chances: list[list[float]] = [[], [], [], []]
        landed = [0, 0, 0, 0]
        for phase in range(4):
            begin, end = start + phase * ramp / 3, start + (phase + 1) * ramp / 3
            await trio.sleep_until(begin)  # time itself is what the ramp follows
            for n in range(150):
                now = trio.current_time()
                if phase < 3 and now >= end:
                    break
                shares = [m.effective_weight * (1 - m.utilisation) for m in (m0, m1)]
                chances[phase].append(shares[0] / sum(shares))
                reply = await client.command(f"U r{phase}-{n} 127.0.0.1 4000 f")
                landed[phase] += owner_of(reply, proxies).control == victim.control
        assert m0.slow_start_left() is None and "effective weight" not in await ls(service)

    for phase in range(4):
        # The count of a phase is a sum of independent draws with these chances: its
        # mean is their sum, its variance the sum of p (1 - p); 5 sigma, plus 1 for the
        # discreteness of few calls.
        expected = sum(chances[phase])
        sigma = math.sqrt(sum(p * (1 - p) for p in chances[phase]))
        assert abs(landed[phase] - expected) <= 5 * sigma + 1, (phase, landed, expected)
    # The chances themselves: from 10 % of the weight at the start of the ramp (1/11 of
    # the calls) to the weight at the end of each third (0.4, 0.7, 1.0 of it), the full
    # weight (1/2) after the ramp; growing from third to third. 0.01 for utilisation.
    for phase, ramped in enumerate((0.4, 0.7, 1.0)):
        top = 100 * ramped / (100 * ramped + 100)
        assert all(1 / 11 - 0.01 <= p <= top + 0.01 for p in chances[phase]), phase
    assert chances[3] and all(p == pytest.approx(0.5, abs=0.01) for p in chances[3])
    means = [sum(c) / len(c) for c in chances if c]
    assert means == sorted(means)
    # After the ramp the victim has its weight share: 150 calls at 1/2, 5 sigma.
    assert abs(landed[3] - len(chances[3]) / 2) <= bound(len(chances[3]), 0.5)


# --- backup members -----------------------------------------------------------------------


async def test_a_backup_takes_new_calls_only_while_no_primary_can(
    rtpproxy: MemberFactory,
) -> None:
    p0, p1, backup = rtpproxy(), rtpproxy(), rtpproxy()
    proxies = [p0, p1, backup]
    members = [
        member_config("p0", p0),
        member_config("p1", p1),
        member_config("b", backup, backup="yes"),
    ]
    async with udp_cluster([], members=members) as (service, client):
        cluster = service.running["c1"]
        assert "backup = yes" in await ls(service)
        served = await served_by(client, "up", 60, proxies)
        assert served[backup.control] == 0 and served[p0.control] + served[p1.control] == 60

        for name in ("p0", "p1"):
            await service.suspend_member("c1", name)
        on_backup = await place(client, "susp", 30, proxies)
        assert set(on_backup.values()) == {backup.control}

        for name in ("p0", "p1"):
            await service.resume_member("c1", name)
        served = await served_by(client, "resumed", 60, proxies)
        assert served[backup.control] == 0
        await still_there(client, on_backup, proxies)

        p0.kill()
        p1.kill()
        for name in ("p0", "p1"):
            member = cluster.members[name]
            await moved_until(member, lambda m=member: m.state is OFFLINE)
        killed = await place(client, "killed", 30, proxies)
        assert set(killed.values()) == {backup.control}
        on_backup |= killed

        p0.start()  # again, on its address: it comes back after rise good probes
        back = cluster.members["p0"]
        await moved_until(back, lambda: back.state is ONLINE)
        served = await served_by(client, "returned", 30, proxies)
        assert served == {p0.control: 30}
        await still_there(client, on_backup, proxies)


# --- live changes of weight, capacity, backup -------------------------------------------


async def test_modify_set_and_reload_change_weights_at_once_and_keep_the_calls(
    rtpproxy: MemberFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=MEMBER_LOG)
    a, b = rtpproxy(), rtpproxy()
    proxies = [a, b]
    listen = f"udp:127.0.0.1:{free_port()}"
    members = [
        member_config("m0", a, capacity=100_000),
        member_config("m1", b, capacity=100_000),
    ]
    config = Config(clusters=[cluster_config([], [listen], members=members)])
    async with live_service(tmp_path, config) as (service, admin):
        client = UdpControlClient(listen)
        m1 = service.running["c1"].members["m1"]
        connection = m1.client
        before = await place(client, "old", 40, proxies)
        caplog.clear()

        assert await admin("modify c1 set m9 weight=300") == ["ERROR: m9: RTPproxy not found"]
        assert await admin("modify c1 set m1 weight=0") == [
            "ERROR: cluster 'c1', rtpproxy 'm1': <weight>: must be > 0, got '0'"
        ]
        assert await admin.ok("modify c1 set m1 weight=300") == []
        assert "weight = 300" in "\n".join(await admin.ok("ls c1"))
        calls = 400
        served = await served_by(client, "w", calls, proxies)
        # 300 of 400 expected (share 3/4), 5 sigma = 43
        assert abs(served[b.control] - calls * 0.75) <= bound(calls, 0.75), served
        await still_there(client, before, proxies)

        assert await admin.ok("modify c1 set m1 backup=yes") == []
        assert await served_by(client, "bk", 30, proxies) == {a.control: 30}
        assert await admin.ok("modify c1 set m1 backup=no,capacity=1") == []
        # m1 carries far more than 1 call: full, and m0 has room (soft limit)
        assert await served_by(client, "cap", 30, proxies) == {a.control: 30}

        # no move, no new connection: the member went on as it was
        assert m1.client is connection and m1.state is ONLINE
        assert moves_of(caplog, "m1") == [
            "c1: member m1: weight 100 -> 300 (set by admin)",
            "c1: member m1: backup no -> yes (set by admin)",
            "c1: member m1: capacity 100000 -> 1, backup yes -> no (set by admin)",
        ]

        # save -> --check -> reload: nothing to change
        config_path = Path(service.config_path)
        assert await admin.ok("save") == [f"Saved to {config_path}"]
        checked = check_config(config_path)
        assert checked.returncode == 0, checked.stderr
        saved = {m.name: m for m in load_config(config_path).clusters[0].members}
        assert (saved["m1"].weight, saved["m1"].capacity, saved["m1"].backup) == (300, 1, False)
        assert await admin.ok("reload") == ["Loaded 1 clusters and 2 RTP proxies"]

        # a reload that changes only these applies them the same way
        cluster = load_config(config_path).clusters[0]
        changed = [
            m.model_copy(update={"weight": 100, "capacity": 100_000}) if m.name == "m1" else m
            for m in cluster.members
        ]
        save_config(Config(clusters=[cluster.model_copy(update={"members": changed})]), config_path)
        caplog.clear()
        assert await admin.ok("reload") == [
            "cluster c1: member m1: capacity 1 -> 100000",
            "cluster c1: member m1: weight 300 -> 100",
            "Loaded 1 clusters and 2 RTP proxies",
        ]
        assert moves_of(caplog, "m1") == [
            "c1: member m1: weight 300 -> 100, capacity 1 -> 100000 (reloaded)"
        ]
        assert m1.client is connection and m1.state is ONLINE
        served = await served_by(client, "r", calls, proxies)
        assert abs(served[b.control] - calls * 0.5) <= bound(calls, 0.5), served
        await still_there(client, before, proxies)
        client.close()


async def test_a_reload_applies_damping_and_slow_start_to_running_members_and_warns(
    rtpproxy: MemberFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = rtpproxy()
    listen = f"udp:127.0.0.1:{free_port()}"
    config = Config(clusters=[cluster_config([proxy], [listen])])
    async with live_service(tmp_path, config) as (service, admin):
        member = service.running["c1"].members["m0"]
        config_path = Path(service.config_path)
        cluster = config.clusters[0].model_copy(
            update={"rise": 4, "fall": 3, "slow_start": 30.0, "member_timeout": 1.5}
        )
        save_config(Config(clusters=[cluster]), config_path)
        warning = (
            "cluster 'c1': <member_timeout>: 1.5 s is above 0.9 s: SIP servers send a command"
            " again after 1 s, so a member that does not answer is given up only after that"
        )
        lines = await admin.ok("reload")
        assert f"warning: {warning}" in lines
        assert f"reload: {warning}" in [r.getMessage() for r in caplog.records]
        settings = member.damping.settings
        assert (settings.rise, settings.fall, member.policy.slow_start) == (4, 3, 30.0)
        assert member.state is ONLINE
