"""Damping: rise, fall, flap hold-downs, over examples and random histories of results."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtpcluster.cluster.damping import Damping, DampingSettings, Transition
from rtpcluster.config import parse_config

GOOD, REPLY, FAILED, LOST = "good", "reply", "failed", "lost"


def report(damping: Damping, result: str, now: float) -> Transition | None:
    if result == GOOD:
        return damping.on_success(now)
    if result == REPLY:
        return damping.on_reply(now)
    if result == LOST:
        return damping.on_lost(now)
    return damping.on_failure(now)


def flap(damping: Damping, now: float, settings: DampingSettings) -> Transition | None:
    """Take an up member out with ``fall`` failures; what the last one returned."""
    outcome = None
    for _ in range(settings.fall):
        outcome = damping.on_failure(now)
    return outcome


def bring_back(damping: Damping, now: float, settings: DampingSettings) -> Transition | None:
    outcome = None
    for _ in range(settings.rise):
        outcome = damping.on_success(now)
    return outcome


# --- examples ------------------------------------------------------------------------------


def test_first_answer_brings_a_new_member_up_at_once() -> None:
    damping = Damping(DampingSettings(rise=3))
    assert not damping.up
    assert damping.on_failure(0.0) is None  # never up: nothing to take out
    assert damping.on_reply(0.5) is None  # a late reply counts nothing
    assert damping.on_success(1.0) is Transition.UP
    assert damping.up


def test_fall_failures_in_a_row_take_it_out_and_a_success_restarts_the_count() -> None:
    damping = Damping(DampingSettings(fall=3))
    damping.on_success(0.0)
    assert damping.on_failure(1.0) is None
    assert damping.on_failure(2.0) is None
    assert damping.on_reply(2.1) is None  # a command answered: the count starts again
    assert damping.on_failure(3.0) is None
    assert damping.on_failure(4.0) is None
    assert damping.on_failure(5.0) is Transition.DOWN
    assert not damping.up
    assert damping.on_failure(6.0) is None  # already out


def test_rise_good_probes_in_a_row_bring_it_back_replies_do_not() -> None:
    damping = Damping(DampingSettings(rise=2, fall=1))
    damping.on_success(0.0)
    assert damping.on_failure(1.0) is Transition.DOWN
    assert damping.on_success(2.0) is None
    assert damping.on_failure(3.0) is None  # the count starts again
    assert damping.on_success(4.0) is None
    assert damping.on_reply(4.5) is None  # a late reply of a command sent before
    assert not damping.up
    assert damping.on_success(5.0) is Transition.UP


def test_a_lost_connection_takes_it_out_at_once_and_breaks_a_rise_streak() -> None:
    damping = Damping(DampingSettings(rise=2, fall=3))
    assert damping.on_lost(0.0) is None  # never up: nothing to take out
    damping.on_success(1.0)
    assert damping.on_lost(2.0) is Transition.DOWN
    assert not damping.up and not damping.rising
    assert damping.on_success(3.0) is None
    assert damping.rising  # one good answer of two
    assert damping.on_lost(4.0) is None
    assert not damping.rising
    assert damping.on_success(5.0) is None
    assert damping.on_success(6.0) is Transition.UP
    assert not damping.rising


def test_five_flaps_within_a_minute_hold_it_down_growing_to_five_minutes() -> None:
    settings = DampingSettings()  # 2, 2, 5 in 60 s, 10 s doubling to 300 s
    damping = Damping(settings)
    now = 0.0
    damping.on_success(now)
    for _ in range(4):  # four flaps: out, back
        now += 3.0
        assert flap(damping, now, settings) is Transition.DOWN
        now += 3.0
        assert bring_back(damping, now, settings) is Transition.UP
    now += 3.0
    assert flap(damping, now, settings) is Transition.HELD_DOWN  # the fifth in 27 s
    assert (damping.last_hold, damping.held_until) == (10.0, now + 10.0)
    assert damping.held_down(now + 9.9) and damping.held_down_left(now + 4.0) == 6.0
    assert bring_back(damping, now + 5.0, settings) is None  # good answers, but held
    assert damping.on_success(now + 9.99) is None
    assert damping.on_success(now + 10.0) is Transition.UP  # rise in a row, hold over
    assert damping.held_down_left(now + 10.0) is None

    holds, flaps_to_hold = [], []
    for _ in range(7):  # it flaps on: each hold twice as long as the last, at most 300 s
        assert damping.held_until is not None
        now = damping.held_until
        flaps = 0
        while True:
            bring_back(damping, now, settings)
            now += 1.0
            flaps += 1
            if flap(damping, now, settings) is Transition.HELD_DOWN:
                break
        holds.append(damping.last_hold)
        flaps_to_hold.append(flaps)
    assert holds == [20.0, 40.0, 80.0, 160.0, 300.0, 300.0, 300.0]
    # outs before a short hold still count within the minute after it; never more than 5
    assert flaps_to_hold[:2] == [1, 1]
    assert all(1 <= flaps <= settings.flap_limit for flaps in flaps_to_hold)


def test_after_a_stable_stretch_a_hold_down_starts_short_again() -> None:
    settings = DampingSettings(fall=1, rise=1, flap_limit=2, flap_window=10.0, hold_down=5.0)
    damping = Damping(settings)
    damping.on_success(0.0)
    damping.on_failure(1.0)
    damping.on_success(2.0)
    assert damping.on_failure(3.0) is Transition.HELD_DOWN
    assert damping.last_hold == 5.0
    damping.on_success(8.0)
    assert damping.on_failure(9.0) is Transition.HELD_DOWN
    assert damping.last_hold == 10.0
    damping.on_success(19.0)  # then up for hold_down_max (300 s): a clean slate
    damping.on_failure(319.0)
    damping.on_success(320.0)
    assert damping.on_failure(321.0) is Transition.HELD_DOWN
    assert damping.last_hold == 5.0


def test_flap_limit_0_never_holds_down() -> None:
    settings = DampingSettings(fall=1, rise=1, flap_limit=0)
    damping = Damping(settings)
    damping.on_success(0.0)
    for step in range(50):
        assert damping.on_failure(step + 0.5) is Transition.DOWN
        assert damping.on_success(step + 0.6) is Transition.UP


def test_outs_spread_wider_than_the_window_are_no_flapping() -> None:
    settings = DampingSettings(fall=1, rise=1, flap_limit=3, flap_window=60.0)
    damping = Damping(settings)
    damping.on_success(0.0)
    for step in range(10):  # one out every 31 s: never three within 60 s
        assert damping.on_failure(31.0 * step + 1) is Transition.DOWN
        damping.on_success(31.0 * step + 2)


def test_new_settings_keep_the_history() -> None:
    damping = Damping(DampingSettings(fall=3))
    damping.on_success(0.0)
    damping.on_failure(1.0)
    damping.on_failure(2.0)
    damping.update_settings(DampingSettings(fall=2))
    assert damping.on_failure(3.0) is Transition.DOWN  # three failures, two needed now
    damping.update_settings(DampingSettings(rise=1, hold_down=1.0, hold_down_max=2.0))
    assert damping.on_success(4.0) is Transition.UP


def test_settings_come_from_the_cluster_config() -> None:
    [cluster] = parse_config(
        "<rtp_cluster_config><rtp_cluster><name>c</name><address>udp:127.0.0.1:1</address>"
        "<rise>3</rise><fall>4</fall><flap_limit>6</flap_limit><flap_window>30</flap_window>"
        "<hold_down>5</hold_down><hold_down_max>50</hold_down_max>"
        "</rtp_cluster></rtp_cluster_config>"
    ).clusters
    assert DampingSettings.of(cluster) == DampingSettings(3, 4, 6, 30.0, 5.0, 50.0)
    [default] = parse_config(
        "<rtp_cluster_config><rtp_cluster><name>c</name><address>udp:127.0.0.1:1</address>"
        "</rtp_cluster></rtp_cluster_config>"
    ).clusters
    assert DampingSettings.of(default) == DampingSettings()


@pytest.mark.parametrize(
    "fields",
    [{"rise": 0}, {"fall": 0}, {"flap_limit": -1}, {"hold_down": 0.0}, {"hold_down_max": 5.0}],
)
def test_impossible_settings_are_refused(fields: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        DampingSettings(**fields)  # type: ignore[arg-type]


# --- properties over random histories --------------------------------------------------------


@st.composite
def damping_settings(draw: st.DrawFn) -> DampingSettings:
    hold_down = draw(st.floats(1.0, 50.0))
    return DampingSettings(
        rise=draw(st.integers(1, 4)),
        fall=draw(st.integers(1, 4)),
        flap_limit=draw(st.integers(0, 5)),
        flap_window=draw(st.floats(1.0, 100.0)),
        hold_down=hold_down,
        hold_down_max=draw(st.floats(hold_down, 400.0)),
    )


# A result and the seconds since the one before; runs of one result make flaps likely.
steps = st.lists(
    st.tuples(
        st.sampled_from([GOOD, REPLY, FAILED, LOST]), st.floats(0.0, 30.0), st.integers(1, 5)
    ),
    max_size=60,
).map(lambda runs: [(result, gap) for result, gap, times in runs for _ in range(times)])


@dataclass
class Observer:
    """What the results so far say, counted independently of Damping's own counters."""

    settings: DampingSettings
    ever_up: bool = False
    up: bool = False
    good_in_a_row: int = 0  # while out: good heartbeats/probes since the last failure
    failed_in_a_row: int = 0  # while up: failures since the last good result or reply
    up_since: float = 0.0
    last_hold: float | None = None

    def outs_within_window(self, outs: list[float], now: float) -> bool:
        limit = self.settings.flap_limit
        return (
            bool(limit) and len(outs) >= limit and now - outs[-limit] <= self.settings.flap_window
        )


