"""Store reads gathered into one MGET: store/lookups.py, without a server."""

from __future__ import annotations

import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from rtpcluster.store.lookups import Lookups, answer, fail

keys = st.lists(st.sampled_from([f"k{n}" for n in range(12)]), max_size=40)


@given(asked=st.lists(keys, max_size=6), max_keys=st.integers(1, 8))
def test_every_key_asked_is_read_once_in_order_and_shared(
    asked: list[list[str]], max_keys: int
) -> None:
    """Rounds of asks, each followed by takes until nothing waits: every key asked in a
    round is read once (its callers share one Waiting), oldest first, at most
    ``max_keys`` per read, and every caller gets the value of its own key."""

    async def play() -> None:
        lookups = Lookups(max_keys)
        for round_keys in asked:
            waits = [(key, lookups.ask(key)) for key in round_keys]
            read: list[str] = []
            while len(lookups):
                batch = await lookups.take()
                assert 1 <= len(batch) <= max_keys
                read += batch
                answer(batch, [key.encode() for key in batch])
            assert read == list(dict.fromkeys(round_keys))
            for key, waiting in waits:
                assert waiting.done.is_set() and not waiting.failed
                assert waiting.value == key.encode()

    trio.run(play)


async def test_take_waits_for_a_key_and_fail_all_ends_every_wait() -> None:
    lookups = Lookups()
    taken: list[list[str]] = []

    async def reader() -> None:
        taken.append(list(await lookups.take()))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        assert taken == []  # nothing asked: the reader waits
        first = lookups.ask("a")
    assert taken == [["a"]] and not first.done.is_set()
    fail({"a": first})
    assert first.done.is_set() and first.failed
    left = [lookups.ask("b"), lookups.ask("c")]
    lookups.fail_all()
    assert len(lookups) == 0 and all(w.done.is_set() and w.failed for w in left)
