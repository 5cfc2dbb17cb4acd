"""``python -m benchmarks.session_store``: what the Redis session store costs.

1. The caller's side: ``bind()`` / ``refresh()`` / ``unbind()`` timed with timeit, for
   the Redis store (writes queued, nothing sent: no writer runs) and the memory store.
2. The CPU this process spends per write (the writer's pipelines included).
3. The latency of ``lookup()`` (one read) for hits and misses, and the CPU per read with
   1, 4 and 16 reads asked at once: gathered into one MGET, against one GET each.
4. The bind -> stored delay against a local redis-server on a unix socket: binds paced
   at a few rates for a few seconds each (bounded), the delay read from the store's own
   counters (the histogram the metrics will show, plus the mean and the maximum).

Everything is bounded in count and time (2-core machine shared with others); the
redis-server started here is stopped by its PID.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import timeit
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

from rtpcluster.store import DELAY_BOUNDS, open_store
from rtpcluster.store.memory import MemoryStore
from rtpcluster.store.redis import RedisStore
from testsupport.redis_server import RedisServer, redis_server_binary


def caller_costs(count: int) -> dict[str, float]:
    """Nanoseconds per call on the caller's side (timeit: the statement inlined in its loop,
    ``next(calls)`` included, about 20 ns)."""
    call_ids = [f"{n:08x}-benchmark@192.0.2.1" for n in range(count)]
    redis = RedisStore(open_store("unix:///nonexistent.sock").url, max_pending=count * 2)
    memory = MemoryStore()
    results: dict[str, float] = {}
    statements = {
        "bind (new call)": "store.bind('c1', next(calls), 'm1')",
        "refresh (written this window: skipped)": "store.refresh('c1', next(calls), 'm1')",
        "unbind (coalesced with its bind)": "store.unbind('c1', next(calls))",
    }
    for name, store in (("redis", redis), ("memory", memory)):
        store.configure("c1", 3600.0)
        for what, statement in statements.items():
            timer = timeit.Timer(statement, globals={"store": store, "calls": iter(call_ids)})
            results[f"{name} {what}"] = timer.timeit(number=count) / count * 1e9
    return results


async def delays(url: str, rate: int, seconds: float) -> dict[str, object]:
    store = open_store(url)
    assert isinstance(store, RedisStore)
    store.configure("c1", 3600.0)
    tick = 0.001  # bind in 1 ms steps: rate/1000 binds per step
    per_tick = max(1, rate // 1000)
    steps = int(seconds / tick)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        await store.wait_until_up()
        start = trio.current_time()
        for step in range(steps):
            for n in range(per_tick):
                store.bind("c1", f"{rate}-{step}-{n}", "m1")
            await trio.sleep_until(start + (step + 1) * tick)
        elapsed = trio.current_time() - start
        with trio.fail_after(10):
            await store.flushed()
        nursery.cancel_scope.cancel()
    c = store.counters
    buckets = {
        f"<= {bound * 1000:g} ms": n
        for bound, n in zip(DELAY_BOUNDS, c.bind_delay_buckets[:-1], strict=True)
    }
    buckets["> 5000 ms"] = c.bind_delay_buckets[-1]
    return {
        "binds": c.bind_delay_count,
        "binds/s achieved": round(c.bind_delay_count / elapsed),
        "batches": c.batches_written,
        "mean ms": round(c.bind_delay_sum / max(1, c.bind_delay_count) * 1000, 3),
        "max ms": round(c.bind_delay_max * 1000, 3),
        "within 50 ms": f"{sum(c.bind_delay_buckets[:6]) / max(1, c.bind_delay_count):.4%}",
        "buckets": {k: v for k, v in buckets.items() if v},
        "dropped": c.writes_dropped,
    }


async def writer_cpu(url: str, count: int) -> dict[str, object]:
    """CPU of this process per write (bind() and the writer) with binds in bursts of 10
    between checkpoints, so batches form as they do under load."""
    store = open_store(url)
    assert isinstance(store, RedisStore)
    store.configure("c1", 3600.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        await store.wait_until_up()
        started = time.process_time()
        for step in range(count // 10):
            for n in range(10):
                store.bind("c1", f"burst-{step}-{n}", "m1")
            await trio.lowlevel.checkpoint()
        with trio.fail_after(10):
            await store.flushed()
        cpu = time.process_time() - started
        nursery.cancel_scope.cancel()
    c = store.counters
    return {
        "writes": c.writes_written,
        "batches": c.batches_written,
        "CPU us per write": round(cpu / max(1, c.writes_written) * 1e6, 2),
    }


async def lookup_latency(url: str, count: int) -> dict[str, object]:
    """Microseconds per ``lookup()`` (a GET on the writer's connection), hits and misses."""
    store = open_store(url)
    assert isinstance(store, RedisStore)
    store.configure("c1", 3600.0)
    hits: list[float] = []
    misses: list[float] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        await store.wait_until_up()
        for n in range(count):
            store.bind("c1", f"known-{n}", "m1")
        await store.flushed()
        for n in range(count):
            for call_id, samples in ((f"known-{n}", hits), (f"unknown-{n}", misses)):
                started = time.perf_counter()
                await store.lookup("c1", call_id)
                samples.append((time.perf_counter() - started) * 1e6)
        nursery.cancel_scope.cancel()
    c = store.counters
    summary: dict[str, object] = {"hit": c.reads_hit, "miss": c.reads_miss, "error": c.reads_error}
    for name, samples in (("hit", hits), ("miss", misses)):
        samples.sort()
        summary[f"{name} p50 us"] = round(samples[len(samples) // 2])
        summary[f"{name} p99 us"] = round(samples[len(samples) * 99 // 100])
    return summary


async def lookup_cpu(url: str, rounds: int, together: int) -> dict[str, object]:
    """CPU of this process per read with ``together`` reads asked at once, ``rounds``
    times: through ``lookup()`` (keys gathered into one MGET) and, side by side on the
    same connection, one typed GET per read (what a lookup cost before it was gathered)."""
    store = open_store(url)
    assert isinstance(store, RedisStore)
    store.configure("c1", 3600.0)
    cpu: dict[str, float] = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        await store.wait_until_up()
        client = store._client  # the writer's connection, as the lookups use it
        assert client is not None
        keys = [f"rtpcluster:c1:cpu-{n}" for n in range(together)]

        async def one_round(read: Callable[[int], Awaitable[object]]) -> None:
            async with trio.open_nursery() as reads:
                for n in range(together):
                    reads.start_soon(read, n)

        async def gathered(n: int) -> object:
            return await store.lookup("c1", f"cpu-{n}")

        async def one_get(n: int) -> object:
            return await client.get(keys[n])

        for name, read in (("lookup (MGET)", gathered), ("GET each", one_get)):
            for _ in range(rounds // 10):  # warm up
                await one_round(read)
            started = time.process_time()
            for _ in range(rounds):
                await one_round(read)
            cpu[name] = (time.process_time() - started) / (rounds * together) * 1e6
        nursery.cancel_scope.cancel()
    out: dict[str, object] = {f"CPU us per read, {k}": round(v, 1) for k, v in cpu.items()}
    out["ratio"] = round(cpu["lookup (MGET)"] / cpu["GET each"], 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="1000,3000,10000", help="binds per second")
    parser.add_argument("--seconds", type=float, default=3.0, help="per rate (max 10)")
    parser.add_argument("--calls", type=int, default=200_000, help="timeit calls")
    args = parser.parse_args()
    seconds = min(args.seconds, 10.0)
    for name, ns in caller_costs(min(args.calls, 1_000_000)).items():
        print(f"{name:48} {ns:8.0f} ns")
    with tempfile.TemporaryDirectory(prefix="rtpc-bench-redis-") as directory:
        server = RedisServer(redis_server_binary(), Path(directory))
        server.start()
        try:
            print("writer CPU:", trio.run(writer_cpu, server.url, 50_000))
            print("lookups:", trio.run(lookup_latency, server.url, 2000))
            for together in (1, 4, 16):
                print(f"{together} reads at once:", trio.run(lookup_cpu, server.url, 500, together))
            for rate in (int(r) for r in args.rates.split(",")):
                print(
                    f"rate {rate}/s for {seconds} s:", trio.run(delays, server.url, rate, seconds)
                )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
