from hypothesis import given
from hypothesis import strategies as st

from rtpcluster.logthrottle import MAX_KEYS, LogThrottle


def test_one_line_per_interval_with_count() -> None:
    throttle = LogThrottle(10.0)
    assert throttle.allow("a", 0.0) == 0
    assert throttle.allow("a", 1.0) is None
    assert throttle.allow("a", 2.0) is None
    assert throttle.allow("b", 2.0) == 0
    assert throttle.allow("a", 10.5) == 2


@given(st.lists(st.tuples(st.integers(0, 50), st.floats(0, 3))))
def test_every_occurrence_is_logged_or_counted(events: list[tuple[int, float]]) -> None:
    throttle = LogThrottle(1.0)
    now, logged, reported = 0.0, 0, 0
    for key, step in events:
        now += step
        suppressed = throttle.allow(key, now)
        if suppressed is not None:
            logged += 1
            reported += suppressed
    pending = sum(count for _, count in throttle._seen.values())
    assert logged + reported + pending == len(events)


def test_a_flood_of_distinct_keys_stays_bounded() -> None:
    throttle = LogThrottle(1.0)
    for key in range(MAX_KEYS * 3):
        assert throttle.allow(key, 0.0) == 0
    assert len(throttle._seen) == MAX_KEYS
