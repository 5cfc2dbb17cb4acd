"""Call affinity shared by rtpcluster processes: a real redis-server, real RTPproxies, and
``rtpcluster serve`` processes (testsupport) with the same cluster and member names.

How a test sees that no member was asked about a call it does not hold: every such ask
(an ``L`` or a re-``U`` asked as an ``L``, a ``D``) is one RTPproxy counts in its own
``ncmds_errs`` (``L`` of an unknown call answers ``0`` and counts as an error, ``D``
answers ``E50``), while the heartbeats (``V``, ``VF``, ``Ib``) never do. So a member's
``ncmds_errs`` that stays 0 proves that no broadcast lookup reached it; the replies' RTP
ports (each member has its own range) prove that every command reached the call's member.

Readiness is awaited as events (READY=1); what another process does in the background
(a binding written to Redis, a member seen online) is waited for with the one poll with a
deadline of testsupport.
"""

from __future__ import annotations

import signal
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import MemberFactory
from testsupport import (
    FAST_PROBES,
    MemberEntry,
    RtpclusterProcess,
    RtpProxy,
    ask,
    cluster_xml,
    free_port,
    wait_until,
)
from testsupport.redis_server import RedisServer, redis_server_binary

CALLS = 200
KEY_PREFIX = "rtpcluster:c1:"


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory: unix socket paths (Redis, admin, notify) hold 107 bytes."""
    with tempfile.TemporaryDirectory(prefix="rtpc-aff-") as name:
        yield Path(name)


@pytest.fixture
def redis_server(short_dir: Path) -> Iterator[RedisServer]:
    server = RedisServer(redis_server_binary(), short_dir / "redis")
    server.directory.mkdir()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Fleet:
    """Two members and the rtpcluster processes in front of them, all with one config."""

    proxies: list[RtpProxy]
    workdir: Path
    processes: list[RtpclusterProcess] = field(default_factory=list)

    def config(self, udp_port: int, session_store: str | None = None) -> str:
        entries = [MemberEntry.of(f"m{i}", p) for i, p in enumerate(self.proxies)]
        return cluster_xml(
            "c1", udp_port, entries, settings=FAST_PROBES, session_store=session_store
        )

    def process(self, name: str, session_store: str | None = None) -> RtpclusterProcess:
        """A process (not started) on its own udp port and admin socket."""
        directory = self.workdir / name
        directory.mkdir(exist_ok=True)
        process = RtpclusterProcess(directory, free_port())
        process.config_path.write_text(self.config(process.udp_port, session_store))
        self.processes.append(process)
        return process

    def start(self, process: RtpclusterProcess, *args: str) -> None:
        process.start(*args)
        wait_until(
            lambda: all(m["online"] for m in process.members_info("c1").values()),
            lambda: f"both members online in {process.workdir.name}: {process.log_tail(500)}",
        )

    def owner(self, reply: str | None) -> RtpProxy:
        assert reply is not None, "no reply"
        port = int(reply.split()[0])
        owners = [p for p in self.proxies if p.owns_port(port)]
        assert len(owners) == 1, f"port {port} of {reply!r} is in no member's range"
        return owners[0]

    def member_figures(self) -> list[dict[str, int]]:
        """Each member's own counters (asked directly, not through a cluster)."""
        names = ("ncmds_errs", "nsess_created", "nsess_destroyed")
        figures = []
        for proxy in self.proxies:
            reply = proxy.ask("G " + " ".join(names))
            assert reply is not None, f"{proxy.name} did not answer G"
            figures.append(dict(zip(names, map(int, reply.split()), strict=True)))
        return figures

    def assert_no_lookup_and_no_session_left(self) -> None:
        for proxy, figures in zip(self.proxies, self.member_figures(), strict=True):
            assert figures["ncmds_errs"] == 0, (proxy.name, figures)  # no broadcast reached it
            assert figures["nsess_created"] == figures["nsess_destroyed"], (proxy.name, figures)

    def stop(self) -> None:
        for process in self.processes:
            process.stop()


@pytest.fixture
def fleet(rtpproxy: MemberFactory, short_dir: Path) -> Iterator[Fleet]:
    group = Fleet([rtpproxy(), rtpproxy()], short_dir)
    try:
        yield group
    finally:
        group.stop()


def offer(i: int) -> str:
    return f"U call{i}@test 127.0.0.1 {4000 + 2 * i} f{i}"


def answer(i: int) -> str:
    return f"L call{i}@test 127.0.0.1 {8000 + 2 * i} f{i} t{i}"


def reoffer(i: int) -> str:
    return f"U call{i}@test 127.0.0.1 {4000 + 2 * i} f{i} t{i}"


