"""balancer.pick: who may take a new call, hard/soft limits, and the weighted draw."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from dataclasses import dataclass

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from rtpcluster.cluster.balancer import pick
from rtpcluster.cluster.member import Member
from rtpcluster.config import MemberConfig, MemberStatus

_port = itertools.count(22300)


def make_member(
    name: str = "m",
    *,
    weight: int = 100,
    capacity: int = 10,
    load: int = 0,
    placed: int = 0,
    online: bool = True,
    status: MemberStatus = MemberStatus.ACTIVE,
    removed: bool = False,
) -> Member:
    config = MemberConfig.model_validate(
        {
            "name": name,
            "protocol": "udp",
            "address": f"127.0.0.1:{next(_port) % 60000 + 1024}",
            "weight": weight,
            "capacity": capacity,
        }
    )
    member = Member(config)
    if online:
        member.answered_probe()
    if status is MemberStatus.SUSPENDED:
        member.suspend()
    elif status is MemberStatus.DRAINING:
        member.drain(None)  # one that is not online is removed at once
    if removed:  # drained to the end; one that is not online is removed at once
        member.drain(None)
        member.drain_deadline_reached()
    member.reported_sessions = load
    member.placed_since_report = placed
    return member


def share(member: Member) -> float:
    return member.weight * (1.0 - member.utilisation)


class FixedRandom(random.Random):
    """An rng whose random() always returns one chosen value."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


# --- examples --------------------------------------------------------------------------------


def test_no_members() -> None:
    assert pick([], hard_limit=True) is None
    assert pick([], hard_limit=False) is None


@pytest.mark.parametrize("hard", [True, False])
@pytest.mark.parametrize(
    "state",
    [
        {"online": False},
        {"status": MemberStatus.SUSPENDED},
        {"status": MemberStatus.DRAINING},
        {"removed": True},
    ],
    ids=["offline", "suspended", "draining", "removed"],
)
def test_ineligible_member_is_never_picked(hard: bool, state: dict[str, object]) -> None:
    bad = make_member("bad", weight=1000, **state)  # type: ignore[arg-type]
    good = make_member("good", weight=1, load=9)
    for value in (0.0, 0.5, 0.999999):
        assert pick([bad, good], hard, rng=FixedRandom(value)) is good
    assert pick([bad], hard) is None


@pytest.mark.parametrize("hard", [True, False])
def test_excluded_member_is_never_picked(hard: bool) -> None:
    a, b = make_member("a", weight=1000), make_member("b", weight=1)
    for value in (0.0, 0.5, 0.999999):
        assert pick([a, b], hard, exclude=[a], rng=FixedRandom(value)) is b
    assert pick([a, b], hard, exclude={a, b}) is None


def test_hard_limit_refuses_when_all_full() -> None:
    full = [make_member("a", load=10), make_member("b", load=7, placed=3)]
    assert pick(full, hard_limit=True) is None


def test_hard_limit_counts_placed_since_report() -> None:
    a = make_member("a", load=5, placed=5)  # 10/10 although the heartbeat said 5
    b = make_member("b", load=9)
    for value in (0.0, 0.5, 0.999999):
        assert pick([a, b], hard_limit=True, rng=FixedRandom(value)) is b


def test_soft_limit_takes_least_utilised_when_all_full() -> None:
    a = make_member("a", capacity=10, load=12)  # 1.2
    b = make_member("b", capacity=20, load=21)  # 1.05
    c = make_member("c", capacity=5, load=5)  # 1.0
    assert pick([a, b, c], hard_limit=False) is c
    assert pick([a, b], hard_limit=False) is b


def test_full_member_is_skipped_while_another_has_room() -> None:
    full = make_member("full", weight=1000, load=10)
    room = make_member("room", weight=1, load=9)
    for hard in (True, False):
        for value in (0.0, 0.5, 0.999999):
            assert pick([full, room], hard, rng=FixedRandom(value)) is room


def test_draw_walks_the_shares_in_order() -> None:
    # shares: a 100, b 50 (half full), c 300 -> total 450
    a = make_member("a", weight=100)
    b = make_member("b", weight=100, load=5)
    c = make_member("c", weight=300)
    members = [a, b, c]
    assert pick(members, True, rng=FixedRandom(0.0)) is a
    assert pick(members, True, rng=FixedRandom(99 / 450)) is a
    assert pick(members, True, rng=FixedRandom(101 / 450)) is b
    assert pick(members, True, rng=FixedRandom(149 / 450)) is b
    assert pick(members, True, rng=FixedRandom(151 / 450)) is c
    assert pick(members, True, rng=FixedRandom(0.9999999)) is c


def test_without_an_rng_the_module_random_is_used() -> None:
    members = [make_member("a"), make_member("b")]
    assert pick(members, hard_limit=True) in members