@given(damping_settings(), steps)
def test_damping_follows_rise_fall_and_hold_downs(
    settings: DampingSettings, history: list[tuple[str, float]]
) -> None:
    damping = Damping(settings)
    seen = Observer(settings)
    outs: list[float] = []
    now = 0.0
    for result, gap in history:
        now += gap
        was_up, held_until = seen.up, damping.held_until
        if was_up:
            seen.failed_in_a_row = seen.failed_in_a_row + 1 if result == FAILED else 0
        elif seen.ever_up:
            if result == GOOD:
                seen.good_in_a_row += 1
            elif result in (FAILED, LOST):
                seen.good_in_a_row = 0

        outcome = report(damping, result, now)

        if outcome is Transition.UP:
            assert not was_up
            if seen.ever_up:  # back after being out: rise good ones in a row, hold over
                assert result == GOOD and seen.good_in_a_row >= settings.rise
                assert held_until is None or now >= held_until
            else:  # its first answer
                assert result == GOOD
            seen.ever_up, seen.up, seen.failed_in_a_row, seen.up_since = True, True, 0, now
        elif outcome in (Transition.DOWN, Transition.HELD_DOWN):
            # out after exactly fall failures in a row, never earlier; or its connection lost
            assert was_up and result in (FAILED, LOST)
            if result == FAILED:
                assert seen.failed_in_a_row == settings.fall
            stable = now - seen.up_since >= settings.hold_down_max
            outs.append(now)
            held = seen.outs_within_window(outs, now)
            assert (outcome is Transition.HELD_DOWN) == held
            if held:
                grown = seen.last_hold is not None and not stable
                expected = (
                    min(2 * seen.last_hold, settings.hold_down_max)
                    if grown and seen.last_hold is not None
                    else settings.hold_down
                )
                assert damping.last_hold == pytest.approx(expected)
                assert settings.hold_down <= damping.last_hold <= settings.hold_down_max
                assert damping.held_until == pytest.approx(now + expected)
                seen.last_hold = expected
            elif stable:
                seen.last_hold = None  # the next hold starts short
            seen.up, seen.good_in_a_row = False, 0
        else:
            assert outcome is None
            # never out while fewer than fall failures in a row; never left up after fall
            if was_up:
                assert seen.failed_in_a_row < settings.fall and result != LOST
            # never back while fewer than rise good ones in a row, or while held down
            if seen.ever_up and not was_up and result == GOOD:
                assert seen.good_in_a_row < settings.rise or (
                    held_until is not None and now < held_until
                )
        assert damping.up == seen.up
        assert damping.held_down(now) == (
            not seen.up and damping.held_until is not None and now < damping.held_until
        )