def delete(i: int) -> str:
    return f"D call{i}@test f{i} t{i}"


# Every key of the pattern with its value, read in one step on the server (a KEYS and
# then an MGET could see a key go in between).
_DUMP = (
    "local out = {} for _, k in ipairs(redis.call('KEYS', ARGV[1])) do "
    "local v = redis.call('GET', k) if v then out[#out + 1] = k out[#out + 1] = v end "
    "end return out"
)


def stored_calls(redis: RedisServer) -> dict[str, str]:
    """call-id -> member name, as Redis holds them now."""
    words = redis.cli("EVAL", _DUMP, "0", KEY_PREFIX + "*").splitlines()
    pairs = zip(words[::2], words[1::2], strict=True)
    return {key.removeprefix(KEY_PREFIX): member for key, member in pairs}


def wait_stored(redis: RedisServer, expected: dict[str, str]) -> None:
    """Until Redis holds exactly ``expected`` (written by a writer task in the background)."""
    wait_until(
        lambda: stored_calls(redis) == expected,
        lambda: f"Redis to hold {len(expected)} bindings, it has {len(stored_calls(redis))}",
    )


def place_calls(
    fleet: Fleet, through: RtpclusterProcess, calls: Sequence[int]
) -> dict[int, RtpProxy]:
    """Offer each call through ``through``; the member each one was placed on."""
    placed = {}
    for i in calls:
        placed[i] = fleet.owner(ask(through.udp, offer(i)))
    return placed


def continue_calls(
    fleet: Fleet,
    through: RtpclusterProcess,
    placed: dict[int, RtpProxy],
    *,
    end: bool = True,
) -> None:
    """Answer, re-offer (and end) each call through ``through``: all on the U's member."""
    for i, member in placed.items():
        assert fleet.owner(ask(through.udp, answer(i))) is member, f"L of call {i}"
        assert fleet.owner(ask(through.udp, reoffer(i))) is member, f"re-U of call {i}"
        if end:
            assert ask(through.udp, delete(i)) == "0\n", f"D of call {i}"


def name_of(fleet: Fleet, proxy: RtpProxy) -> str:
    return f"m{fleet.proxies.index(proxy)}"


# --- two front ends ---------------------------------------------------------------


def test_calls_made_through_one_process_continue_through_the_other(
    fleet: Fleet, redis_server: RedisServer
) -> None:
    a = fleet.process("a")
    b = fleet.process("b")
    for process in (a, b):
        fleet.start(process, "--session-store", redis_server.url)

    for first, second, calls in ((a, b, range(CALLS)), (b, a, range(CALLS, 2 * CALLS))):
        placed = place_calls(fleet, first, calls)
        assert {p.name for p in placed.values()} == {p.name for p in fleet.proxies}
        # the SIP answer comes through the other front end after the binding is stored
        wait_stored(redis_server, {f"call{i}@test": name_of(fleet, p) for i, p in placed.items()})
        reads_before = second.session_store()
        continue_calls(fleet, second, placed)
        reads = second.session_store()
        # each call read once from the store (its L), found there; then known locally
        assert reads["reads_hit"] - reads_before["reads_hit"] == len(placed)
        assert reads["reads_miss"] == reads_before["reads_miss"]
        assert reads["reads_error"] == 0
        wait_stored(redis_server, {})  # every D unbound its call in the store too

    fleet.assert_no_lookup_and_no_session_left()
    assert a.session_store()["up"] and b.session_store()["shared"]


def test_a_killed_process_leaves_its_calls_to_the_other(
    fleet: Fleet, redis_server: RedisServer
) -> None:
    a = fleet.process("a")
    b = fleet.process("b", session_store=redis_server.url)  # from the config element
    fleet.start(a, "--session-store", redis_server.url)
    fleet.start(b)
    placed = place_calls(fleet, a, range(60))
    for i, member in list(placed.items())[:30]:  # half of them answered through A
        assert fleet.owner(ask(a.udp, answer(i))) is member
    wait_stored(redis_server, {f"call{i}@test": name_of(fleet, p) for i, p in placed.items()})

    a.signal(signal.SIGKILL)
    assert a.exit_code() == -signal.SIGKILL

    continue_calls(fleet, b, placed)
    fleet.assert_no_lookup_and_no_session_left()
    wait_stored(redis_server, {})


