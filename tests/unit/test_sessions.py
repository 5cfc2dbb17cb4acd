"""SessionTable: call-id -> member bindings, aged in two generations."""

from __future__ import annotations

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

from rtpcluster.cluster.sessions import SessionTable


class Owner:
    """A stand-in member: the table only compares owners by identity."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Owner({self.name})"


A, B, C = Owner("a"), Owner("b"), Owner("c")


def test_empty_table() -> None:
    table: SessionTable[Owner] = SessionTable()
    assert len(table) == 0
    assert table.get("x") is None
    assert table.counts() == Counter()
    assert table.rotate() == 0
    table.unbind("x")  # unknown call-id: nothing happens
    assert table.drop_member(A) == 0


def test_bind_get_unbind() -> None:
    table: SessionTable[Owner] = SessionTable()
    table.bind("c1", A)
    table.bind("c2", B)
    assert len(table) == 2
    assert table.get("c1") is A
    assert table.get("c2") is B
    table.unbind("c1")
    assert table.get("c1") is None
    assert len(table) == 1


def test_rebind_moves_the_call() -> None:
    table: SessionTable[Owner] = SessionTable()
    table.bind("c1", A)
    table.rotate()  # c1 is old now
    table.bind("c1", B)
    assert table.get("c1") is B
    assert len(table) == 1
    table.rotate()
    table.rotate()
    assert table.get("c1") is None  # no stale copy of the old binding comes back


def test_two_rotations_without_use_forget() -> None:
    table: SessionTable[Owner] = SessionTable()
    table.bind("c1", A)
    assert table.rotate() == 0
    assert len(table) == 1
    assert table.rotate() == 1
    assert len(table) == 0
    assert table.get("c1") is None


def test_hit_in_old_generation_is_promoted() -> None:
    table: SessionTable[Owner] = SessionTable()
    table.bind("c1", A)
    table.bind("c2", B)
    table.rotate()
    assert table.get("c1") is A  # promoted back to the young generation
    assert table.rotate() == 1  # only c2 is forgotten
    assert table.get("c1") is A
    assert table.get("c2") is None
    assert table.rotate() == 0  # c1 was used again, so it is young once more
    assert table.rotate() == 1
    assert table.get("c1") is None


def test_unbind_works_in_both_generations() -> None:
    table: SessionTable[Owner] = SessionTable()
    table.bind("old", A)
    table.rotate()
    table.bind("young", A)
    table.unbind("old")
    table.unbind("young")
    assert len(table) == 0


def test_drop_member_forgets_its_calls_in_both_generations() -> None:
    table: SessionTable[Owner] = SessionTable()
    table.bind("a1", A)
    table.bind("b1", B)
    table.rotate()
    table.bind("a2", A)
    table.bind("b2", B)
    assert table.drop_member(A) == 2
    assert table.get("a1") is None and table.get("a2") is None
    assert table.get("b1") is B and table.get("b2") is B
    assert table.counts() == Counter({id(B): 2})


def test_drop_member_is_by_identity() -> None:
    table: SessionTable[Owner] = SessionTable()
    table.bind("c1", A)
    assert table.drop_member(Owner("a")) == 0
    assert table.get("c1") is A


def test_counts_are_per_member_identity() -> None:
    table: SessionTable[Owner] = SessionTable()
    for i in range(3):
        table.bind(f"a{i}", A)
    table.rotate()
    table.bind("b0", B)
    assert table.counts() == Counter({id(A): 3, id(B): 1})


def test_max_entries_triggers_a_rotation() -> None:
    table: SessionTable[Owner] = SessionTable(max_entries=3)
    table.bind("c1", A)
    table.bind("c2", A)
    assert table.rotate() == 0  # c1, c2 old
    table.bind("c3", A)
    table.bind("c4", A)
    assert len(table) == 4
    table.bind("c5", A)  # young reaches 3: rotation, c1 and c2 go
    assert len(table) == 3
    assert table.get("c1") is None and table.get("c2") is None
    assert all(table.get(c) is A for c in ("c3", "c4", "c5"))


def test_max_entries_bounds_the_table_when_calls_are_used() -> None:
    table: SessionTable[Owner] = SessionTable(max_entries=1)
    for i in range(5):
        for j in range(i):
            table.get(f"c{j}")  # every call stays in use: promotion must respect the bound
        table.bind(f"c{i}", A)
        assert len(table) <= 2 * table.max_entries


def test_clear() -> None:
    table: SessionTable[Owner] = SessionTable()
    table.bind("c1", A)
    table.rotate()
    table.bind("c2", A)
    table.clear()
    assert len(table) == 0 and table.get("c1") is None and table.get("c2") is None


# --- model-based -----------------------------------------------------------------------------

call_ids = st.sampled_from([f"call-{i}" for i in range(8)])
owners = st.sampled_from([A, B, C])

YOUNG, OLD = 0, 1


class SessionTableMachine(RuleBasedStateMachine):
    """Compare SessionTable with a dict of call-id -> (owner, generation age)."""

    def __init__(self) -> None:
        super().__init__()
        self.table: SessionTable[Owner] = SessionTable()
        self.model: dict[str, tuple[Owner, int]] = {}
        self.max_entries = 0

    @initialize(max_entries=st.one_of(st.integers(1, 6), st.just(1_000_000)))
    def setup(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.table = SessionTable(idle_timeout=60.0, max_entries=max_entries)

    def _model_rotate(self) -> int:
        dropped = sum(1 for _, age in self.model.values() if age == OLD)
        self.model = {cid: (owner, OLD) for cid, (owner, age) in self.model.items() if age == YOUNG}
        return dropped

    @rule(call_id=call_ids, owner=owners)
    def bind(self, call_id: str, owner: Owner) -> None:
        self.table.bind(call_id, owner)
        self.model[call_id] = (owner, YOUNG)
        if sum(1 for _, age in self.model.values() if age == YOUNG) >= self.max_entries:
            self._model_rotate()

    @rule(call_id=call_ids)
    def get(self, call_id: str) -> None:
        found = self.table.get(call_id)
        if call_id in self.model:
            owner, age = self.model[call_id]
            assert found is owner
            self.model[call_id] = (owner, YOUNG)
            young = sum(1 for _, a in self.model.values() if a == YOUNG)
            if age != YOUNG and young >= self.max_entries:
                self._model_rotate()  # a promotion that fills the young generation ages it
        else:
            assert found is None

    @rule(call_id=call_ids)
    def unbind(self, call_id: str) -> None:
        self.table.unbind(call_id)
        self.model.pop(call_id, None)

    @rule()
    def rotate(self) -> None:
        assert self.table.rotate() == self._model_rotate()

    @precondition(lambda self: bool(self.model))
    @rule(owner=owners)
    def drop_member(self, owner: Owner) -> None:
        expected = [cid for cid, (o, _) in self.model.items() if o is owner]
        assert self.table.drop_member(owner) == len(expected)
        for cid in expected:
            del self.model[cid]

    @invariant()
    def same_size(self) -> None:
        assert len(self.table) == len(self.model)

    @invariant()
    def same_counts(self) -> None:
        assert self.table.counts() == Counter(id(o) for o, _ in self.model.values())


SessionTableMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40)
TestSessionTable = SessionTableMachine.TestCase
