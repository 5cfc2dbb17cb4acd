"""``<session_store>``: the top-level element, its one-line errors and its round trip;
and the memory store's contract (nothing shared, nothing waits)."""

from __future__ import annotations

import pytest
import trio

from rtpcluster.config import ConfigError, dump_config, parse_config
from rtpcluster.store.memory import MemoryStore

CLUSTER = (
    "<rtp_cluster><name>a</name><protocol>udp</protocol>"
    "<address>127.0.0.1:22222</address></rtp_cluster>"
)


def config_with(top: str) -> str:
    return f"<rtp_cluster_config>{top}{CLUSTER}</rtp_cluster_config>"


def test_default_is_memory_and_not_written() -> None:
    config = parse_config(config_with(""))
    assert config.session_store == "memory"
    assert "session_store" not in dump_config(config)


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("unix:///run/redis/redis.sock?db=2", "unix:///run/redis/redis.sock?db=2"),
        (" redis://10.0.0.5 ", "redis://10.0.0.5:6379/0"),
        ("rediss://:pw@cache:6390/1", "rediss://:pw@cache:6390/1"),
        ("memory", "memory"),
    ],
)
def test_session_store_element_round_trip(given: str, stored: str) -> None:
    config = parse_config(config_with(f"<session_store>{given}</session_store>"))
    assert config.session_store == stored
    assert parse_config(dump_config(config)) == config


@pytest.mark.parametrize(
    ("top", "message"),
    [
        (
            "<session_store>http://x</session_store>",
            "<session_store>: session store URL 'http://x'",
        ),
        ("<session_store/>", "<session_store>: must not be empty"),
        ("<session_store>redis://:hunter2@h:x</session_store>", "redis://:***@h:x"),
        (
            "<session_store>memory</session_store><session_store>memory</session_store>",
            "<session_store>: given 2 times",
        ),
        ('<session_store kind="x">memory</session_store>', "<session_store>: expected text only"),
    ],
)
def test_bad_session_store_is_one_line(top: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(config_with(top))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert "hunter2" not in str(caught.value)


async def test_memory_store_shares_nothing_and_never_waits() -> None:
    store = MemoryStore()
    assert not store.remote
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)  # returns at once: no task left behind
    store.configure("c1", 60.0)
    store.bind("c1", "a", "m1")
    store.refresh("c1", "a", "m1")
    assert await store.lookup("c1", "a") is None
    store.unbind("c1", "a")
    await store.flushed()
    await store.wait_until_up()
    assert store.counters.store_up == 1
    assert store.counters.writes_queued == 0
    assert store.describe() == "memory (not shared)"


def test_a_reload_that_changes_the_store_says_it_is_not_applied_without_the_password() -> None:
    from rtpcluster.service import plan_reload

    old = parse_config(config_with(""))
    new = parse_config(config_with("<session_store>redis://:pw@cache:6390/1</session_store>"))
    line = "session_store memory -> redis://:***@cache:6390/1: not applied (needs a restart)"
    assert plan_reload(old, new).changes == [line]
    flagged = plan_reload(old, new, store_flag="unix:///run/r.sock").changes
    assert flagged == [line.replace("needs a restart", "--session-store wins")]
    assert plan_reload(new, new).changes == []