# --- properties ------------------------------------------------------------------------------


@dataclass
class Spec:
    weight: int
    capacity: int
    load: int
    placed: int
    online: bool
    status: MemberStatus
    removed: bool
    excluded: bool


specs = st.builds(
    Spec,
    weight=st.integers(1, 1000),
    capacity=st.integers(1, 40),
    load=st.integers(0, 50),
    placed=st.integers(0, 5),
    online=st.booleans(),
    status=st.sampled_from(list(MemberStatus)),
    removed=st.booleans(),
    excluded=st.booleans(),
)
# Members that may take calls, so that lists of specs often hold some.
ready_specs = st.builds(
    Spec,
    weight=st.integers(1, 1000),
    capacity=st.integers(1, 40),
    load=st.integers(0, 40),
    placed=st.integers(0, 2),
    online=st.just(True),
    status=st.just(MemberStatus.ACTIVE),
    removed=st.just(False),
    excluded=st.just(False),
)
any_specs = st.one_of(specs, ready_specs)


def build(all_specs: list[Spec]) -> tuple[list[Member], list[Member], list[Member]]:
    """The members, those excluded, and those eligible (in order)."""
    members = [
        make_member(
            f"m{i}",
            weight=s.weight,
            capacity=s.capacity,
            load=s.load,
            placed=s.placed,
            online=s.online,
            status=s.status,
            removed=s.removed,
        )
        for i, s in enumerate(all_specs)
    ]
    excluded = [m for m, s in zip(members, all_specs, strict=True) if s.excluded]
    eligible = [
        m
        for m, s in zip(members, all_specs, strict=True)
        if s.online and s.status is MemberStatus.ACTIVE and not s.removed and not s.excluded
    ]
    return members, excluded, eligible


@given(st.lists(any_specs, max_size=8), st.booleans(), st.floats(0.0, 1.0, exclude_max=True))
def test_pick_invariants(all_specs: list[Spec], hard: bool, u: float) -> None:
    members, excluded, eligible = build(all_specs)
    with_room = [m for m in eligible if m.load < m.capacity]

    chosen = pick(members, hard, exclude=excluded, rng=FixedRandom(u))

    if chosen is not None:
        assert chosen in eligible
        assert chosen.online and chosen.status is MemberStatus.ACTIVE and not chosen.removed
        assert chosen not in excluded
    if with_room:
        assert chosen in with_room
    elif hard:
        assert chosen is None
    elif eligible:
        assert chosen is not None
        assert chosen.utilisation == min(m.utilisation for m in eligible)
    else:
        assert chosen is None


@given(st.lists(any_specs, min_size=1, max_size=8), st.floats(0.0, 1.0, exclude_max=True))
def test_draw_lands_in_the_chosen_members_share(all_specs: list[Spec], u: float) -> None:
    members, excluded, eligible = build(all_specs)
    with_room = [m for m in eligible if m.load < m.capacity]
    assume(with_room)
    total = sum(share(m) for m in with_room)
    point = u * total

    chosen = pick(members, True, exclude=excluded, rng=FixedRandom(u))

    assert chosen is not None
    low = sum(share(m) for m in with_room[: with_room.index(chosen)])
    tolerance = 1e-9 * total
    assert low - tolerance <= point <= low + share(chosen) + tolerance


@pytest.mark.parametrize(
    "layout",
    [
        # (weight, capacity, load) per member
        [(100, 10, 0), (100, 10, 0)],
        [(100, 10, 0), (300, 10, 0), (50, 10, 0)],
        [(100, 10, 0), (100, 10, 5), (100, 10, 9), (100, 10, 10)],
        [(1, 1000, 0), (10, 1000, 500), (100, 1000, 900), (500, 100, 99)],
        [(1000, 4000, 3000), (250, 4000, 0), (700, 50, 10)],
    ],
)
def test_pick_frequencies_follow_weight_times_spare_capacity(
    layout: list[tuple[int, int, int]],
) -> None:
    members = [
        make_member(f"m{i}", weight=w, capacity=c, load=load)
        for i, (w, c, load) in enumerate(layout)
    ]
    rng = random.Random(20240611)
    draws = 20_000
    seen = Counter(pick(members, True, rng=rng) for _ in range(draws))

    total = sum(share(m) for m in members)
    chi2 = 0.0
    for m in members:
        expected = draws * share(m) / total
        if expected == 0:
            assert seen[m] == 0
            continue
        chi2 += (seen[m] - expected) ** 2 / expected
    assert None not in seen
    dof = sum(1 for m in members if share(m) > 0) - 1
    # generous: far beyond the 99.99th percentile for these few degrees of freedom
    assert chi2 < 10 * (dof + 5)
