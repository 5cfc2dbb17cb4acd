"""The session store as the cluster uses it: what is written when, what is read when,
and what follows a read. No sockets: the store is a hand-written recording fake (this
module tests the cluster's side; the Redis store against a real server is in
tests/integration/test_store_redis.py), members talk to scripted clients.
"""

from __future__ import annotations

import trio
from hypothesis import given
from hypothesis import strategies as st

from rtpcluster.cluster.decisions import (
    Broadcast,
    Forward,
    KeepDelete,
    OwnerStored,
    PlaceNewCall,
    ReadStore,
)
from rtpcluster.cluster.executors import TaskExecutor
from rtpcluster.cluster.member import Member
from rtpcluster.cluster.outcomes import Outcomes
from rtpcluster.cluster.router import Router
from rtpcluster.cluster.sessions import SessionTable
from rtpcluster.cluster.store_reads import OfferReads
from rtpcluster.config import ClusterConfig
from rtpcluster.endpoint import Endpoint
from rtpcluster.protocol import parse_command
from rtpcluster.store import SessionStore, StoreCounters
from tests.unit.test_executors import ScriptedClient, member, silent
from tests.unit.test_router import make_member, offline

IDLE = 60.0


class RecordingStore(SessionStore):
    """A shared store in memory: every write recorded, reads answered from ``held``."""

    remote = True

    def __init__(self) -> None:
        self.counters = StoreCounters(store_up=1)
        self.writes: list[tuple[str, ...]] = []
        self.held: dict[tuple[str, str], str] = {}
        self.reads: list[tuple[str, str]] = []

    def configure(self, cluster: str, idle_timeout: float) -> None:
        pass

    def forget(self, cluster: str) -> None:
        pass

    def bind(self, cluster: str, call_id: str, member: str) -> None:
        self.writes.append(("bind", cluster, call_id, member))

    def refresh(self, cluster: str, call_id: str, member: str) -> None:
        self.writes.append(("refresh", cluster, call_id, member))

    def unbind(self, cluster: str, call_id: str) -> None:
        self.writes.append(("unbind", cluster, call_id))

    async def lookup(self, cluster: str, call_id: str) -> str | None:
        await trio.lowlevel.checkpoint()
        self.reads.append((cluster, call_id))
        found = self.held.get((cluster, call_id))
        if found is not None:
            self.counters.reads_hit += 1
        return found

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()

    async def flushed(self) -> None:
        pass

    async def wait_until_up(self, up: bool = True) -> None:
        pass

    def pending(self) -> int:
        return 0

    def describe(self) -> str:
        return "recording"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Rig:
    """Router, Outcomes and task executor of cluster "c1" over a recording store."""

    def __init__(
        self, members: list[Member], shared: bool = True, store: RecordingStore | None = None
    ) -> None:
        config = ClusterConfig(name="c1", listen=[Endpoint.parse("udp:127.0.0.1:1")])
        self.store = store or RecordingStore()
        self.clock = Clock()
        self.sessions: SessionTable[Member] = SessionTable()
        self.offer_reads = OfferReads(lambda: IDLE, self.clock)
        self.router = Router(
            config,
            lambda: list(members),
            self.sessions,
            store_reads=self.offer_reads if shared else None,
        )
        outcomes = Outcomes(
            self.sessions, store=self.store, cluster="c1", offer_reads=self.offer_reads
        )

        async def read(call_id: str) -> str | None:
            return await self.store.lookup("c1", call_id)

        self.tasks = TaskExecutor(self.router, outcomes, read)

    async def send(self, text: str) -> str:
        return await self.tasks.handle(text.encode())


def answering(reply: str) -> ScriptedClient:
    return ScriptedClient(lambda _: reply)


def sent(m: Member) -> list[str]:
    return m.client.sent  # type: ignore[attr-defined,no-any-return]


# --- what is written ---------------------------------------------------------------------


async def test_a_placed_call_is_bound_refreshed_by_its_commands_and_unbound_by_its_d() -> None:
    a = member("a", answering("35000"))
    rig = Rig([a])
    rig.offer_reads.wanted()  # its first offer opened the window ...
    rig.clock.now += IDLE  # ... one idle timeout ago: offers are placed at once now
    assert await rig.send("U c1 127.0.0.1 4000 f") == "35000\n"
    assert await rig.send("L c1 127.0.0.1 4002 f t") == "35000\n"
    assert rig.store.writes == [("bind", "c1", "c1", "a"), ("refresh", "c1", "c1", "a")]
    a.client = answering("0")  # type: ignore[assignment]
    assert await rig.send("D c1 f t") == "0\n"
    assert rig.store.writes[-1] == ("unbind", "c1", "c1")
    assert rig.store.reads == []  # a known call is never read from the store


