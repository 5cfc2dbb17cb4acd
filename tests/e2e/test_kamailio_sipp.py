"""Kamailio relays sipp calls through rtpcluster to real RTPproxies.

A sipp UAC calls a sipp UAS through Kamailio. Kamailio's ``rtpproxy`` module
sends the offer (INVITE), the answer (200 OK) and the delete (BYE) to
rtpcluster, which fronts three RTPproxies from rtp-io. The UAC plays sipp's
g711a.pcap towards the relay port it was given and the UAS echoes it back.

Each member has its own RTP port block, so the port in an SDP tells which
member relays that call. Counters are read from the members directly (``Ib``,
``G``), never through the cluster.

The ``direct`` tests point Kamailio at the members itself (its own set
balancing): they check the harness and give the baseline the docs compare to.
Timings are reported in the summary, never asserted.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Sequence

import pytest

from tests.e2e.e2e_harness import (
    CLUSTER,
    RUN_TIMEOUT,
    CallRecord,
    Member,
    MemberStats,
    Rig,
    RigFactory,
    UacRun,
    chi_square_p_upper,
    owner_of,
    percentile,
    report,
)
from testsupport import wait_until

pytestmark = pytest.mark.e2e


# --------------------------------------------------------------------------- helpers


def snapshot(nodes: Sequence[Member]) -> dict[str, MemberStats]:
    stats: dict[str, MemberStats] = {}
    for node in nodes:
        value = node.stats()
        assert value is not None, f"{node.name} did not answer Ib/G"
        stats[node.name] = value
    return stats


def finish(rig: Rig, run: UacRun) -> tuple[int, dict[str, CallRecord]]:
    """Wait for a UAC run; join each call with the offer port the UAS saw."""
    rc = run.wait(RUN_TIMEOUT)
    records = run.records()
    ids = set(records)
    wait_until(lambda: ids <= set(rig.sipp.uas_offers()), "the UAS to log every INVITE", 5, 0.05)
    offers = rig.sipp.uas_offers()
    for call_id, record in records.items():
        record.offer_port = offers.get(call_id)
    return rc, records


def placement(
    rig: Rig, records: dict[str, CallRecord], *, fault: tuple[Member, float] | None = None
) -> tuple[dict[str, Member], list[str]]:
    """Member of each call; both SDPs must carry ports of that same member.

    With ``fault=(victim, when)``, a call offered on the victim whose 200 OK came
    after ``when`` may lack a relayed answer (its relay died between offer and
    answer; Kamailio then passes the callee's SDP through). Such calls are
    returned as the second value instead of failing.
    """
    placed: dict[str, Member] = {}
    cut: list[str] = []
    for call_id, record in records.items():
        assert record.offer_port is not None, f"UAS never logged the INVITE of {call_id}"
        offer_owner = owner_of(record.offer_port, rig.nodes)
        answer_owner = owner_of(record.answer_port, rig.nodes)
        assert offer_owner is not None, f"{call_id}: offer port {record.offer_port} not a member's"
        if (
            fault is not None
            and answer_owner is None
            and offer_owner is fault[0]
            and record.invite_at + record.setup_s > fault[1]
        ):
            cut.append(call_id)
            continue
        assert answer_owner is not None, (
            f"{call_id}: answer port {record.answer_port} not a member's"
        )
        assert offer_owner is answer_owner, (
            f"{call_id}: offer on {offer_owner.name}, answer on {answer_owner.name}"
        )
        placed[call_id] = offer_owner
    return placed, cut


def assert_all_completed(run: UacRun, rc: int, records: dict[str, CallRecord]) -> None:
    failed = [r.call_id for r in records.values() if not r.completed]
    assert rc == 0 and len(records) == run.calls and not failed, (
        f"sipp exit {rc}, {len(records)}/{run.calls} calls set up, not completed: {failed[:5]}\n"
        + run.error_tail()
    )


def assert_no_sessions_left(nodes: Sequence[Member]) -> None:
    def empty() -> bool:
        return all(
            (s := n.stats(timeout=0.5)) is not None and s.active_sessions == 0 for n in nodes
        )

    def left() -> str:
        return f"no sessions left on members: { ({n.name: n.stats(timeout=0.5) for n in nodes}) }"

    wait_until(empty, left, 10, 0.2)


def media_ratio(
    before: MemberStats, after: MemberStats, calls: int, pcap_packets: int
) -> tuple[float, float]:
    """Received and relayed packets on a member relative to what its calls should carry.

    Each call carries the pcap once towards the UAS and once back (echo).
    """
    expected = 2 * pcap_packets * calls
    rcvd = after.npkts_rcvd - before.npkts_rcvd
    relayed = after.npkts_relayed - before.npkts_relayed
    return rcvd / expected, relayed / expected


def check_media(
    rig: Rig,
    before: dict[str, MemberStats],
    after: dict[str, MemberStats],
    split: Counter[str],
    label: str,
) -> None:
    ratios = []
    for node in rig.nodes:
        if node.name not in after or node.name not in before or split[node.name] == 0:
            continue
        rcvd, relayed = media_ratio(
            before[node.name], after[node.name], split[node.name], rig.tools.pcap_packets
        )
        ratios.append(f"{node.name} rcvd {rcvd:.3f} relayed {relayed:.3f}")
        # Both directions must flow: one way alone would be at most half.
        assert relayed > 0.75, f"{label}: {node.name} relayed only {relayed:.2%} of its media"
    report(f"{label}: media per member (1.0 = every pcap packet both ways): " + ", ".join(ratios))


def timing_summary(records: dict[str, CallRecord]) -> str:
    setup = [r.setup_s * 1000 for r in records.values()]
    bye = [r.bye_s * 1000 for r in records.values() if r.bye_s is not None]
    return (
        f"setup ms p50 {percentile(setup, 0.5):.1f} max {max(setup, default=0):.1f}; "
        f"BYE ms p50 {percentile(bye, 0.5):.1f} max {max(bye, default=0):.1f}"
    )


def weights_p_value(split: Counter[str], nodes: Sequence[Member]) -> float:
    total = sum(split.values())
    weight_sum = sum(n.weight for n in nodes)
    stat = 0.0
    for node in nodes:
        expected = total * node.weight / weight_sum
        stat += (split[node.name] - expected) ** 2 / expected
    return chi_square_p_upper(stat, len(nodes) - 1)


def kamailio_rtpproxy_timeouts(rig: Rig) -> list[str]:
    """Kamailio's log lines saying it waited out ``rtpproxy_tout`` on a relay."""
    text = rig.kamailio.log_path.read_text(errors="replace")
    return [
        line
        for line in text.splitlines()
        if "timeout waiting reply" in line or "does not respond" in line
    ]


def wait_for_sessions(node: Member, count: int, timeout: float = 30) -> None:
    def enough() -> bool:
        stats = node.stats(timeout=0.5)
        return stats is not None and stats.active_sessions >= count

    wait_until(enough, f"{node.name} to get {count} calls", timeout, 0.1)


def sessions_created(node: Member) -> int | None:
    reply = node.ask("G nsess_created", timeout=0.5)
    return None if reply is None else int(reply.split()[0])


def takes_calls_again(rig: Rig, node: Member, *, deadline_s: float = 60) -> int:
    """Place short calls (no media) until ``node`` relays one; number of calls it took."""
    start = sessions_created(node)
    assert start is not None, f"{node.name} does not answer"
    placed = 0

    def took_one() -> bool:
        nonlocal placed
        run = rig.sipp.start_uac(rig.kamailio.port, calls=6, rate=20, media=False, talk_ms=0)
        rc, records = finish(rig, run)
        assert_all_completed(run, rc, records)
        placed += len(records)
        now = sessions_created(node)
        if now is None or now <= start:
            return False
        on_node = [c for c, m in placement(rig, records)[0].items() if m is node]
        assert on_node, f"{node.name} created sessions for calls that are not ours"
        return True

    # Each try is a sipp run of its own: no pause between them.
    wait_until(took_one, f"{node.name} to take a call after its return", deadline_s, 0)
    return placed


# --------------------------------------------------------------------------- direct baseline


def test_direct_kamailio_set_relays_calls(make_rig: RigFactory) -> None:
    """Harness check and baseline: Kamailio's own set of two RTPproxies."""
    rig = make_rig("direct", [1, 1])
    before = snapshot(rig.nodes)
    run = rig.sipp.start_uac(rig.kamailio.port, calls=20, rate=10)
    rc, records = finish(rig, run)
    assert_all_completed(run, rc, records)
    placed, _ = placement(rig, records)
    split = Counter(m.name for m in placed.values())
    assert_no_sessions_left(rig.nodes)
    after = snapshot(rig.nodes)
    check_media(rig, before, after, split, "direct, 2 members")
    report(
        f"direct, 2 members, {len(records)} calls: split {dict(split)}; {timing_summary(records)}"
    )


def test_direct_kamailio_set_with_stopped_member(make_rig: RigFactory) -> None:
    """Baseline: SIGSTOP one of Kamailio's own two RTPproxies mid-run.

    Measured, not judged: how long SIP requests stall, and what is left on the
    stopped member once it runs again. Asserted: calls relayed by the other
    member complete.
    """
    rig = make_rig("direct", [1, 1])
    victim, other = rig.node("m2"), rig.node("m1")
    run = rig.sipp.start_uac(rig.kamailio.port, calls=40, rate=5)
    wait_for_sessions(victim, 3)
    fault_at = time.time()
    victim.signal(signal.SIGSTOP)
    try:
        rc, records = finish(rig, run)
    finally:
        victim.signal(signal.SIGCONT)
    placed, cut = placement(rig, records, fault=(victim, fault_at))
    on_other = [c for c, m in placed.items() if m is other]
    assert on_other, "no call reached the running member"
    assert all(records[c].completed for c in on_other)
    after_fault = [r for r in records.values() if r.invite_at > fault_at]
    # The stopped member works off what queued in its socket while it was stopped;
    # read its count once two reads in a row agree.
    readings: list[int] = []

    def settled() -> bool:
        stats = victim.stats(timeout=1.0)
        readings.append(-1 if stats is None else stats.active_sessions)
        return len(readings) >= 2 and readings[-1] == readings[-2] >= 0

    wait_until(settled, "two equal readings of m2's sessions", 10, 0.5)
    errors = kamailio_rtpproxy_timeouts(rig)
    report(
        f"direct, SIGSTOP m2: sipp exit {rc}, {len(records)}/{run.calls} calls set up, "
        f"{sum(r.completed for r in records.values())} completed; split "
        f"{dict(Counter(m.name for m in placed.values()))}; {timing_summary(records)}; "
        f"worst setup after the stop {max((r.setup_s for r in after_fault), default=0):.2f} s; "
        f"calls whose answer found m2 stopped {len(cut)}; "
        f"sessions left on m2 after SIGCONT {readings[-1]} (until its 60 s TTL); "
        f"Kamailio rtpproxy timeouts logged {len(errors)}"
    )


# --------------------------------------------------------------------------- through rtpcluster


@pytest.mark.parametrize("socket_kind", ["udp", "unix"])
def test_cluster_relays_calls_by_weight(make_rig: RigFactory, socket_kind: str) -> None:
    rig = make_rig(socket_kind, [100, 100, 400])
    before = snapshot(rig.nodes)
    run = rig.sipp.start_uac(rig.kamailio.port, calls=90, rate=15)
    rc, records = finish(rig, run)
    assert_all_completed(run, rc, records)
    placed, _ = placement(rig, records)
    split = Counter(m.name for m in placed.values())
    assert_no_sessions_left(rig.nodes)
    after = snapshot(rig.nodes)
    check_media(rig, before, after, split, f"cluster over {socket_kind}")
    p_value = weights_p_value(split, rig.nodes)
    report(
        f"cluster over {socket_kind}, weights 100/100/400, {len(records)} calls: split "
        f"{dict(split)} (chi-square p {p_value:.3f}); {timing_summary(records)}"
    )
    assert all(split[n.name] > 0 for n in rig.nodes), f"a member got no call: {dict(split)}"
    # 1e-4: a correct weighted pick fails this once in ten thousand runs, while an
    # even split (30/30/30 for 15/15/60 expected) is far outside it.
    assert p_value > 1e-4, f"split {dict(split)} does not follow the weights"
    assert not kamailio_rtpproxy_timeouts(rig)


def _fault_run(rig: Rig, victim: Member, fault: str) -> None:
    """Calls running while ``victim`` is killed (SIGKILL) or stopped (SIGSTOP)."""
    before = snapshot(rig.nodes)
    run = rig.sipp.start_uac(rig.kamailio.port, calls=60, rate=6)
    wait_for_sessions(victim, 3)
    fault_at = time.time()
    if fault == "kill":
        victim.kill()
    else:
        victim.signal(signal.SIGSTOP)
    try:
        rc, records = finish(rig, run)
    finally:
        if fault == "stop":
            victim.signal(signal.SIGCONT)
    assert_all_completed(run, rc, records)
    placed, cut = placement(rig, records, fault=(victim, fault_at))
    split = Counter(m.name for m in placed.values())
    late = [c for c, m in placed.items() if records[c].invite_at > fault_at and m is victim]
    assert not late, f"{len(late)} calls set up after the {fault} were placed on {victim.name}"
    others = [n for n in rig.nodes if n is not victim]
    assert_no_sessions_left(others)
    after = snapshot(others)
    check_media(rig, before, after, split, f"cluster, {fault} {victim.name}")
    worst_setup = max((r.setup_s for r in records.values() if r.invite_at > fault_at), default=0)
    victim_calls = [c for c, m in placed.items() if m is victim] + cut
    worst_bye = max((records[c].bye_s or 0 for c in victim_calls), default=0)
    report(
        f"cluster, {fault} {victim.name} mid-run, {len(records)} calls: split {dict(split)}; "
        f"{timing_summary(records)}; worst setup after the fault {worst_setup * 1000:.1f} ms; "
        f"worst BYE of {victim.name}'s calls {worst_bye * 1000:.1f} ms; "
        f"calls whose answer found {victim.name} gone (SDP passed through unrelayed) {len(cut)}"
    )


def test_cluster_member_killed(make_rig: RigFactory) -> None:
    rig = make_rig("udp", [100, 100, 100])
    victim = rig.node("m2")
    _fault_run(rig, victim, "kill")
    # No SIP request waited out Kamailio's rtpproxy timeout on the cluster.
    assert not kamailio_rtpproxy_timeouts(rig)
    victim.start()  # a fresh RTPproxy on the same ports
    returned_at = time.monotonic()
    calls = takes_calls_again(rig, victim)
    report(
        f"cluster, killed m2 restarted: took a call again after {calls} calls, "
        f"{time.monotonic() - returned_at:.1f} s"
    )
    assert_no_sessions_left(rig.nodes)


def test_cluster_member_stopped(make_rig: RigFactory) -> None:
    rig = make_rig("udp", [100, 100, 100])
    victim = rig.node("m3")
    _fault_run(rig, victim, "stop")
    assert not kamailio_rtpproxy_timeouts(rig)
    resumed_at = time.monotonic()
    # The deletes of its calls waited in its socket buffer or are re-sent by the
    # cluster: once it runs again nothing may be left on it either.
    assert_no_sessions_left([victim])
    calls = takes_calls_again(rig, victim)
    report(
        f"cluster, stopped m3 resumed: took a call again after {calls} calls, "
        f"{time.monotonic() - resumed_at:.1f} s"
    )
    assert_no_sessions_left(rig.nodes)


def test_cluster_drain_member_with_live_calls(make_rig: RigFactory) -> None:
    rig = make_rig("udp", [100, 100, 100])
    cluster = rig.cluster
    assert cluster is not None
    victim = rig.node("m1")
    before = snapshot(rig.nodes)
    run = rig.sipp.start_uac(rig.kamailio.port, calls=45, rate=6)
    wait_for_sessions(victim, 3)
    result = cluster.ctl("modify", CLUSTER, "delete", victim.name)
    # Calls whose INVITE left while ctl was still starting may land on m1;
    # "after the delete" starts when ctl has its OK back.
    drain_at = time.time()
    assert result.returncode == 0 and result.stdout.strip().endswith("OK"), (
        result.stdout + result.stderr
    )
    live_at_drain = victim.stats()
    assert live_at_drain is not None and live_at_drain.active_sessions > 0
    listed = cluster.members_info(CLUSTER).get(victim.name)
    assert listed is None or listed.get("status") == "DRAINING", listed
    rc, records = finish(rig, run)
    assert_all_completed(run, rc, records)
    placed, _ = placement(rig, records)
    split = Counter(m.name for m in placed.values())
    late = [c for c, r in records.items() if r.invite_at > drain_at and placed[c] is victim]
    assert not late, f"{len(late)} calls set up after the delete were placed on {victim.name}"
    assert_no_sessions_left(rig.nodes)
    after = snapshot(rig.nodes)
    check_media(rig, before, after, split, "cluster, drain m1")
    last_end = max(r.ended_at or 0 for c, r in records.items() if placed[c] is victim)
    wait_until(
        lambda: victim.name not in cluster.members_info(CLUSTER),
        lambda: f"{victim.name} to leave: {cluster.members_info(CLUSTER).get(victim.name)}",
        30,
        0.05,
    )
    report(
        f"cluster, drain m1 with {live_at_drain.active_sessions} live sessions: "
        f"{len(records)} calls, split {dict(split)}; {timing_summary(records)}; "
        f"m1 seen gone from ctl ls {time.time() - last_end:.1f} s after its last call ended"
    )
