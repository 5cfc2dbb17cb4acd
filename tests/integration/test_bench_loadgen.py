"""Smoke tests of the benchmark's load generator: counting, affinity and retransmits.

Against one real RTPproxy (rtp-io, in a subprocess) for the happy path over udp and unix,
and against a scripted UDP responder for the error paths, so that the counters are
checked on exact, known replies. No timing is asserted. An integration test, not a unit
test, because it starts a real RTPproxy; here (not in benchmarks/) so that
``nox -s tests`` runs it with the rest.
"""

from __future__ import annotations

import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from benchmarks.loadgen import LoadJob, MemberRange, merge, run_load
from testsupport import RtpProxy, free_port, next_port_range

RANGE = MemberRange("solo", *next_port_range())


@pytest.fixture(scope="module")
def rtpproxy() -> Iterator[RtpProxy]:
    pytest.importorskip("rtp.io")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        proxy = RtpProxy(
            control=f"udp:127.0.0.1:{free_port()}",
            port_min=RANGE.lo,
            port_max=RANGE.hi,
            extra=["-T", "600", "-W", "600"],  # as the benchmark runs its members
            name="solo",
            workdir=work,
            more_controls=[f"unix:{work / 'solo.sock'}"],
        )
        proxy.start()
        try:
            yield proxy
        finally:
            proxy.stop()


def job(target: str, **kw: object) -> LoadJob:
    args: dict[str, object] = dict(
        target=target, in_flight=2, max_calls=6, duration=60.0, ranges=(RANGE,), tag="t"
    )
    args.update(kw)
    return LoadJob(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize("transport", ["udp", "unix"])
def test_calls_against_real_rtpproxy(rtpproxy: RtpProxy, transport: str) -> None:
    target = rtpproxy.control_of(transport)
    assert target is not None
    r = run_load(job(target, tag=f"real{transport}"))
    assert r.calls_done == 6
    assert r.calls_failed == 0
    assert r.sent == 24  # U, L, re-U, D per call
    assert r.commands == r.replies == 24
    assert len(r.latencies) == 24
    assert r.placements == {"solo": 6}
    assert r.affinity_errors == r.timeouts == r.retransmits == 0
    assert not r.e_replies
    assert r.failures_by_owner.total() == 0


def test_wrong_range_is_an_affinity_error(rtpproxy: RtpProxy) -> None:
    """A reply port outside every member's range cannot be attributed: counted."""
    r = run_load(job(rtpproxy.control, ranges=(MemberRange("elsewhere", 1000, 1999),), tag="wr"))
    assert r.calls_failed == 6
    assert r.calls_done == 0
    assert r.affinity_errors == 6  # the U of each call; the call then stops
    assert r.failures_by_owner == {"?": 6}


def test_offers_mode_keeps_sessions(rtpproxy: RtpProxy) -> None:
    r = run_load(job(rtpproxy.control, mode="offers", max_calls=4, tag="offers"))
    assert r.sent == r.calls_done == 4
    # the sessions stay: an L for one of them finds it (a non-zero port)
    reply = rtpproxy.ask("L offers-1 127.0.0.1 4000 ft0 tt0", timeout=2.0)
    assert reply is not None
    assert reply.split()[0] != "0"


# -- scripted responder: exact replies for the error paths ---------------------------------

Rule = Callable[[str, int], str | None]  # (command, times this cookie was seen) -> reply


class Responder:
    """A UDP control socket that answers by ``rule``; ``None`` means stay silent."""

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.seen: dict[str, int] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)

    @property
    def target(self) -> str:
        return f"udp:127.0.0.1:{self.sock.getsockname()[1]}"

    def serve(self) -> None:
        while not self.stop.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            cookie, _, command = data.decode().partition(" ")
            self.seen[cookie] = self.seen.get(cookie, 0) + 1
            reply = self.rule(command, self.seen[cookie])
            if reply is not None:
                self.sock.sendto(f"{cookie} {reply}\n".encode(), peer)

    def __enter__(self) -> Responder:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


