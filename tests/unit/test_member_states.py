"""The member state machine: its moves, and what the supervisor does with them.

Examples for each move, then a property over random sequences of the events a member
lives through (probes and heartbeats answered or not, forwarded commands answered or
not, suspend, resume, delete, drain deadlines, connections lost, new calls placed and
ended, time passing), under random damping settings: no move outside the transition
table, the derived status always agrees with the state, a member is never removed while
the session table still binds a call to it, and a member its damping holds out (not up,
or held down) is never offered a new call.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from rtpcluster.cluster.balancer import pick
from rtpcluster.cluster.damping import DampingSettings
from rtpcluster.cluster.decisions import Forward, OnSilence, PlaceNewCall
from rtpcluster.cluster.member import (
    DRAINING,
    OFFLINE,
    ONLINE,
    PROBING,
    REMOVED,
    TRANSITIONS,
    Asked,
    Member,
    MemberPolicy,
    MemberState,
    MemberStateError,
)
from rtpcluster.cluster.outcomes import Outcomes
from rtpcluster.cluster.sessions import SessionTable
from rtpcluster.cluster.supervisor import MemberSupervisor, embedded_args
from rtpcluster.config import ClusterConfig, MemberConfig, MemberStatus
from rtpcluster.endpoint import Endpoint
from rtpcluster.protocol import parse_command
from rtpcluster.transport.pump import DatagramPump

_port = itertools.count(25000)
FALL = DampingSettings().fall  # failures in a row that take a member out by default
RISE = DampingSettings().rise


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def config(name: str = "m", status: MemberStatus = MemberStatus.ACTIVE) -> MemberConfig:
    return MemberConfig.model_validate(
        {"name": name, "protocol": "udp", "address": f"127.0.0.1:{next(_port)}", "status": status}
    )


def online_member(name: str = "m", clock: Clock | None = None, **kwargs: object) -> Member:
    member = Member(config(name), cluster="c1", clock=clock or Clock(), **kwargs)  # type: ignore[arg-type]
    member.answered_probe()
    return member


def bring_back(member: Member, probes: int = RISE) -> None:
    for _ in range(probes):
        member.answered_probe()


def beat(member: Member, sessions: int) -> None:
    member.heartbeat({"active sessions": sessions}, member.placed_since_report)


# --- examples ------------------------------------------------------------------------------


def test_a_member_starts_probing_and_is_online_once_it_answers() -> None:
    member = Member(config(), cluster="c1", clock=Clock())
    assert (member.state, member.online, member.status) == (PROBING, False, MemberStatus.ACTIVE)
    member.answered_probe()
    assert (member.state, member.online) == (ONLINE, True)


def test_fall_unanswered_requests_in_a_row_take_it_offline_and_rise_probes_bring_it_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    member = online_member()
    member.record_silence(Asked.HEARTBEAT)
    member.record_answer()  # an answer ends the run
    member.record_silence(Asked.COMMAND)
    assert member.state is ONLINE
    member.record_silence(Asked.HEARTBEAT)
    assert member.failures == FALL == 2
    assert (member.state, member.online) == (OFFLINE, False)
    member.answered_probe()
    assert (member.state, member.rising) == (OFFLINE, True)  # one good probe of RISE
    member.probe_failed()  # the streak starts again
    assert (member.state, member.rising) == (OFFLINE, False)
    bring_back(member, RISE - 1)
    assert member.state is OFFLINE
    member.answered_probe()
    assert (member.state, member.failures) == (ONLINE, 0)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", "c1: member m: online (answers V and the capabilities it needs)"),
        (
            "WARNING",
            "c1: member m: offline (no answer to 1 forwarded command and 1 heartbeat in a row)",
        ),
        ("INFO", "c1: member m: online (answered 2 probes in a row)"),
    ]


def test_fall_and_rise_follow_the_policy() -> None:
    policy = MemberPolicy(DampingSettings(rise=1, fall=3))
    member = online_member(policy=policy)
    for _ in range(2):
        member.record_silence(Asked.HEARTBEAT)
    assert member.state is ONLINE
    member.record_silence(Asked.COMMAND)
    assert member.state is OFFLINE
    member.answered_probe()
    assert member.state is ONLINE


def test_a_timeout_of_a_command_sent_before_it_went_out_breaks_no_rise_streak() -> None:
    member = online_member()
    for _ in range(FALL):
        member.record_silence(Asked.HEARTBEAT)
    member.answered_probe()
    member.record_silence(Asked.COMMAND)  # sent while it was online, timed out now
    member.answered_probe()
    assert member.state is ONLINE


def test_a_flapping_member_is_held_down_logged_once_and_back_after_the_hold(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    clock = Clock()
    settings = DampingSettings(rise=1, fall=1, flap_limit=3, flap_window=60, hold_down=10)
    member = online_member(clock=clock, policy=MemberPolicy(settings))
    for _ in range(2):
        clock.now += 1
        member.record_silence(Asked.HEARTBEAT)
        member.answered_probe()
        assert member.state is ONLINE
    caplog.clear()
    clock.now += 1
    member.record_silence(Asked.HEARTBEAT)  # the third out within 60 s
    assert member.held_down_left() == 10.0
    for _ in range(3):
        clock.now += 3
        member.answered_probe()
        assert (member.state, member.accepts_new_sessions) == (OFFLINE, False)
    clock.now += 1  # 10 s after it went out
    assert member.held_down_left() is None
    member.answered_probe()
    assert member.state is ONLINE
    assert [r.getMessage() for r in caplog.records] == [
        "c1: member m: offline (no answer to 1 heartbeat in a row; held down for 10 s:"
        " out 3 times within 60 s)",
        "c1: member m: online (answered again)",
    ]


def test_a_lost_connection_takes_it_out_at_once() -> None:
    member = online_member()
    member.lost("connection failed")
    assert member.state is OFFLINE
    bring_back(member)
    assert member.state is ONLINE


def test_an_address_change_starts_the_damping_afresh() -> None:
    member = online_member()
    for _ in range(FALL):
        member.record_silence(Asked.HEARTBEAT)
    member.restart("address changed")
    member.answered_probe()  # nothing is known against the new address
    assert member.state is ONLINE


# --- slow start -------------------------------------------------------------------------------


def test_slow_start_ramps_every_return_but_not_the_first_online_of_a_starting_member() -> None:
    clock = Clock(100.0)
    policy = MemberPolicy(DampingSettings(rise=1), slow_start=10.0)
    member = online_member(clock=clock, policy=policy, ramp_first_online=False)
    assert (member.ramp_since, member.effective_weight) == (None, 100)
    member.lost("connection failed")
    clock.now = 200.0
    member.answered_probe()  # recovery: ramped
    assert member.ramp_since == 200.0
    assert member.effective_weight == pytest.approx(10.0)
    clock.now = 205.0
    assert member.effective_weight == pytest.approx(55.0)
    assert member.slow_start_left() == pytest.approx(5.0)
    clock.now = 210.0
    assert (member.effective_weight, member.slow_start_left()) == (100, None)
    beat(member, 0)  # a heartbeat forgets the finished ramp
    assert member.ramp_since is None
    member.suspend()
    clock.now = 300.0
    member.resume()  # resumed: ramped
    assert member.ramp_since == 300.0
    member.drain(None)
    assert member.ramp_since is None  # takes no calls: no ramp
    member.resume()  # the drain ends: ramped again
    assert member.ramp_since == 300.0


def test_a_member_added_to_a_running_cluster_is_ramped_and_slow_start_0_ramps_nothing() -> None:
    clock = Clock(5.0)
    added = online_member(clock=clock, policy=MemberPolicy(slow_start=30.0))
    assert (added.ramp_since, added.effective_weight) == (5.0, 10.0)
    off = online_member(clock=clock, policy=MemberPolicy(slow_start=0.0))
    assert (off.ramp_since, off.effective_weight) == (None, 100)


def test_a_suspended_starting_member_is_ramped_when_resumed() -> None:
    clock = Clock()
    member = Member(
        config(status=MemberStatus.SUSPENDED),
        clock=clock,
        policy=MemberPolicy(slow_start=10.0),
        ramp_first_online=False,
    )
    member.answered_probe()
    assert member.ramp_since is None
    member.resume()
    assert member.ramp_since == 0.0


def test_set_weight_capacity_backup_at_once_keeping_damping_ramp_and_state(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    clock = Clock()
    member = online_member(clock=clock, policy=MemberPolicy(slow_start=10.0))
    member.record_silence(Asked.HEARTBEAT)  # one failure of FALL
    caplog.clear()
    member.adjust(
        config().model_copy(update={"weight": 300, "capacity": 10, "backup": True}), "set by admin"
    )
    assert (member.weight, member.capacity, member.backup) == (300, 10, True)
    assert (member.state, member.failures, member.ramp_since) == (ONLINE, 1, 0.0)
    assert member.config.address != config().address  # nothing else taken
    assert member.effective_weight == pytest.approx(30.0)
    assert [r.getMessage() for r in caplog.records] == [
        "c1: member m: weight 100 -> 300, capacity 4000 -> 10, backup no -> yes (set by admin)"
    ]
    member.record_silence(Asked.HEARTBEAT)
    assert member.state is OFFLINE  # the failure before the change still counted


def test_suspension_is_kept_while_it_is_away_and_shows_in_the_status() -> None:
    member = online_member()
    member.suspend()
    assert (member.status, member.accepts_new_sessions) == (MemberStatus.SUSPENDED, False)
    member.lost("connection failed")
    bring_back(member)
    assert (member.state, member.status) == (ONLINE, MemberStatus.SUSPENDED)
    assert member.config.status is MemberStatus.SUSPENDED  # what save and reload compare
    member.resume()
    assert (member.status, member.accepts_new_sessions) == (MemberStatus.ACTIVE, True)


def test_a_drain_ends_by_two_empty_heartbeats_and_not_while_a_call_is_being_placed() -> None:
    member = online_member()
    member.drain(None)
    assert (member.state, member.status, member.online) == (DRAINING, MemberStatus.DRAINING, True)
    assert not member.accepts_new_sessions
    beat(member, 0)
    member.placed_since_report = 1  # an offer on its way to it: placed after this beat was asked
    member.heartbeat({"active sessions": 0}, placed_before=0)
    assert member.state is DRAINING
    member.placed_since_report = 0
    beat(member, 3)  # calls: the count starts again
    beat(member, 0)
    assert member.state is DRAINING
    beat(member, 0)
    assert member.state is REMOVED


@pytest.mark.parametrize("how", ["deadline", "silence", "connection"])
def test_a_drain_is_cut_short_by_its_deadline_or_by_silence(how: str) -> None:
    member = online_member()
    member.drain(123.0)
    assert member.drain_deadline == 123.0
    if how == "deadline":
        member.drain_deadline_reached()
    elif how == "silence":
        for _ in range(FALL):
            member.record_silence(Asked.COMMAND)
    else:
        member.lost("connection failed")
    assert member.state is REMOVED


@pytest.mark.parametrize("cancel", ["resume", "suspend"])
def test_resume_or_suspend_cancel_a_drain(cancel: str) -> None:
    member = online_member()
    member.drain(123.0)
    getattr(member, cancel)()
    assert (member.state, member.drain_deadline) == (ONLINE, None)
    assert member.status is (MemberStatus.ACTIVE if cancel == "resume" else MemberStatus.SUSPENDED)


def test_deleting_a_member_that_does_not_answer_removes_it_at_once() -> None:
    for member in (Member(config(), cluster="c1", clock=Clock()), online_member()):
        member.lost("connection failed")
        member.drain(None)
        assert member.state is REMOVED


def test_a_move_outside_the_table_is_refused() -> None:
    member = Member(config(), cluster="c1", clock=Clock())
    with pytest.raises(MemberStateError, match="probing -> draining"):
        member._change(DRAINING, "test")
    member.drain(None)
    assert member.state is REMOVED
    for state in MemberState:
        if state is not REMOVED:
            with pytest.raises(MemberStateError):
                member._change(state, "test")


def test_removed_is_final() -> None:
    assert TRANSITIONS[REMOVED] == frozenset()
    member = online_member()
    member.drain(None)
    member.drain_deadline_reached()
    for move in (member.answered_probe, member.suspend, member.resume):
        move()
    member.restart("again")
    member.reconfigure(config())
    assert member.state is REMOVED


def test_the_supervisor_forgets_a_removed_members_calls_in_the_same_step() -> None:
    sessions: SessionTable[Member] = SessionTable()
    supervisor = _supervisor(sessions, ["a", "b"])
    a, b = supervisor.members["a"], supervisor.members["b"]
    for member in (a, b):
        member.answered_probe()
    sessions.bind("c1", a)
    sessions.bind("c2", b)
    supervisor.drain(a, None)
    beat(a, 0)
    assert sessions.count(a) == 1  # still draining
    beat(a, 0)
    assert a.state is REMOVED and "a" not in supervisor.members
    assert (sessions.get("c1"), sessions.get("c2")) == (None, b)
    assert supervisor.member_list() == [b]


def _supervisor(
    sessions: SessionTable[Member],
    names: list[str],
    clock: Clock | None = None,
    damping: DampingSettings | None = None,
) -> MemberSupervisor:
    timers = damping or DampingSettings()
    settings = ClusterConfig(
        name="c1",
        listen=[Endpoint.parse("udp:127.0.0.1:1")],
        rise=timers.rise,
        fall=timers.fall,
        flap_limit=timers.flap_limit,
        flap_window=timers.flap_window,
        hold_down=timers.hold_down,
        hold_down_max=timers.hold_down_max,
    )
    return MemberSupervisor(
        "c1",
        lambda: settings,
        sessions,
        DatagramPump(),
        [config(n) for n in names],
        clock=clock or Clock(),
    )


# --- the property ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    kind: str
    member: int
    value: int = 0


# Events that may end a drain: its own report, silence, a lost connection, the deadline.
_DRAIN_ENDERS = {
    "heartbeat ok",
    "heartbeat failed",
    "command timed out",
    "offer unanswered",
    "connection lost",
    "deadline",
}


class World:
    """Three members under a supervisor, the session table, and offers in flight."""

    def __init__(self, damping: DampingSettings | None = None) -> None:
        self.clock = Clock()
        self.sessions: SessionTable[Member] = SessionTable()
        self.supervisor = _supervisor(self.sessions, ["m0", "m1", "m2"], self.clock, damping)
        self.members = list(self.supervisor.members.values())
        self.outcomes = Outcomes(self.sessions, clock=self.clock)
        self.calls = itertools.count()
        self.offers: list[PlaceNewCall] = []
        self.bound: dict[str, Member] = {}  # what the table should hold, by our own account
        # by our own account too: online/offline flips, and commands whose outcome came
        self.flips = {m: 0 for m in self.members}
        self.sent = {m: 0 for m in self.members}
        self.downtime = {m: 0.0 for m in self.members}

    def step(self, event: Event) -> None:
        before = {m: m.state for m in self.members}
        held_until = {m: m.damping.held_until for m in self.members}
        was_online = {m: m.online for m in self.members}
        self.apply(event)
        for m in self.members:
            self.flips[m] += m.online is not was_online[m]
        self.check(before, event)
        self.check_damping(before, held_until, event)

    def apply(self, event: Event) -> None:
        member = self.members[event.member]
        kind = event.kind
        if kind == "probe ok":
            member.answered_probe()
        elif kind == "probe failed":
            member.probe_failed()
        elif kind == "time passes":
            self.clock.now += event.value / 4  # up to 20 s, in quarter seconds
        elif kind == "heartbeat ok":
            beat(member, event.value)
        elif kind == "heartbeat failed":
            member.record_silence(Asked.HEARTBEAT)
        elif kind in ("command answered", "command timed out", "call ended"):
            self._forward(member, kind)
        elif kind == "connection lost":
            member.lost("connection failed")
        elif kind == "address changed":
            member.restart("address changed")
        elif kind == "suspend":
            self.supervisor.set_status(member, MemberStatus.SUSPENDED)
        elif kind == "resume":
            self.supervisor.set_status(member, MemberStatus.ACTIVE)
        elif kind == "delete":
            self.supervisor.drain(member, None)
        elif kind == "delete with timeout":
            member.drain(1000.0 + event.value)  # the timer itself is the "deadline" event
        elif kind == "deadline":
            member.drain_deadline_reached()
        elif kind == "offer":
            call = f"c{next(self.calls)}"
            request = parse_command(f"U {call} 127.0.0.1 4000 f")
            offer = PlaceNewCall(member, request, request, call, 0.3, None)
            self.outcomes.offer_sent(offer)
            self.offers.append(offer)
        elif kind in ("offer answered", "offer unanswered"):
            offer = self.offers.pop(event.value % len(self.offers))
            self.sent[offer.member] += 1
            if kind == "offer answered":
                self.outcomes.call_placed(offer, "35000 127.0.0.1")
                if offer.member.state is not REMOVED:
                    self.bound[offer.call_id] = offer.member
            else:
                self.outcomes.offer_unanswered(offer, timed_out=True)

    def _forward(self, member: Member, kind: str) -> None:
        mine = [call for call, owner in self.bound.items() if owner is member]
        call = mine[0] if mine else "unknown"
        op = "D" if kind == "call ended" else "L"
        command = parse_command(f"{op} {call} f t" if op == "D" else f"L {call} 1.2.3.4 5 f t")
        silence = OnSilence.DEFER_AND_ANSWER_0 if op == "D" else OnSilence.ANSWER_E997
        decision = Forward(member, command, 0.5, silence, call if op == "D" else None, None)
        self.sent[member] += 1
        if kind == "command timed out":
            self.outcomes.forward_unanswered(decision)
        else:
            self.outcomes.forwarded(decision, "0" if op == "D" else "35000")
        if op == "D":
            self.bound.pop(call, None)

    def check(self, before: dict[Member, MemberState], event: Event) -> None:
        for member in self.members:
            was, now = before[member], member.state
            assert now is was or now in TRANSITIONS[was], (was, now, event)
            if was is DRAINING and now is REMOVED:
                assert event.kind in _DRAIN_ENDERS, event
                if event.kind == "heartbeat ok":  # drained by its own report
                    assert member.zero_heartbeats >= 2 and member.placed_since_report <= 0
            assert member.online is (now is ONLINE or now is DRAINING)
            # counted once per move and per command, whoever moved it
            counters = member.counters
            assert counters.state_changes == self.flips[member], event
            assert sum(counters.commands.values()) == self.sent[member], event
            downtime = counters.downtime()
            assert downtime >= self.downtime[member]
            self.downtime[member] = downtime
            assert (member.status is MemberStatus.DRAINING) is (now is DRAINING)
            if member.accepts_new_sessions:
                assert now is ONLINE and not member.suspended
            if now is REMOVED:
                # never removed while the table still binds a call to it
                assert self.sessions.count(member) == 0
                assert member not in self.supervisor.members.values()
                for call, owner in list(self.bound.items()):
                    if owner is member:
                        assert self.sessions.get(call) is None
                        del self.bound[call]
        for call, owner in self.bound.items():  # and every call of the others stays bound
            assert self.sessions.get(call) is owner, (call, owner.name)

    def check_damping(
        self,
        before: dict[Member, MemberState],
        held_until: dict[Member, float | None],
        event: Event,
    ) -> None:
        """Online exactly while the damping says up; never a new call while it holds out."""
        now = self.clock.now
        for member in self.members:
            damping = member.damping
            if member.state is not REMOVED:
                assert member.online is damping.up, (member.state, event)
            held_out = not damping.up or damping.held_down(now)
            if held_out:
                assert not member.accepts_new_sessions, (member.name, event)
            if before[member] is OFFLINE and member.state is ONLINE:  # back: only so
                assert event.kind == "probe ok", event
                until = held_until[member]
                assert until is None or now >= until, (until, now)
        chosen = pick(self.members, hard_limit=False)
        if chosen is not None:
            assert chosen.damping.up and not chosen.damping.held_down(now)
            assert chosen.accepts_new_sessions


members = st.integers(0, 2)


@st.composite
def damping_settings(draw: st.DrawFn) -> DampingSettings:
    """Small counts and short holds, so that flaps and hold-downs happen in a few steps."""
    hold_down = draw(st.integers(1, 30))
    return DampingSettings(
        rise=draw(st.integers(1, 3)),
        fall=draw(st.integers(1, 3)),
        flap_limit=draw(st.integers(0, 3)),
        flap_window=draw(st.integers(1, 120)),
        hold_down=hold_down,
        hold_down_max=draw(st.integers(hold_down, 120)),
    )


class MemberLives(RuleBasedStateMachine):
    """Random sequences of what happens to members; each event only where it can happen
    (the router sends nothing to a member that is not online, picks only one that takes
    new calls; a deadline runs only while a member drains; health probes only a member
    that is not online)."""

    def __init__(self) -> None:
        super().__init__()
        self.world = World()

    @initialize(damping=damping_settings())
    def settings(self, damping: DampingSettings) -> None:
        self.world = World(damping)

    def _member(self, index: int) -> Member:
        return self.world.members[index]

    @rule(i=members)
    def probe_ok(self, i: int) -> None:
        self.world.step(Event("probe ok", i))

    @rule(i=members)
    def probe_failed(self, i: int) -> None:
        if not self._member(i).online:
            self.world.step(Event("probe failed", i))

    @rule(quarters=st.integers(0, 80))
    def time_passes(self, quarters: int) -> None:
        self.world.step(Event("time passes", 0, quarters))

    @rule(i=members, sessions=st.integers(0, 3))
    def heartbeat_ok(self, i: int, sessions: int) -> None:
        if self._member(i).online:
            self.world.step(Event("heartbeat ok", i, sessions))

    @rule(i=members, kind=st.sampled_from(["heartbeat failed", "command timed out"]))
    def silence(self, i: int, kind: str) -> None:
        if self._member(i).online:
            self.world.step(Event(kind, i))

    @rule(i=members, kind=st.sampled_from(["command answered", "call ended"]))
    def answered(self, i: int, kind: str) -> None:
        if self._member(i).online:
            self.world.step(Event(kind, i))

    @rule(
        i=members,
        kind=st.sampled_from(["connection lost", "address changed", "suspend", "resume", "delete"]),
    )
    def operator_or_network(self, i: int, kind: str) -> None:
        self.world.step(Event(kind, i))

    @rule(i=members, timeout=st.integers(0, 3))
    def delete_with_timeout(self, i: int, timeout: int) -> None:
        self.world.step(Event("delete with timeout", i, timeout))

    @rule(i=members)
    def deadline(self, i: int) -> None:
        if self._member(i).state is DRAINING:
            self.world.step(Event("deadline", i))

    @rule(i=members)
    def offer(self, i: int) -> None:
        if self._member(i).accepts_new_sessions:
            self.world.step(Event("offer", i))

    @precondition(lambda self: bool(self.world.offers))
    @rule(k=st.integers(0, 7), answered=st.booleans())
    def offer_outcome(self, k: int, answered: bool) -> None:
        kind = "offer answered" if answered else "offer unanswered"
        self.world.step(Event(kind, 0, k))


MemberLives.TestCase.settings = settings(max_examples=300, stateful_step_count=60, deadline=None)
test_random_lives_of_members_stay_within_the_transition_table = MemberLives.TestCase


def test_an_embedded_member_gets_its_address_loopback_rtp_and_port_range() -> None:
    udp = MemberConfig.model_validate(
        {"name": "e", "protocol": "embedded", "address": "udp:127.0.0.2:22301",
         "rtp_port_min": 40000, "rtp_port_max": 40999}
    )  # fmt: skip
    assert embedded_args(udp) == [
        "-s", "udp:127.0.0.2:22301", "-F", "-d", "err", "-l", "127.0.0.2",
        "-m", "40000", "-M", "40999",
    ]  # fmt: skip
    unix = MemberConfig.model_validate(
        {"name": "e", "protocol": "embedded", "address": "cunix:/run/e.sock"}
    )
    assert embedded_args(unix) == ["-s", "cunix:/run/e.sock", "-F", "-d", "err", "-l", "127.0.0.1"]
