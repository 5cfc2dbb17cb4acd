"""DeferredDeletes: each delete kept once, oldest first, bounded, drops counted."""

from __future__ import annotations

from collections import deque

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from rtpcluster.cluster.member import DeferredDeletes


def test_kept_oldest_first_with_deadline() -> None:
    deferred = DeferredDeletes(max_entries=10, ttl=60.0)
    assert not deferred and len(deferred) == 0
    assert deferred.add("D c1 f1 t1", now=100.0)
    assert deferred.add("D c2 f2", now=101.0)
    assert deferred and len(deferred) == 2
    assert deferred[0] == (160.0, "D c1 f1 t1")
    assert deferred.popleft() == (160.0, "D c1 f1 t1")
    assert deferred.popleft() == (161.0, "D c2 f2")
    assert not deferred


def test_the_same_delete_is_kept_once() -> None:
    deferred = DeferredDeletes(max_entries=10)
    assert deferred.add("D c1 f1 t1", now=0.0)
    assert not deferred.add("D c1 f1 t1", now=1.0)  # a second copy: the same delete
    assert deferred.add("D c1 f1", now=1.0)  # other tags: another delete
    assert deferred.add("Dw c1 f1 t1", now=1.0)  # weak: another delete
    assert len(deferred) == 3 and deferred.dropped == 0
    deferred.popleft()
    assert deferred.add("D c1 f1 t1", now=2.0)  # delivered: a new one is kept again


def test_a_full_queue_keeps_the_older_deletes_and_counts_the_new_one() -> None:
    deferred = DeferredDeletes(max_entries=20)
    real = [f"D real{n} f{n}" for n in range(20)]
    for command in real:
        assert deferred.add(command, now=0.0)
    for n in range(100_000):
        deferred.add(f"D flood{n} f", now=1.0)
    assert deferred.dropped == 100_000
    assert [deferred.popleft()[1] for _ in range(20)] == real


commands = st.sampled_from([f"D c{n} f" for n in range(6)] + ["Dw c0 f", "D c0 f t"])


class DeferredDeletesMachine(RuleBasedStateMachine):
    """Compare with a deque of distinct commands and a drop counter."""

    def __init__(self) -> None:
        super().__init__()
        self.deferred = DeferredDeletes(max_entries=4, ttl=10.0)
        self.model: deque[str] = deque()
        self.dropped = 0
        self.now = 0.0

    @rule(command=commands)
    def add(self, command: str) -> None:
        self.now += 1.0
        kept = self.deferred.add(command, self.now)
        if command in self.model:
            assert not kept
        elif len(self.model) >= 4:
            assert not kept
            self.dropped += 1
        else:
            assert kept
            self.model.append(command)

    @precondition(lambda self: bool(self.model))
    @rule()
    def popleft(self) -> None:
        deadline, command = self.deferred.popleft()
        assert command == self.model.popleft()
        assert deadline <= self.now + 10.0

    @invariant()
    def same_queue(self) -> None:
        assert len(self.deferred) == len(self.model)
        assert bool(self.deferred) == bool(self.model)
        assert self.deferred.dropped == self.dropped
        if self.model:
            assert self.deferred[0][1] == self.model[0]


DeferredDeletesMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=40)
TestDeferredDeletes = DeferredDeletesMachine.TestCase
