"""ReplyCache: in-flight marking, cached replies, and their lifetime across rotations."""

from __future__ import annotations

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


# --- model-based -----------------------------------------------------------------------------

keys = st.tuples(st.sampled_from([b"c1", b"c2", b"c3"]), st.sampled_from([ADDR, ("::1", 9, 0, 0)]))
replies = st.binary(min_size=1, max_size=8)


class ReplyCacheMachine(RuleBasedStateMachine):
    """Compare ReplyCache with a dict of key -> (reply or IN_FLIGHT, generation age).

    Abandon is only applied to keys begun in the current generation.
    """

    def __init__(self) -> None:
        super().__init__()
        self.cache = ReplyCache()
        self.model: dict[tuple[bytes, object], tuple[bytes, int]] = {}

    @rule(key=keys)
    def begin(self, key: tuple[bytes, object]) -> None:
        known = self.cache.begin(key)
        if key in self.model:
            assert known == self.model[key][0]
        else:
            assert known is None
            self.model[key] = (IN_FLIGHT, 0)

    @rule(key=keys, reply=replies)
    def finish(self, key: tuple[bytes, object], reply: bytes) -> None:
        self.cache.finish(key, reply)
        self.model[key] = (reply, 0)

    @rule(key=keys)
    def abandon(self, key: tuple[bytes, object]) -> None:
        if self.model.get(key, (b"x", 0))[1] != 0:
            return
        self.cache.abandon(key)
        if self.model.get(key) == (IN_FLIGHT, 0):
            del self.model[key]

    @rule()
    def rotate(self) -> None:
        self.cache.rotate()
        self.model = {k: (v, 1) for k, (v, age) in self.model.items() if age == 0}

    @invariant()
    def same_size(self) -> None:
        assert len(self.cache) == len(self.model)


ReplyCacheMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=30)
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
