"""The session store's write queue: coalescing, bounds, outages and the refresh limiter.

The queue is pure; here a dict stands in for Redis (this module's only fake): a batch
that lands is applied to it, one that fails may have been applied in part.
"""

from __future__ import annotations

import itertools
from collections import Counter

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from rtpcluster.store.base import DELAY_BOUNDS, StoreCounters
from rtpcluster.store.queue import Batch, WriteQueue

CLUSTERS = st.sampled_from(["c1", "c:2"])
CALLS = st.sampled_from([f"call-{n}" for n in range(8)])
MEMBERS = st.sampled_from(["m1", "m2", "m3"])


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def apply(redis: dict[str, str], batch: Batch) -> None:
    for key, (member, _ttl, _queued_at, _bind) in batch:
        if member is None:
            redis.pop(key, None)
        else:
            redis[key] = member


class WriteQueueMachine(RuleBasedStateMachine):
    """Any order of binds, refreshes, unbinds, landed and failed batches, clock steps and
    overflow: after a final drain the fake Redis holds what applying every write in order
    gives, except for keys one of whose writes was dropped (and counted)."""

    @initialize(max_pending=st.integers(1, 12))
    def start(self, max_pending: int) -> None:
        self.clock = Clock()
        self.woken = 0
        self.counters = StoreCounters()
        self.queue = WriteQueue(
            self.counters, max_pending=max_pending, clock=self.clock, on_ready=self.wake
        )
        for cluster in ("c1", "c:2"):
            self.queue.configure(cluster, 100.0)
        self.model: dict[str, str] = {}  # sequential application: key -> member
        self.redis: dict[str, str] = {}
        self.batch: Batch | None = None
        self.tainted: set[str] = set()  # keys that lost a write to the bound

    def wake(self) -> None:
        self.woken += 1

    def _track(self, write: object) -> None:
        """Run a write; any key that left the queue without being sent was dropped."""
        before = Counter(self.queue.queued_keys())  # a key can be in flight and queued again
        dropped = self.counters.writes_dropped
        coalesced = self.counters.writes_coalesced
        assert callable(write)
        write()
        lost = before - Counter(self.queue.queued_keys())
        new_drops = self.counters.writes_dropped - dropped
        if new_drops:  # (a failed batch also loses in-flight writes overtaken by newer ones)
            self.tainted |= set(lost)
        assert sum(lost.values()) <= new_drops + self.counters.writes_coalesced - coalesced

    @rule(cluster=CLUSTERS, call=CALLS, member=MEMBERS)
    def bind(self, cluster: str, call: str, member: str) -> None:
        self._track(lambda: self.queue.bind(cluster, call, member))
        self.model[self.queue.key(cluster, call)] = member

    @rule(cluster=CLUSTERS, call=CALLS, member=MEMBERS, same=st.booleans())
    def refresh(self, cluster: str, call: str, member: str, same: bool) -> None:
        key = self.queue.key(cluster, call)
        if same and key in self.model:
            member = self.model[key]
        self._track(lambda: self.queue.refresh(cluster, call, member))
        self.model[key] = member

    @rule(cluster=CLUSTERS, call=CALLS)
    def unbind(self, cluster: str, call: str) -> None:
        self._track(lambda: self.queue.unbind(cluster, call))
        self.model.pop(self.queue.key(cluster, call), None)

    @rule(seconds=st.sampled_from([0.5, 10.0, 25.0, 60.0]))
    def tick(self, seconds: float) -> None:
        self.clock.now += seconds

    @precondition(lambda self: self.batch is None)
    @rule(limit=st.integers(1, 5))
    def take(self, limit: int) -> None:
        self.batch = self.queue.take(limit)
        assert len(self.batch) <= limit
        assert len({key for key, _ in self.batch}) == len(self.batch)

    @precondition(lambda self: self.batch is not None)
    @rule()
    def land(self) -> None:
        assert self.batch is not None
        apply(self.redis, self.batch)
        self.batch = None
        self.queue.done()

    @precondition(lambda self: self.batch is not None)
    @rule(landed=st.integers(0, 5))
    def fail(self, landed: int) -> None:
        """An outage: the first ``landed`` writes reached Redis, the rest is unknown."""
        assert self.batch is not None
        apply(self.redis, self.batch[:landed])
        self.batch = None
        self._track(self.queue.failed)

    @invariant()
    def accounted(self) -> None:
        c = self.counters
        waiting = len(self.queue) + self.queue.in_flight
        done = c.writes_written + c.writes_rejected + c.writes_dropped + c.writes_coalesced
        assert c.writes_queued == done + waiting
        assert len(self.queue) <= self.queue.max_pending

    @invariant()
    def lookups_see_the_newest_queued_write(self) -> None:
        for key in self.queue.queued_keys():
            queued, member = self.queue.queued_member(key)
            assert queued
            if key not in self.tainted:
                assert member == self.model.get(key)

    def teardown(self) -> None:
        if not hasattr(self, "queue"):
            return
        if self.batch is not None:
            self.land()
        while len(self.queue):
            self.take(5)
            self.land()
        for key in set(self.model) | set(self.redis):
            if key not in self.tainted:
                assert self.redis.get(key) == self.model.get(key), key


