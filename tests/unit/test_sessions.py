"""SessionTable: call-id -> member bindings, aged in two generations, bounded, counted."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
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
    assert table.count(A) == 0
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
    assert (table.count(A), table.count(B)) == (0, 2)


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
    assert (table.count(A), table.count(B), table.count(Owner("a"))) == (3, 1, 0)


def test_counts_follow_rebinding_promotion_and_ageing() -> None:
    table: SessionTable[Owner] = SessionTable()
    table.bind("c1", A)
    table.bind("c2", A)
    table.rotate()
    table.bind("c1", B)  # moved out of the old generation to another member
    assert (table.count(A), table.count(B)) == (1, 1)
    table.bind("c1", B)  # the same binding again changes nothing
    assert table.count(B) == 1
    assert table.get("c2") is A  # promoted: still counted once
    assert table.count(A) == 1
    table.rotate()
    table.rotate()  # both forgotten with their generation
    assert (table.count(A), table.count(B)) == (0, 0)


def test_max_entries_ages_the_table_before_the_young_half_overflows() -> None:
    table: SessionTable[Owner] = SessionTable(max_entries=4)
    table.bind("c1", A)
    table.bind("c2", A)
    assert table.rotate() == 0  # c1, c2 old
    table.bind("c3", A)
    table.bind("c4", A)
    assert len(table) == 4 and table.early_rotations == 0
    table.bind("c5", A)  # a third young call would pass half the bound: c1 and c2 go
    assert table.early_rotations == 1
    assert len(table) == 3 and table.count(A) == 3
    assert table.get("c1") is None and table.get("c2") is None
    assert all(table.get(c) is A for c in ("c3", "c4", "c5"))


def test_max_entries_bounds_the_table_when_calls_are_used() -> None:
    table: SessionTable[Owner] = SessionTable(max_entries=3)
    for i in range(8):
        for j in range(i):
            table.get(f"c{j}")  # every call stays in use: promotion must respect the bound
        table.bind(f"c{i}", A)
        assert len(table) <= table.max_entries
        assert table.count(A) == len(table)


def test_max_entries_below_two_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        SessionTable(max_entries=1)


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

    @initialize(max_entries=st.one_of(st.integers(2, 7), st.just(1_000_000)))
    def setup(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.table = SessionTable(idle_timeout=60.0, max_entries=max_entries)

    def _model_rotate(self) -> int:
        dropped = sum(1 for _, age in self.model.values() if age == OLD)
        self.model = {cid: (owner, OLD) for cid, (owner, age) in self.model.items() if age == YOUNG}
        return dropped

    def _model_add_young(self, call_id: str, owner: Owner) -> None:
        """A call not young yet becomes young; the table ages first if that would fill it."""
        self.model.pop(call_id, None)
        young = sum(1 for _, age in self.model.values() if age == YOUNG)
        if (young + 1) * 2 > self.max_entries:
            self._model_rotate()
        self.model[call_id] = (owner, YOUNG)

    @rule(call_id=call_ids, owner=owners)
    def bind(self, call_id: str, owner: Owner) -> None:
        self.table.bind(call_id, owner)
        if self.model.get(call_id, (None, OLD))[1] == YOUNG:
            self.model[call_id] = (owner, YOUNG)
        else:
            self._model_add_young(call_id, owner)

    @rule(call_id=call_ids)
    def get(self, call_id: str) -> None:
        found = self.table.get(call_id)
        if call_id in self.model:
            owner, age = self.model[call_id]
            assert found is owner
            if age == OLD:
                self._model_add_young(call_id, owner)  # promoted
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

    @rule()
    def compact(self) -> None:
        self.table.compact()  # gives back room, never calls

    @rule()
    def clear(self) -> None:
        self.table.clear()
        self.model = {}

    @invariant()
    def same_size(self) -> None:
        assert len(self.table) == len(self.model)
        assert len(self.table) <= self.max_entries

    @invariant()
    def counts_equal_a_recount(self) -> None:
        expected = Counter(o for o, _ in self.model.values())
        # the table's own entries, counted the slow way (its two generations)
        recount = Counter(self.table._young.values()) + Counter(self.table._old.values())
        assert recount == expected
        for owner in (A, B, C):
            assert self.table.count(owner) == expected[owner]


SessionTableMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40)
TestSessionTable = SessionTableMachine.TestCase


def test_compact_gives_back_the_room_of_calls_that_ended() -> None:
    table: SessionTable[Owner] = SessionTable()
    for i in range(100_000):
        table.bind(f"call-{i}", A)
    table.rotate()
    for i in range(50_000):
        table.get(f"call-{i}")  # half of them young again
    assert table.compact() == 0  # both generations are full of calls: nothing to give
    for i in range(99_000):
        table.unbind(f"call-{i}")
    assert table.compact() > 1_000_000
    assert table.compact() == 0
    assert len(table) == 1_000 and table.count(A) == 1_000
    assert table.get("call-99999") is A and table.get("call-0") is None


# --- handing the table over (--state-file) ---------------------------------------------


@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("bind"), st.integers(0, 30), st.sampled_from([A, B, C])),
            st.tuples(st.just("unbind"), st.integers(0, 30), st.just(A)),
            st.tuples(st.just("get"), st.integers(0, 30), st.just(A)),
            st.tuples(st.just("rotate"), st.just(0), st.just(A)),
        ),
        max_size=60,
    ),
    st.floats(0.0, 1800.0),
)
def test_bindings_restored_in_a_new_table_give_the_same_calls_in_the_same_generations(
    steps: list[tuple[str, int, Owner]], since_rotation: float
) -> None:
    """Each binding once, young ones aged at most ``since_rotation``, old ones at most half
    an idle timeout more; restored, they land in the generation they came from."""
    table: SessionTable[Owner] = SessionTable(idle_timeout=3600.0)
    for op, n, owner in steps:
        if op == "bind":
            table.bind(f"c{n}", owner)
        elif op == "unbind":
            table.unbind(f"c{n}")
        elif op == "get":
            table.get(f"c{n}")
        else:
            table.rotate()
    young = dict(table._young)
    listed = list(table.bindings(since_rotation))
    assert len(listed) == len(table) == len({call for call, _, _ in listed})
    for call, _owner, age in listed:
        expected = since_rotation if call in young else since_rotation + 1800.0
        assert age == expected, call
    restored: SessionTable[Owner] = SessionTable(idle_timeout=3600.0)
    for call, owner, age in listed:
        restored.restore(call, owner, age)
    assert {c: m for c, m, _ in restored.bindings(0.0)} == {c: m for c, m, _ in listed}
    assert dict(restored._young) == {c: m for c, m, a in listed if a < 1800.0}
    for owner in (A, B, C):
        assert restored.count(owner) == table.count(owner)
    restored.rotate()
    restored.rotate()  # the restored old generation is forgotten one rotation earlier
    assert len(restored) == 0


def test_a_restored_binding_never_replaces_a_newer_one_nor_overfills_the_table() -> None:
    table: SessionTable[Owner] = SessionTable(idle_timeout=100.0, max_entries=4)
    table.bind("c1", A)
    table.restore("c1", B, 80.0)  # old: the binding made since wins
    assert table.get("c1") is A
    for n in range(5):
        table.restore(f"o{n}", B, 70.0)
    assert len(table) <= 4 and table.count(B) == 2
