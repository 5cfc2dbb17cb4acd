"""balancer: who may take a new call, hard/soft limits, backups, slow start, the draw."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from dataclasses import dataclass

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from rtpcluster.cluster.balancer import RAMP_START, effective_weight, pick
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
    member = Member(config, clock=lambda: 0.0)  # no trio run: a clock of its own
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


# --- backups and slow start (candidates with backup and effective_weight) ----------------


@dataclass(eq=False)
class Candidate:
    """What pick reads of a member, with the two optional attributes set."""

    name: str
    weight: int = 100
    effective_weight: float = 100.0
    utilisation: float = 0.0
    accepts_new_sessions: bool = True
    backup: bool = False


def tier_share(member: Candidate) -> float:
    return member.effective_weight * (1.0 - member.utilisation)


def test_a_backup_gets_no_call_while_a_primary_has_room() -> None:
    primary = Candidate("p", weight=1, effective_weight=1, utilisation=0.99)
    backup = Candidate("b", weight=1000, effective_weight=1000, backup=True)
    for hard in (True, False):
        for value in (0.0, 0.5, 0.999999):
            assert pick([backup, primary], hard, rng=FixedRandom(value)) is primary


@pytest.mark.parametrize(
    "state",
    [{"accepts_new_sessions": False}, {"excluded": True}],
    ids=["primary out (offline, suspended, draining, removed)", "primary left it unanswered"],
)
def test_backups_take_the_calls_when_no_primary_may(state: dict[str, bool]) -> None:
    primary = Candidate("p", accepts_new_sessions=state.get("accepts_new_sessions", True))
    backups = [Candidate("b1", backup=True), Candidate("b2", backup=True, utilisation=0.5)]
    exclude = [primary] if state.get("excluded") else []
    members = [primary, *backups]
    assert pick(members, True, exclude, FixedRandom(0.0)) is backups[0]
    assert pick(members, True, exclude, FixedRandom(0.9)) is backups[1]  # 100 + 50: 135 is b2


def test_full_primaries_overflow_to_backups_only_under_a_hard_limit() -> None:
    full = [Candidate("p1", utilisation=1.0), Candidate("p2", utilisation=1.2)]
    backup = Candidate("b", backup=True, utilisation=0.5)
    assert pick([*full, backup], hard_limit=True) is backup
    # soft: a full primary can still take a call, the least utilised one does
    assert pick([*full, backup], hard_limit=False) is full[0]


def test_full_backups_under_limits() -> None:
    primary = Candidate("p", accepts_new_sessions=False)
    backups = [
        Candidate("b1", backup=True, utilisation=1.5),
        Candidate("b2", backup=True, utilisation=1.1),
    ]
    assert pick([primary, *backups], hard_limit=True) is None
    assert pick([primary, *backups], hard_limit=False) is backups[1]


def test_the_draw_uses_the_effective_weight() -> None:
    ramping = Candidate("r", weight=100, effective_weight=10)  # 10 of 110
    full = Candidate("f", weight=100, effective_weight=100)
    assert pick([ramping, full], True, rng=FixedRandom(9 / 110)) is ramping
    assert pick([ramping, full], True, rng=FixedRandom(11 / 110)) is full


@dataclass
class CandidateSpec:
    weight: int
    ramp: float  # effective weight / weight
    utilisation: float
    accepts: bool
    backup: bool
    excluded: bool


candidate_specs = st.builds(
    CandidateSpec,
    weight=st.integers(1, 1000),
    ramp=st.sampled_from([1.0, 0.1]) | st.floats(0.1, 1.0),
    utilisation=st.sampled_from([0.0, 1.0]) | st.floats(0.0, 1.5),
    accepts=st.booleans(),
    backup=st.booleans(),
    excluded=st.booleans(),
)
# Members that may take calls, so that lists often hold several of one tier.
ready_candidate_specs = st.builds(
    CandidateSpec,
    weight=st.integers(1, 1000),
    ramp=st.sampled_from([1.0, 0.1]) | st.floats(0.1, 1.0),
    utilisation=st.floats(0.0, 0.99),
    accepts=st.just(True),
    backup=st.booleans(),
    excluded=st.just(False),
)
# Members that may take calls but are full (so a soft limit's choice is tried too).
full_candidate_specs = st.builds(
    CandidateSpec,
    weight=st.integers(1, 1000),
    ramp=st.just(1.0),
    utilisation=st.floats(1.0, 1.5),
    accepts=st.just(True),
    backup=st.booleans(),
    excluded=st.just(False),
)


def build_candidates(all_specs: list[CandidateSpec]) -> tuple[list[Candidate], list[Candidate]]:
    """The candidates and those excluded."""
    members = [
        Candidate(
            f"m{i}",
            weight=s.weight,
            effective_weight=s.weight * s.ramp,
            utilisation=s.utilisation,
            accepts_new_sessions=s.accepts,
            backup=s.backup,
        )
        for i, s in enumerate(all_specs)
    ]
    return members, [m for m, s in zip(members, all_specs, strict=True) if s.excluded]


@given(
    st.lists(candidate_specs | ready_candidate_specs | full_candidate_specs, max_size=8),
    st.booleans(),
    st.floats(0.0, 1.0, exclude_max=True),
)
def test_placement_rule_with_backups_ramps_and_capacities(
    all_specs: list[CandidateSpec], hard: bool, u: float
) -> None:
    members, excluded = build_candidates(all_specs)
    may_take = [m for m in members if m.accepts_new_sessions and m not in excluded]
    primaries = [m for m in may_take if not m.backup]
    backups = [m for m in may_take if m.backup]
    # A primary "can take" the call: it has room, or the limit is soft (a full one may).
    primary_can_take = any(tier_share(m) > 0 for m in primaries) or (not hard and primaries)

    chosen = pick(members, hard, exclude=excluded, rng=FixedRandom(u))

    # never a member that may not take calls
    assert chosen is None or chosen in may_take
    # never a backup while a primary can take the call
    if primary_can_take:
        assert chosen is not None and not chosen.backup
    # within the tier: one with room if any; else, under a soft limit, the least utilised
    tier = primaries if primary_can_take else backups
    with_room = [m for m in tier if tier_share(m) > 0]
    if with_room:
        assert chosen in with_room
        low = sum(tier_share(m) for m in with_room[: with_room.index(chosen)])
        point = u * sum(tier_share(m) for m in with_room)
        tolerance = 1e-9 * point + 1e-12
        assert low - tolerance <= point <= low + tier_share(chosen) + tolerance
    elif tier and not hard:
        assert chosen is not None
        assert chosen.utilisation == min(m.utilisation for m in tier)
    else:
        assert chosen is None


# Upper 1e-6 quantile of the chi-square distribution by degrees of freedom
# (scipy.stats.chi2.ppf(1 - 1e-6, dof)): a correct pick exceeds it once in a million runs.
CHI2_1E6 = {1: 23.93, 2: 27.63, 3: 30.66, 4: 33.38, 5: 35.89, 6: 38.26, 7: 40.52}


def chi_square(seen: Counter[Candidate], expected: dict[Candidate, float]) -> tuple[float, int]:
    """Chi-square and degrees of freedom, members expected under 5 times pooled in one bin."""
    bins: list[tuple[float, float]] = []
    pooled_seen = pooled_expected = 0.0
    for member, count in expected.items():
        if count < 5:
            pooled_seen += seen[member]
            pooled_expected += count
        else:
            bins.append((seen[member], count))
    if pooled_expected > 0:
        bins.append((pooled_seen, pooled_expected))
    return sum((o - e) ** 2 / e for o, e in bins), len(bins) - 1


# Members that may take calls, with room, so every one has a share.
serving_specs = st.builds(
    CandidateSpec,
    weight=st.integers(10, 1000),
    ramp=st.sampled_from([1.0, 0.1]) | st.floats(0.1, 1.0),
    utilisation=st.floats(0.0, 0.9),
    accepts=st.just(True),
    backup=st.booleans(),
    excluded=st.just(False),
)


@settings(max_examples=20, deadline=None, derandomize=True)
@given(st.lists(serving_specs, min_size=2, max_size=8), st.booleans())
def test_long_run_share_follows_the_effective_weights(
    all_specs: list[CandidateSpec], hard: bool
) -> None:
    members, _ = build_candidates(all_specs)
    primaries = [m for m in members if not m.backup]
    tier = primaries or members  # all backups: they share the calls among them
    total = sum(tier_share(m) for m in tier)
    draws = 5000
    rng = random.Random(20240611)

    seen = Counter(pick(members, hard, rng=rng) for _ in range(draws))

    assert all(m in tier for m in seen)  # no backup while a primary can take calls
    expected = {m: draws * tier_share(m) / total for m in tier}
    statistic, dof = chi_square(seen, expected)
    if dof > 0:
        assert statistic < CHI2_1E6[dof], (statistic, dof)


def test_a_ramping_member_gets_its_ramped_share() -> None:
    """Slow start at 10 %: 100 vs 10 over 20,000 draws; 3 sigma of the binomial count."""
    full = Candidate("full", weight=100, effective_weight=100)
    ramping = Candidate("ramping", weight=100, effective_weight=10)
    draws = 20_000
    rng = random.Random(7)
    got = sum(pick([full, ramping], True, rng=rng) is ramping for _ in range(draws))
    p = 10 / 110
    sigma = (draws * p * (1 - p)) ** 0.5
    assert abs(got - draws * p) < 3 * sigma


# --- the slow-start ramp --------------------------------------------------------------------


def test_effective_weight_examples() -> None:
    assert effective_weight(200, None, 5.0, 30.0) == 200  # started with the service
    assert effective_weight(200, 0.0, 5.0, 0.0) == 200  # slow start off
    assert effective_weight(200, 10.0, 10.0, 30.0) == pytest.approx(20.0)  # 10 % at once
    assert effective_weight(200, 10.0, 25.0, 30.0) == pytest.approx(110.0)  # half way: 55 %
    assert effective_weight(200, 10.0, 40.0, 30.0) == 200  # ramp over
    assert effective_weight(200, 10.0, 5.0, 30.0) == pytest.approx(20.0)  # clock before start


weights = st.integers(1, 10**6)
times = st.floats(-1e6, 1e6)
ramps = st.floats(0.0, 3600.0)


@given(weights, times, times, ramps)
def test_effective_weight_is_between_a_tenth_and_the_weight(
    weight: int, since: float, now: float, slow_start: float
) -> None:
    value = effective_weight(weight, since, now, slow_start)
    assert RAMP_START * weight * (1 - 1e-12) <= value <= weight
    if slow_start == 0.0 or now - since >= slow_start:
        assert value == weight


@given(weights, times, st.floats(0.0, 1e4), st.floats(0.0, 1e4), st.floats(0.001, 3600.0))
def test_effective_weight_grows_linearly_over_the_ramp(
    weight: int, since: float, a: float, b: float, slow_start: float
) -> None:
    early, late = sorted((a, b))
    w_early = effective_weight(weight, since, since + early, slow_start)
    w_late = effective_weight(weight, since, since + late, slow_start)
    assert w_early <= w_late * (1 + 1e-12)
    elapsed = (since + late) - since  # what the clock readings give, rounding included
    if elapsed < slow_start:  # on the ramp: the line from 10 % to 100 %
        expected = weight * (RAMP_START + (1 - RAMP_START) * max(0.0, elapsed) / slow_start)
        assert w_late == pytest.approx(expected, rel=1e-9)


@given(weights, times, ramps)
def test_not_ramped_without_a_start(weight: int, now: float, slow_start: float) -> None:
    assert effective_weight(weight, None, now, slow_start) == weight