def test_redis_stopped_mid_run_costs_no_command_and_loses_no_binding(
    fleet: Fleet, redis_server: RedisServer
) -> None:
    a = fleet.process("a")
    b = fleet.process("b")
    for process in (a, b):
        fleet.start(process, "--session-store", redis_server.url)
    before = place_calls(fleet, a, range(20))
    wait_stored(redis_server, {f"call{i}@test": name_of(fleet, p) for i, p in before.items()})

    redis_server.stop()
    # While it is away: calls from before go on through B (its read fails at once: each is
    # found by a broadcast, on its member) and through A (known there); new calls are
    # placed through A, some end, the rest stay live: bound while Redis was away.
    items = list(before.items())
    continue_calls(fleet, b, dict(items[:10]))
    continue_calls(fleet, a, dict(items[10:]))
    during = place_calls(fleet, a, range(20, 60))
    continue_calls(fleet, a, dict(list(during.items())[:10]))
    live = dict(list(during.items())[10:])
    for i, member in live.items():
        assert fleet.owner(ask(a.udp, answer(i))) is member

    redis_server.start()  # empty: no persistence
    # The writers reconnect (backoff at most 5 s) and write what was queued meanwhile:
    # the live calls' bindings, and the deletes of the calls that ended.
    wait_stored(redis_server, {f"call{i}@test": name_of(fleet, p) for i, p in live.items()})
    for process in (a, b):
        wait_until(lambda process=process: process.session_store()["up"], "the store up")
        store = process.session_store()
        assert store["outages"] == 1 and store["writes_dropped"] == 0, store
    hits = b.session_store()["reads_hit"]
    continue_calls(fleet, b, live)  # and B finds them there now
    assert b.session_store()["reads_hit"] - hits == len(live)
    wait_stored(redis_server, {})
    figures = fleet.member_figures()
    # The ten calls continued through B while Redis was away were found by broadcasts
    # (each asked the other member once, for its L); nothing else asked a member in vain.
    assert sum(f["ncmds_errs"] for f in figures) == 10
    assert all(f["nsess_created"] == f["nsess_destroyed"] for f in figures)
    for process in (a, b):
        log = process.log_tail(50_000)
        assert len([line for line in log.splitlines() if "is unreachable" in line]) == 1, log
        assert "Traceback" not in log


# --- restarts ---------------------------------------------------------------------


def test_state_file_hands_the_table_over_across_a_graceful_restart(fleet: Fleet) -> None:
    a = fleet.process("a")  # the memory store
    state = a.workdir / "sessions.state"
    fleet.start(a, "--state-file", str(state))
    placed = place_calls(fleet, a, range(40))
    for i, member in placed.items():
        assert fleet.owner(ask(a.udp, answer(i))) is member
    a.signal(signal.SIGTERM)
    assert a.exit_code() == 0
    assert state.read_text().count("\tcall") == 40
    assert "40 bindings written" in a.log_tail()

    fleet.start(a, "--state-file", str(state))
    assert not state.exists()  # read once: a later crash must not bring it back
    assert a.members_info("c1")["m0"]["tracked_calls"] + a.members_info("c1")["m1"][
        "tracked_calls"
    ] == len(placed)
    for i, member in placed.items():
        assert fleet.owner(ask(a.udp, reoffer(i))) is member
        assert ask(a.udp, delete(i)) == "0\n"
    fleet.assert_no_lookup_and_no_session_left()


@pytest.mark.parametrize("mode", ["redis", "state-file"])
def test_offers_sent_again_after_a_restart_stay_on_their_member(
    fleet: Fleet, short_dir: Path, mode: str
) -> None:
    """The issue's case: offers without answers, a restart, the same offers again."""
    a = fleet.process("a")
    if mode == "redis":
        server = RedisServer(redis_server_binary(), short_dir / "redis")
        server.directory.mkdir()
        server.start()
        args: tuple[str, ...] = ("--session-store", server.url)
    else:
        args = ("--state-file", str(a.workdir / "sessions.state"))
    try:
        fleet.start(a, *args)
        replies = {i: ask(a.udp, offer(i)) for i in range(20)}
        placed = {i: fleet.owner(reply) for i, reply in replies.items()}
        assert {p.name for p in placed.values()} == {p.name for p in fleet.proxies}
        if mode == "redis":
            wait_stored(server, {f"call{i}@test": name_of(fleet, p) for i, p in placed.items()})
            a.signal(signal.SIGKILL)  # killed, as the user did
            assert a.exit_code() == -signal.SIGKILL
        else:
            a.signal(signal.SIGTERM)  # the state file is written at a graceful stop
            assert a.exit_code() == 0
        fleet.start(a, *args)
        for i in placed:  # the same session on the same member: the same port
            assert ask(a.udp, offer(i)) == replies[i], f"call {i} moved"
        for i in placed:
            assert ask(a.udp, f"D call{i}@test f{i}") == "0\n"
        fleet.assert_no_lookup_and_no_session_left()
    finally:
        if mode == "redis":
            server.stop()