async def test_an_error_reply_refreshes_nothing_and_a_refused_offer_binds_nothing() -> None:
    a = member("a", answering("E71"))
    rig = Rig([a], shared=False)
    rig.sessions.bind("c1", a)
    assert await rig.send("L c1 127.0.0.1 4002 f t") == "E71\n"
    assert await rig.send("U c2 127.0.0.1 4000 f") == "E71\n"
    assert rig.store.writes == []


async def test_a_delete_kept_for_an_absent_member_unbinds_the_call_in_the_store() -> None:
    a = member("a", ScriptedClient(silent))
    rig = Rig([a], shared=False)
    rig.sessions.bind("c1", a)
    assert await rig.send("D c1 f t") == "0\n"  # a is silent: kept for it
    rig.sessions.bind("c2", a)
    offline(a)
    assert await rig.send("D c2 f t") == "0\n"  # a is offline: kept at once
    assert rig.store.writes == [("unbind", "c1", "c1"), ("unbind", "c1", "c2")]


async def test_a_broadcast_that_finds_a_call_binds_it_and_one_that_ends_it_unbinds_it() -> None:
    a, b = member("a", answering("0")), member("b", answering("35000"))
    rig = Rig([a, b], shared=False)  # the memory store's way: no reads, broadcasts
    assert await rig.send("L c1 127.0.0.1 4002 f t") == "35000\n"
    assert rig.store.writes == [("bind", "c1", "c1", "b")]
    a.client, b.client = answering("E50"), answering("0")  # type: ignore[assignment]
    assert await rig.send("D c9 f t") == "0\n"
    assert rig.store.writes[-1] == ("unbind", "c1", "c9")
    assert rig.store.reads == []


# --- what is read, and what follows ------------------------------------------------------


async def test_an_unknown_call_named_by_the_store_goes_to_that_member_alone() -> None:
    a, b = member("a", answering("0")), member("b", answering("35000"))
    rig = Rig([a, b])
    rig.store.held[("c1", "c1")] = "b"
    assert await rig.send("L c1 127.0.0.1 4002 f t") == "35000\n"
    assert sent(a) == [] and sent(b) == ["L c1 127.0.0.1 4002 f t"]
    assert rig.sessions.get("c1") is b
    # bound here without writing the binding back; the L's answer refreshes it
    assert rig.store.writes == [("refresh", "c1", "c1", "b")]
    assert await rig.send("U c1 127.0.0.1 4000 f t") == "35000\n"
    assert rig.store.reads == [("c1", "c1")]  # read once


async def test_a_store_miss_or_a_name_of_no_member_here_falls_back_to_the_broadcast() -> None:
    a, b = member("a", answering("0")), member("b", answering("35000"))
    rig = Rig([a, b])
    rig.store.held[("c1", "c2")] = "gone"  # a member this process does not have
    for call in ("c1", "c2"):
        assert await rig.send(f"L {call} 127.0.0.1 4002 f t") == "35000\n"
        assert rig.sessions.get(call) is b
    assert len(sent(a)) == len(sent(b)) == 2  # each asked of both
    assert rig.store.reads == [("c1", "c1"), ("c1", "c2")]
    assert ("bind", "c1", "c2", "b") in rig.store.writes  # the broadcast's find is written


async def test_a_stored_member_that_is_offline_is_treated_as_the_local_table_would() -> None:
    a = offline(member("a", answering("35000")))
    b = member("b", answering("36000"))
    rig = Rig([a, b])
    for call in ("c1", "c2", "c3"):
        rig.store.held[("c1", call)] = "a"
    assert await rig.send("L c1 127.0.0.1 4002 f t") == "E997\n"
    assert await rig.send("D c2 f t") == "0\n"  # kept for a
    assert [a.deferred[i][1] for i in range(len(a.deferred))] == ["D c2 f t"]
    assert await rig.send("U c3 127.0.0.1 4000 f") == "36000\n"  # an offer: placed anew
    assert rig.sessions.get("c3") is b
    assert ("bind", "c1", "c3", "b") in rig.store.writes
    assert sent(a) == []


async def test_an_offer_is_read_in_the_window_and_stays_on_its_stored_member() -> None:
    a, b = member("a", answering("35000")), member("b", answering("36000"))
    rig = Rig([a, b])
    rig.store.held[("c1", "old")] = "b"
    assert await rig.send("U old 127.0.0.1 4000 f") == "36000\n"  # the first offer: read
    assert (a.placed_since_report, b.placed_since_report) == (0, 0)  # not a new call
    assert await rig.send("U new 127.0.0.1 4000 f") in ("35000\n", "36000\n")  # read: a miss
    assert rig.store.reads == [("c1", "old"), ("c1", "new")]
    rig.clock.now += IDLE  # one idle timeout after the last read that found a call
    assert await rig.send("U newer 127.0.0.1 4000 f") in ("35000\n", "36000\n")
    assert rig.store.reads == [("c1", "old"), ("c1", "new")]  # placed without a read


