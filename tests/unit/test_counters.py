"""The counters the executors bump: fixed buckets, fixed labels, state bookkeeping."""

from __future__ import annotations

from bisect import bisect_left

from hypothesis import given
from hypothesis import strategies as st

from rtpcluster.cluster.counters import (
    COMMAND_OPS,
    COMMAND_RESULTS,
    LATENCY_BOUNDS,
    ClusterCounters,
    LatencyHistogram,
    MemberCounters,
    member_result,
    op_label,
    reply_result,
)
from rtpcluster.protocol import error_code

seconds = st.floats(min_value=0.0, max_value=100.0, allow_nan=False)


@given(st.lists(seconds, max_size=200))
def test_cumulative_buckets_count_the_observations_at_or_below_each_bound(
    observed: list[float],
) -> None:
    histogram = LatencyHistogram()
    for value in observed:
        histogram.observe(value)
    cumulative = histogram.cumulative()
    assert [bound for bound, _ in cumulative] == [*LATENCY_BOUNDS, float("inf")]
    for bound, count in cumulative:
        assert count == sum(1 for value in observed if value <= bound)
    assert histogram.count == len(observed)
    assert histogram.total_seconds == sum(observed)


def test_a_value_on_a_bound_is_in_that_bucket() -> None:
    # Prometheus buckets are "less than or equal": 1 ms belongs to le="0.001".
    histogram = LatencyHistogram()
    histogram.observe(0.001)
    index = LATENCY_BOUNDS.index(0.001)
    assert histogram.counts[index] == 1
    assert histogram.cumulative()[index - 1][1] == 0


def test_buckets_span_a_tenth_of_a_millisecond_to_a_second() -> None:
    assert LATENCY_BOUNDS[0] == 0.0001 and LATENCY_BOUNDS[-1] == 1.0
    assert list(LATENCY_BOUNDS) == sorted(set(LATENCY_BOUNDS))
    assert bisect_left(LATENCY_BOUNDS, 5.0) == len(LATENCY_BOUNDS)  # +Inf


def test_every_command_label_pair_exists_from_the_start() -> None:
    counters = ClusterCounters()
    pairs = {(op, r) for op, results in counters.commands.items() for r in results}
    assert pairs == {(op, r) for op in COMMAND_OPS for r in COMMAND_RESULTS}
    assert not any(n for results in counters.commands.values() for n in results.values())
    counters.commands["U"]["ok"] += 1
    assert counters.commands["U"]["ok"] == 1


@given(st.binary(max_size=20))
def test_op_label_is_always_a_known_op(body: bytes) -> None:
    label = op_label(body)
    assert label in COMMAND_OPS
    if body and chr(body[0]).upper() in "ULDPSRCQNXIGV":
        assert label == chr(body[0]).upper()
    else:
        assert label == "-"


@given(st.lists(st.booleans(), max_size=30))
def test_state_changes_count_every_change_and_downtime_only_grows(changes: list[bool]) -> None:
    counters = MemberCounters()
    seen = counters.downtime()
    for online in changes:
        counters.state_changed(online)
        now = counters.downtime()
        assert now >= seen
        seen = now
    assert counters.state_changes == len(changes)


def test_downtime_stands_still_while_online() -> None:
    counters = MemberCounters()
    counters.state_changed(True)
    frozen = counters.downtime()
    assert counters.downtime() == frozen
    counters.state_changed(True)  # a repeated "online" does not restart anything
    assert counters.downtime() == frozen
    counters.state_changed(False)
    assert counters.downtime() >= frozen


@given(st.one_of(st.text(max_size=12), st.from_regex(r"\AE[0-9]{1,4}\n?\Z")))
def test_a_reply_is_an_error_exactly_when_the_protocol_says_so(reply: str) -> None:
    code = error_code(reply)
    expected = "ok" if code is None else "timeout" if code == 997 else "error"
    assert reply_result(reply) == expected
    assert member_result(reply) == ("ok" if code is None else "error")  # a member's E997 too