TestWriteQueue = WriteQueueMachine.TestCase
TestWriteQueue.settings = settings(max_examples=300, stateful_step_count=60, deadline=None)


def make(max_pending: int = 100) -> tuple[WriteQueue, StoreCounters, Clock]:
    clock = Clock()
    counters = StoreCounters()
    queue = WriteQueue(counters, max_pending=max_pending, clock=clock)
    return queue, counters, clock


def test_refresh_is_written_at_most_once_per_quarter_idle_timeout() -> None:
    queue, counters, clock = make()
    queue.configure("c1", 100.0)
    queue.bind("c1", "a", "m1")  # written: the window starts with it
    for _ in range(10):
        queue.refresh("c1", "a", "m1")
    assert counters.writes_queued == 1
    assert counters.refreshes_limited == 10
    clock.now = 24.9
    queue.refresh("c1", "a", "m1")
    assert counters.writes_queued == 1
    clock.now = 25.0  # a new window
    queue.refresh("c1", "a", "m1")
    queue.refresh("c1", "a", "m1")
    assert counters.writes_queued == 2


def test_refresh_with_another_member_is_written_at_once() -> None:
    queue, counters, _clock = make()
    queue.bind("c1", "a", "m1")
    queue.refresh("c1", "a", "m2")
    assert counters.writes_queued == 2
    assert queue.queued_member(queue.key("c1", "a")) == (True, "m2")


def test_refresh_after_unbind_is_written() -> None:
    queue, counters, _clock = make()
    queue.bind("c1", "a", "m1")
    queue.unbind("c1", "a")
    queue.refresh("c1", "a", "m1")
    assert counters.writes_queued == 3
    assert counters.refreshes_limited == 0


def test_active_call_is_rewritten_before_its_ttl_runs_out() -> None:
    """A command every second for ten idle timeouts: the key's writes are never more than
    half the TTL apart (two windows), so the key cannot expire while the call is active."""
    queue, _counters, clock = make()
    queue.configure("c1", 40.0)
    written_at: list[float] = []
    queue.bind("c1", "a", "m1")
    for second in range(400):
        clock.now = float(second)
        queue.refresh("c1", "a", "m1")
        for _key, (_member, ttl, queued_at, _bind) in queue.take(10):
            assert ttl == 40
            written_at.append(queued_at)
        queue.done()
    gaps = [later - earlier for earlier, later in itertools.pairwise(written_at)]
    assert max(gaps) <= 20.0
    assert len(written_at) <= 400 / 10 + 1  # one per 10 s window at most


def test_ttl_is_whole_seconds_at_least_one() -> None:
    queue, _counters, _clock = make()
    queue.configure("c1", 0.3)
    queue.configure("c2", 90.5)
    queue.bind("c1", "a", "m1")
    queue.bind("c2", "a", "m1")
    assert [entry[1] for _key, entry in queue.take(2)] == [1, 91]


def test_full_queue_drops_the_oldest_and_never_refuses() -> None:
    queue, counters, _clock = make(max_pending=3)
    for n in range(5):
        queue.bind("c1", f"call-{n}", "m1")
    assert counters.writes_dropped == 2
    assert queue.queued_keys() == [queue.key("c1", f"call-{n}") for n in (2, 3, 4)]


def test_failed_batch_goes_back_in_front_unless_written_again() -> None:
    queue, counters, _clock = make()
    queue.bind("c1", "a", "m1")
    queue.bind("c1", "b", "m1")
    batch = queue.take(2)
    assert [key for key, _ in batch] == [queue.key("c1", "a"), queue.key("c1", "b")]
    queue.bind("c1", "c", "m2")
    queue.unbind("c1", "b")  # newer than the b in flight
    queue.failed()
    assert queue.queued_keys() == [queue.key("c1", k) for k in ("a", "c", "b")]
    assert queue.queued_member(queue.key("c1", "b")) == (True, None)
    assert counters.writes_coalesced == 1


def test_ready_callback_only_when_the_queue_turns_non_empty() -> None:
    calls: list[int] = []
    queue = WriteQueue(StoreCounters(), on_ready=lambda: calls.append(1))
    queue.bind("c1", "a", "m1")
    queue.bind("c1", "b", "m1")
    queue.take(10)
    queue.done()
    queue.unbind("c1", "a")
    assert len(calls) == 2


def test_bind_delay_is_measured_from_the_first_unwritten_change() -> None:
    queue, counters, clock = make()
    queue.bind("c1", "a", "m1")
    clock.now = 0.004
    queue.bind("c1", "a", "m2")  # coalesced: the delay still counts from 0
    clock.now = 0.030
    queue.take(10)
    queue.done()
    assert counters.bind_delay_count == 1
    assert abs(counters.bind_delay_max - 0.030) < 1e-9
    assert counters.bind_delay_buckets[DELAY_BOUNDS.index(0.05)] == 1


def test_forgotten_cluster_starts_over_with_defaults() -> None:
    queue, _counters, _clock = make()
    queue.configure("c1", 10.0)
    queue.forget("c1")
    queue.bind("c1", "a", "m1")
    assert queue.take(1)[0][1][1] == 3600
