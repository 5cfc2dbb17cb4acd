"""ReplyCache: in-flight marking, cached replies, their lifetime, and its bounds."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from rtpcluster.cluster.reply_cache import IN_FLIGHT, ReplyCache

ADDR = ("127.0.0.1", 5060)
KEY = (b"cookie1", ADDR)


def test_first_begin_marks_in_flight() -> None:
    cache = ReplyCache()
    assert cache.begin(KEY) is None
    assert len(cache) == 1
    assert cache.begin(KEY) == IN_FLIGHT  # a retransmit while the first copy is worked on
    assert cache.begin(KEY) == IN_FLIGHT


def test_finished_reply_is_returned() -> None:
    cache = ReplyCache()
    cache.begin(KEY)
    cache.finish(KEY, b"cookie1 12345\n")
    assert cache.begin(KEY) == b"cookie1 12345\n"
    assert len(cache) == 1


def test_key_is_cookie_and_source_address() -> None:
    cache = ReplyCache()
    cache.begin(KEY)
    cache.finish(KEY, b"cookie1 0\n")
    assert cache.begin((b"cookie1", ("127.0.0.1", 5061))) is None  # other sender
    assert cache.begin((b"cookie2", ADDR)) is None  # other cookie
    assert cache.begin(KEY) == b"cookie1 0\n"


def test_abandon_forgets_an_in_flight_key() -> None:
    cache = ReplyCache()
    cache.begin(KEY)
    cache.abandon(KEY)
    assert len(cache) == 0
    assert cache.begin(KEY) is None  # the retransmit is worked on afresh


def test_abandon_keeps_a_finished_reply() -> None:
    cache = ReplyCache()
    cache.begin(KEY)
    cache.finish(KEY, b"cookie1 0\n")
    cache.abandon(KEY)
    assert cache.begin(KEY) == b"cookie1 0\n"
    cache.abandon((b"unknown", ADDR))  # nothing to forget: no error
    assert len(cache) == 1


def test_reply_lives_across_one_rotation_and_is_gone_after_two() -> None:
    cache = ReplyCache(lifetime=5.0)
    assert cache.lifetime == 5.0
    cache.begin(KEY)
    cache.finish(KEY, b"cookie1 0\n")
    cache.rotate()
    assert cache.begin(KEY) == b"cookie1 0\n"
    assert len(cache) == 1
    cache.rotate()
    assert len(cache) == 0
    assert cache.begin(KEY) is None


def test_reading_an_old_reply_does_not_extend_its_life() -> None:
    cache = ReplyCache()
    cache.begin(KEY)
    cache.finish(KEY, b"cookie1 0\n")
    cache.rotate()
    assert cache.begin(KEY) == b"cookie1 0\n"
    cache.rotate()
    assert cache.begin(KEY) is None


def test_in_flight_survives_one_rotation() -> None:
    cache = ReplyCache()
    cache.begin(KEY)
    cache.rotate()
    assert cache.begin(KEY) == IN_FLIGHT
    cache.finish(KEY, b"cookie1 0\n")  # finishing moves it to the young generation
    assert len(cache) == 1
    cache.rotate()
    assert cache.begin(KEY) == b"cookie1 0\n"


def test_abandon_after_a_rotation_forgets_the_key() -> None:
    cache = ReplyCache()
    cache.begin(KEY)
    cache.rotate()
    cache.abandon(KEY)
    assert cache.begin(KEY) is None


def test_accounting_counts_cookies_and_replies() -> None:
    cache = ReplyCache()
    cache.begin(KEY)
    assert (len(cache), cache.held_bytes) == (1, len(b"cookie1"))
    cache.finish(KEY, b"cookie1 0\n")
    assert (len(cache), cache.held_bytes) == (1, len(b"cookie1") + len(b"cookie1 0\n"))
    cache.rotate()
    assert cache.held_bytes == len(b"cookie1") + len(b"cookie1 0\n")
    cache.rotate()
    assert (len(cache), cache.held_bytes) == (0, 0)


def test_entry_bound_drops_the_oldest_generation() -> None:
    cache = ReplyCache(max_entries=4)
    for n in range(5):
        cache.begin((b"c%d" % n, ADDR))
        assert len(cache) <= 4
    # c0, c1 filled the young half: c2 aged them, c4 aged c2, c3 and dropped c0, c1
    assert cache.early_rotations == 2
    assert [cache.begin((b"c%d" % n, ADDR)) for n in (4, 3, 2)] == [IN_FLIGHT] * 3
    assert cache.begin((b"c0", ADDR)) is None


def test_byte_bound_holds_under_a_flood_of_long_replies() -> None:
    cache = ReplyCache(max_entries=1_000_000, max_bytes=10_000)
    for n in range(1_000):
        key = (b"%0128d" % n, ADDR)
        cache.begin(key)
        cache.finish(key, key[0] + b" " + b"x" * 200 + b"\n")
        assert cache.held_bytes <= 10_000
    assert 0 < len(cache) < 50
    newest = (b"%0128d" % 999, ADDR)
    assert cache.begin(newest) == newest[0] + b" " + b"x" * 200 + b"\n"


def test_bounds_below_two_entries_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        ReplyCache(max_entries=1)


# --- model-based -----------------------------------------------------------------------------

keys = st.tuples(
    st.sampled_from([b"c1", b"c2", b"c3", b"c4", b"long-cookie-5"]),
    st.sampled_from([ADDR, ("::1", 9, 0, 0)]),
)
replies = st.binary(min_size=1, max_size=8)

YOUNG, OLD = 0, 1


class ReplyCacheMachine(RuleBasedStateMachine):
    """Compare ReplyCache with a dict of key -> (reply or IN_FLIGHT, generation age).

    The model ages itself early exactly when one more entry would pass half of a bound.
    Abandon is only applied to keys begun in the current generation.
    """

    def __init__(self) -> None:
        super().__init__()
        self.max_entries = 6
        self.max_bytes = 60
        self.cache = ReplyCache(max_entries=self.max_entries, max_bytes=self.max_bytes)
        self.model: dict[tuple[bytes, object], tuple[bytes, int]] = {}

    def _young(self) -> tuple[int, int]:
        young = [(k, v) for k, (v, age) in self.model.items() if age == YOUNG]
        return len(young), sum(len(k[0]) + len(v) for k, v in young)

    def _rotate(self) -> None:
        self.model = {k: (v, OLD) for k, (v, age) in self.model.items() if age == YOUNG}

    def _add_young(self, key: tuple[bytes, object], value: bytes) -> None:
        count, size = self._young()
        if (count + 1) * 2 > self.max_entries or (size + len(key[0]) + len(value)) * 2 > (
            self.max_bytes
        ):
            self._rotate()
        self.model[key] = (value, YOUNG)

    @rule(key=keys)
    def begin(self, key: tuple[bytes, object]) -> None:
        known = self.cache.begin(key)
        if key in self.model:
            assert known == self.model[key][0]
        else:
            assert known is None
            self._add_young(key, IN_FLIGHT)

    @rule(key=keys, reply=replies)
    def finish(self, key: tuple[bytes, object], reply: bytes) -> None:
        self.cache.finish(key, reply)
        previous = self.model.pop(key, None)
        if previous is not None and previous[1] == YOUNG:
            _, size = self._young()
            if (size + len(key[0]) + len(reply)) * 2 <= self.max_bytes:
                self.model[key] = (reply, YOUNG)  # replaced in place
                return
        self._add_young(key, reply)

    @rule(key=keys)
    def abandon(self, key: tuple[bytes, object]) -> None:
        if self.model.get(key, (b"x", YOUNG))[1] != YOUNG:
            return
        self.cache.abandon(key)
        if self.model.get(key) == (IN_FLIGHT, YOUNG):
            del self.model[key]

    @rule()
    def rotate(self) -> None:
        self.cache.rotate()
        self._rotate()

    @invariant()
    def same_content_and_accounting(self) -> None:
        assert len(self.cache) == len(self.model)
        assert self.cache.held_bytes == sum(len(k[0]) + len(v) for k, (v, _) in self.model.items())
        assert len(self.cache) <= self.max_entries
        assert self.cache.held_bytes <= self.max_bytes


ReplyCacheMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40)
TestReplyCache = ReplyCacheMachine.TestCase


@given(st.lists(st.binary(min_size=1, max_size=6), min_size=1, max_size=20, unique=True))
def test_many_cookies_each_get_their_own_reply(cookies: list[bytes]) -> None:
    cache = ReplyCache()
    for cookie in cookies:
        assert cache.begin((cookie, ADDR)) is None
    for cookie in cookies:
        cache.finish((cookie, ADDR), cookie + b" ok\n")
    cache.rotate()
    for cookie in cookies:
        assert cache.begin((cookie, ADDR)) == cookie + b" ok\n"