async def test_a_read_that_finds_a_call_opens_only_the_window_of_its_cluster() -> None:
    """Two clusters of one process over one store: calls made elsewhere show up in the
    first; the second keeps placing its offers without a read."""
    a, b = member("a", answering("35000")), member("b", answering("36000"))
    store = RecordingStore()
    first, second = Rig([a], store=store), Rig([b], store=store)
    for rig in (first, second):
        rig.offer_reads.wanted()  # the first offer opened the window ...
        rig.clock.now += IDLE  # ... one idle timeout ago
    first.store.held[("c1", "elsewhere")] = "a"
    assert await first.send("L elsewhere 127.0.0.1 4002 f t") == "35000\n"  # read: a hit
    assert await first.send("U new1 127.0.0.1 4000 f") == "35000\n"
    assert first.store.reads == [("c1", "elsewhere"), ("c1", "new1")]  # its window: open
    assert await second.send("U new2 127.0.0.1 4000 f") == "36000\n"
    assert ("c1", "new2") not in first.store.reads  # the other's: still closed


def test_the_router_decides_a_read_and_what_follows_it() -> None:
    a, b = make_member("a"), make_member("b")
    sessions: SessionTable[Member] = SessionTable()
    clock = Clock()
    reads = OfferReads(lambda: IDLE, clock)
    config = ClusterConfig(name="c1", listen=[Endpoint.parse("udp:127.0.0.1:1")])
    router = Router(config, lambda: [a, b], sessions, store_reads=reads)
    for text in ("L c1 127.0.0.1 4 f t", "D c1 f t", "U c1 127.0.0.1 4 f t", "Q c1 f t"):
        decision = router.decide(parse_command(text))
        assert isinstance(decision, ReadStore) and decision.call_id == "c1", text
    read = router.decide(parse_command("D c1 f t"))
    assert isinstance(read, ReadStore)
    follow, effects = router.after_read(read, "b")
    assert isinstance(follow, Forward) and follow.member is b and follow.ends_call == "c1"
    assert effects == (OwnerStored("c1", b),)
    assert len(sessions) == 0  # deciding binds nothing
    follow, effects = router.after_read(read, None)
    assert isinstance(follow, Broadcast) and effects == ()
    sessions.bind("c1", a)  # bound meanwhile by another command of the call: it wins
    follow, effects = router.after_read(read, "b")
    assert isinstance(follow, Forward) and follow.member is a and effects == ()
    sessions.unbind("c1")
    offline(a)
    follow, _ = router.after_read(read, "a")
    assert isinstance(follow, KeepDelete) and follow.member is a
    # a known call on an online member is never read, whatever the window says
    sessions.bind("c2", b)
    assert isinstance(router.decide(parse_command("L c2 127.0.0.1 4 f t")), Forward)
    # offers: read in the window (opened by the first one), placed at once after it
    assert isinstance(router.decide(parse_command("U c3 127.0.0.1 4 f")), ReadStore)
    clock.now += IDLE
    assert isinstance(router.decide(parse_command("U c3 127.0.0.1 4 f")), PlaceNewCall)
    reads.found_elsewhere()  # a read named a call made elsewhere: open again
    assert isinstance(router.decide(parse_command("U c3 127.0.0.1 4 f")), ReadStore)


def test_without_a_shared_store_nothing_is_read() -> None:
    a = make_member("a")
    config = ClusterConfig(name="c1", listen=[Endpoint.parse("udp:127.0.0.1:1")])
    router = Router(config, lambda: [a], SessionTable())
    assert isinstance(router.decide(parse_command("L c1 127.0.0.1 4 f t")), Broadcast)
    assert isinstance(router.decide(parse_command("U c1 127.0.0.1 4 f")), PlaceNewCall)


# --- the offer window --------------------------------------------------------------------

Step = tuple[str, float]  # ("wait", seconds) | ("hit", 0) | ("offer", 0)


@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("wait"), st.floats(0, 2 * IDLE)),
            st.tuples(st.sampled_from(["hit", "offer"]), st.just(0.0)),
        ),
        max_size=40,
    ),
    st.floats(1.0, 3 * IDLE),
)
def test_offers_are_read_exactly_within_an_idle_timeout_of_the_first_offer_or_a_hit(
    steps: list[Step], idle: float
) -> None:
    """The rule as the module states it: an offer is read while less than one idle
    timeout has passed since the cluster's first offer or since the last read of the
    cluster that found a call made elsewhere (the window opens again then)."""
    clock = Clock()
    reads = OfferReads(lambda: idle, clock)
    opened: float | None = None  # when the window last opened, as the rule says
    assert reads.open_for() is None
    for what, amount in steps:
        if what == "wait":
            clock.now += amount
        elif what == "hit":
            reads.found_elsewhere()
            opened = clock.now
        else:
            if opened is None:
                opened = clock.now
            assert reads.wanted() is (clock.now < opened + idle)
            left = reads.open_for()
            assert left is not None and left == max(0.0, opened + idle - clock.now)
