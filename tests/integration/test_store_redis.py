"""The Redis session store against a real redis-server, under trio (pytest-trio runs
every test in ``trio.run``: coredis' anyio backend is trio here, as in the service).

The server runs on a unix socket in a short temporary directory and is stopped, paused
(SIGSTOP) and started again by the tests to make outages. Nothing waits on time: each
step awaits the store's own events (up, down, flushed).
"""

from __future__ import annotations

import logging
import random
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import coredis
import pytest
import sniffio
import trio

from rtpcluster.store import open_store
from rtpcluster.store.redis import RedisStore
from testsupport.redis_server import RedisServer, redis_server_binary

FAST_BACKOFF = (0.01, 0.05)  # seconds: reconnect quickly once the server is back


@pytest.fixture
def redis_dir() -> Iterator[Path]:
    """A short directory: a unix socket path holds at most 107 bytes."""
    with tempfile.TemporaryDirectory(prefix="rtpc-redis-") as name:
        yield Path(name)


@pytest.fixture
def redis_server(redis_dir: Path) -> Iterator[RedisServer]:
    server = RedisServer(redis_server_binary(), redis_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def make_store(server: RedisServer, **options: object) -> RedisStore:
    options.setdefault("backoff", FAST_BACKOFF)
    store = open_store(server.url, **options)
    assert isinstance(store, RedisStore)
    return store


@asynccontextmanager
async def running(store: RedisStore, wait_up: bool = True) -> AsyncIterator[RedisStore]:
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        if wait_up:
            await store.wait_until_up()
        yield store
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def redis_client(server: RedisServer) -> AsyncIterator[coredis.Redis[str]]:
    client = coredis.Redis(
        host=None, port=None, unix_socket_path=str(server.socket), decode_responses=True
    )
    async with client:
        yield client


async def test_runs_under_trio_and_writes_land_with_ttl(redis_server: RedisServer) -> None:
    assert sniffio.current_async_library() == "trio"
    store = make_store(redis_server)
    store.configure("c1", 120.0)
    async with running(store):
        store.bind("c1", "call-1@host", "m1")
        store.bind("c1", "call-2@host", "m2")
        await store.flushed()
        async with redis_client(redis_server) as client:
            assert await client.get("rtpcluster:c1:call-1@host") == "m1"
            assert await client.get("rtpcluster:c1:call-2@host") == "m2"
            assert 0 < await client.ttl("rtpcluster:c1:call-1@host") <= 120
            store.unbind("c1", "call-1@host")
            await store.flushed()
            assert await client.exists(["rtpcluster:c1:call-1@host"]) == 0
    assert store.counters.writes_written == 3
    assert store.counters.bind_delay_count == 2
    assert store.counters.store_up == 1


async def test_refresh_rewrites_the_ttl_once_per_window(redis_server: RedisServer) -> None:
    now = [0.0]
    store = make_store(redis_server, clock=lambda: now[0])
    store.configure("c1", 100.0)  # window: 25 s of the store's clock
    async with running(store), redis_client(redis_server) as client:
        store.bind("c1", "a", "m1")
        await store.flushed()
        await client.expire("rtpcluster:c1:a", 10)  # as if the binding had aged
        store.refresh("c1", "a", "m1")  # same window: skipped
        await store.flushed()
        assert await client.ttl("rtpcluster:c1:a") <= 10
        now[0] = 25.0
        store.refresh("c1", "a", "m1")  # next window: SET ... EX 100 again
        await store.flushed()
        assert await client.ttl("rtpcluster:c1:a") > 10
    assert store.counters.refreshes_limited == 1


async def test_lookup_hits_misses_and_bad_values(redis_server: RedisServer) -> None:
    store = make_store(redis_server)
    async with running(store), redis_client(redis_server) as client:
        await client.set("rtpcluster:c1:known", "m2")
        await client.set("rtpcluster:c1:huge", "x" * 1000)
        await client.hset("rtpcluster:c1:hash", {"a": "b"})
        assert await store.lookup("c1", "known") == "m2"
        assert await store.lookup("c1", "unknown") is None
        assert await store.lookup("c2", "known") is None  # keys are per cluster
        assert await store.lookup("c1", "huge") is None  # not a member name we write
        assert await store.lookup("c1", "hash") is None  # not a string: MGET reads a miss
    assert store.counters.reads_hit == 1
    assert store.counters.reads_miss == 3
    assert store.counters.reads_error == 1


def mget_and_get_calls(server: RedisServer) -> tuple[int, int]:
    """How many MGET and GET commands the server has run since its stats were reset."""
    calls = {"mget": 0, "get": 0}
    for line in server.cli("INFO", "commandstats").splitlines():
        name, _, fields = line.partition(":")
        if name in ("cmdstat_mget", "cmdstat_get"):
            calls[name[len("cmdstat_") :]] = int(fields.split(",")[0].removeprefix("calls="))
    return calls["mget"], calls["get"]


async def test_lookups_asked_together_share_one_mget(redis_server: RedisServer) -> None:
    store = make_store(redis_server)
    async with running(store), redis_client(redis_server) as client:
        for n in range(0, 20, 2):
            await client.set(f"rtpcluster:c1:call{n}", f"m{n}")
        redis_server.cli("CONFIG", "RESETSTAT")
        found: dict[int, str | None] = {}

        async def look(n: int) -> None:
            found[n] = await store.lookup("c1", f"call{n % 20}")

        # Started together, the 24 lookups all leave their keys before the reader runs
        # (trio runs every task made runnable before a scheduling pass in that pass);
        # calls 0..3 are asked twice.
        async with trio.open_nursery() as nursery:
            for n in range(24):
                nursery.start_soon(look, n)
        assert found == {n: (f"m{n % 20}" if n % 2 == 0 else None) for n in range(24)}
        assert mget_and_get_calls(redis_server) == (1, 0)
        # A lone lookup goes at once, in a read of its own.
        assert await store.lookup("c1", "call2") == "m2"
        assert mget_and_get_calls(redis_server) == (2, 0)
    assert store.counters.reads_hit == 13 and store.counters.reads_miss == 12


async def test_cluster_names_with_colons_do_not_collide(redis_server: RedisServer) -> None:
    store = make_store(redis_server)
    async with running(store):
        store.bind("a", "b:c", "m1")
        store.bind("a:b", "c", "m2")
        await store.flushed()
        assert await store.lookup("a", "b:c") == "m1"
        assert await store.lookup("a:b", "c") == "m2"


async def test_deadline_when_redis_hangs(redis_server: RedisServer) -> None:
    store = make_store(redis_server, read_deadline=0.05, write_timeout=0.5)
    async with running(store):
        store.bind("c1", "call", "m1")
        await store.flushed()
        redis_server.pause()
        try:
            assert await store.lookup("c1", "call") is None
            assert store.counters.reads_error == 1
            # The missed deadline makes the writer check the server: it is found down.
            await store.wait_until_up(False)
            assert store.counters.outages == 1
            # Down: answered at once, from the queue for our own writes.
            assert await store.lookup("c1", "call") is None
            assert store.counters.reads_error == 2
            store.bind("c1", "during", "m2")
            assert await store.lookup("c1", "during") == "m2"
        finally:
            redis_server.resume()
        await store.wait_until_up()
        await store.flushed()
        assert await store.lookup("c1", "during") == "m2"
        assert await store.lookup("c1", "call") == "m1"


async def test_outage_bindings_are_rewritten_and_warned_once(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)  # every logger: coredis' records too
    store = make_store(redis_server)
    async with running(store):
        store.bind("c1", "before", "m1")
        await store.flushed()
        redis_server.stop()
        for index in range(50):
            store.bind("c1", f"during-{index}", "m2")
        store.unbind("c1", "before")
        await store.wait_until_up(False)
        store.bind("c1", "during-0", "m1")  # rebound while away: the latest wins
        redis_server.start()  # an empty server (no persistence)
        await store.wait_until_up()
        await store.flushed()
        async with redis_client(redis_server) as client:
            keys = sorted(await client.keys("rtpcluster:c1:*"))
            assert keys == sorted(f"rtpcluster:c1:during-{index}" for index in range(50))
            assert await client.get("rtpcluster:c1:during-0") == "m1"
            assert await client.get("rtpcluster:c1:during-1") == "m2"
    unreachable = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(unreachable) == 1
    assert unreachable[0].levelno == logging.WARNING
    assert "Traceback" not in caplog.text
    assert "NoneType: None" not in caplog.text  # coredis' exc_info outside an exception
    assert all("\n" not in record.getMessage() for record in caplog.records)
    assert store.counters.outages == 1
    assert store.counters.writes_dropped == 0


async def test_down_at_start_then_up(redis_dir: Path) -> None:
    server = RedisServer(redis_server_binary(), redis_dir)
    store = make_store(server)
    try:
        async with running(store, wait_up=False):
            store.bind("c1", "early", "m1")
            assert await store.lookup("c1", "other") is None  # not connected: at once
            assert store.counters.store_up == 0
            server.start()
            await store.wait_until_up()
            await store.flushed()
            assert await store.lookup("c1", "early") == "m1"
    finally:
        server.stop()
    assert store.counters.reads_error == 1


async def test_full_queue_during_outage_keeps_the_newest(redis_server: RedisServer) -> None:
    store = make_store(redis_server, max_pending=10)
    async with running(store):
        redis_server.stop()
        for index in range(25):
            store.bind("c1", f"call-{index:02d}", "m1")
        await store.wait_until_up(False)
        redis_server.start()
        await store.wait_until_up()
        await store.flushed()
        async with redis_client(redis_server) as client:
            keys = sorted(await client.keys("rtpcluster:c1:*"))
        assert keys == [f"rtpcluster:c1:call-{index:02d}" for index in range(15, 25)]
    assert store.counters.writes_dropped == 15


async def test_writes_refused_by_the_server_are_counted_not_an_outage(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    store = make_store(redis_server)
    async with running(store), redis_client(redis_server) as client:
        await client.config_set({"maxmemory": "1", "maxmemory-policy": "noeviction"})
        store.bind("c1", "refused", "m1")
        await store.flushed()
        store.bind("c1", "refused-too", "m1")
        await store.flushed()
        assert len([r for r in caplog.records if "refuses writes" in r.getMessage()]) == 1
        await client.config_set({"maxmemory": "0"})
        store.bind("c1", "accepted", "m1")
        await store.flushed()
        assert await store.lookup("c1", "accepted") == "m1"
        assert await client.exists(["rtpcluster:c1:refused"]) == 0
    assert len([r for r in caplog.records if "accepts writes again" in r.getMessage()]) == 1
    assert store.counters.writes_rejected == 2
    assert store.counters.outages == 0


async def test_random_writes_across_a_restart_end_as_applied_in_order(
    redis_server: RedisServer,
) -> None:
    """Binds, refreshes and unbinds in a seeded random order, with the server restarted
    in the middle: Redis ends with what applying them one by one gives."""
    rng = random.Random(12)
    store = make_store(redis_server, max_batch=7)
    expected: dict[str, str] = {}
    changed_since_stop: set[str] = set()
    async with running(store):
        for step in range(600):
            if step == 300:
                redis_server.stop()
            if step == 400:
                await store.wait_until_up(False)
                redis_server.start()
            call = f"call-{rng.randrange(60)}"
            action = rng.random()
            if action < 0.5:
                member = rng.choice(["m1", "m2", "m3"])
                store.bind("c1", call, member)
                expected[call] = member
                if step >= 300:
                    changed_since_stop.add(call)
            elif action < 0.7 and call in expected:
                store.refresh("c1", call, expected[call])
            else:
                store.unbind("c1", call)
                expected.pop(call, None)
                if step >= 300:
                    changed_since_stop.add(call)
            if step % 25 == 0:
                await trio.lowlevel.checkpoint()  # let the writer interleave batches
        await store.wait_until_up()
        await store.flushed()
        async with redis_client(redis_server) as client:
            stored = {}
            for key in await client.keys("rtpcluster:c1:*"):
                stored[key.split(":", 2)[2]] = await client.get(key)
    # The restarted server started empty: what was changed (bound or unbound) after the
    # stop is exactly as applied in order; older bindings may be gone with the old server
    # but are never wrong.
    assert len(changed_since_stop) > 20
    for call in changed_since_stop:
        assert stored.get(call) == expected.get(call), call
    for call, member in stored.items():
        assert expected.get(call) == member, call
    assert store.counters.writes_dropped == 0


async def test_the_documented_acl_is_enough(redis_server: RedisServer) -> None:
    """docs/high-availability.md: a Redis user with only these rights runs the store."""
    doc = (Path(__file__).parents[2] / "docs" / "high-availability.md").read_text()
    rights = "+hello +select +client|setname +ping +mget +set +del ~<prefix>:*"
    assert f"`{rights}`" in doc
    acl = rights.replace("<prefix>", "rtpcluster").split()
    redis_server.cli("ACL", "SETUSER", "rtpc", "on", ">s3cret", *acl)
    url = f"unix://rtpc:s3cret@{redis_server.socket}?db=0"
    store = open_store(url, backoff=FAST_BACKOFF)
    assert isinstance(store, RedisStore)
    store.configure("c1", 60.0)
    async with running(store), redis_client(redis_server) as client:
        store.bind("c1", "gone", "m1")
        store.bind("c1", "kept", "m2")
        await store.flushed()
        store.unbind("c1", "gone")
        await store.flushed()
        assert await store.lookup("c1", "kept") == "m2"
        assert await store.lookup("c1", "gone") is None
        assert await client.get("rtpcluster:c1:kept") == "m2"
    assert store.counters.writes_rejected == 0 and store.counters.reads_error == 0
    assert store.counters.outages == 0