A = MemberRange("a", 40000, 40999)
B = MemberRange("b", 41000, 41999)


def fast(target: str, **kw: object) -> LoadJob:
    return job(target, ranges=(A, B), waits=(0.05, 0.05, 0.05), drain=5.0, **kw)


def test_answer_from_another_member_is_counted() -> None:
    """U served by member a, the L by member b: one affinity error, call still deleted."""

    def rule(command: str, _: int) -> str:
        letter = command.split()[0]
        if letter == "U":
            return "40010 127.0.0.1"
        if letter == "L":
            return "41010 127.0.0.1"
        return "0"

    with Responder(rule) as r:
        res = run_load(fast(r.target, max_calls=3, tag="aff"))
    assert res.affinity_errors == 3
    assert res.calls_failed == 3
    assert res.placements == {"a": 3}
    assert res.failures_by_owner == {"a": 3}
    assert res.sent == 3 * 3  # U, L, then straight to D after the failed L
    assert res.replies == 9
    assert res.commands == 6  # the U and the D of each call succeeded


def test_d_unknown_session_and_lookup_zero() -> None:
    """L answered 0 (session unknown there) and D answered E50: both misrouted."""

    def rule(command: str, _: int) -> str:
        letter = command.split()[0]
        return {"U": "40020", "L": "0", "D": "E50"}[letter]

    with Responder(rule) as r:
        res = run_load(fast(r.target, max_calls=2, in_flight=1, tag="zero"))
    assert res.affinity_errors == 4  # L and D of each call
    assert res.e_replies == {"E50": 2}
    assert res.failures_by_owner == {"a": 4}


def test_retransmits_and_timeouts_are_counted() -> None:
    """First transmission of every command lost; every D lost for good."""

    def rule(command: str, seen: int) -> str | None:
        letter = command.split()[0]
        if seen == 1 or letter == "D":
            return None
        return "41030 127.0.0.1" if letter in "UL" else None

    with Responder(rule) as r:
        res = run_load(fast(r.target, max_calls=2, in_flight=2, tag="rtx"))
    # per call: U, L, re-U each resent once; D sent 3 times and given up
    assert res.timeouts == 2
    assert res.retransmits == 2 * 3 + 2 * 2
    assert res.sent == 8
    assert res.calls_failed == 2
    assert res.placements == {"b": 2}
    assert res.failures_by_owner == {"b": 2}


def test_a_continue_target_gets_every_command_but_the_offer_after_the_delay() -> None:
    """Cross-front-end load: the U to one socket, L/re-U/D to the other, the L only once
    ``answer_delay`` has passed since the U's reply (the order is what is checked)."""
    events: list[tuple[str, str]] = []

    def rule_for(side: str) -> Rule:
        def rule(command: str, _: int) -> str:
            events.append((side, command.split()[0]))
            return "40040 127.0.0.1" if command[0] in "UL" else "0"

        return rule

    with Responder(rule_for("first")) as first, Responder(rule_for("second")) as second:
        res = run_load(
            fast(
                first.target,
                continue_target=second.target,
                answer_delay=0.01,
                max_calls=3,
                in_flight=1,
                tag="cross",
            )
        )
    assert res.calls_done == 3 and res.sent == 12 and res.commands == 12
    assert events == [("first", "U"), ("second", "L"), ("second", "U"), ("second", "D")] * 3
    assert res.abandoned == 0


def test_merge_adds_counters() -> None:
    with Responder(lambda c, _: "40000" if c[0] in "UL" else "0") as r:
        one = run_load(fast(r.target, max_calls=2, tag="m1"))
        two = run_load(fast(r.target, max_calls=3, tag="m2"))
    both = merge([one, two], sequential=True)
    assert both.calls_done == 5
    assert both.commands == 20
    assert both.placements == {"a": 5}
    assert both.window == pytest.approx(one.window + two.window)
