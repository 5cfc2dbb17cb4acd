"""Session-table scale: lookup cost at 0 / 10k / 100k / 1M calls and bytes per tracked call.

Runs in a child process of its own (:func:`measure_in_child`) so that a million call-ids
neither inflate the orchestrator nor get counted by anything else's allocations.

Call-ids are 36 characters (UUID-shaped, like many SIP stacks generate), taken from a
parsed ``U`` inside the traced region, as the Router binds them: the table has to keep
each key, so its string is part of what tracking one call costs. The figure without the
key strings is reported too. Bytes per tracked call are measured twice: right after the
binds (one generation) and after an ageing with half of the calls used again, so that
both generations hold calls (and their per-member counts). Then every call ends (the
unbind of a confirmed ``D``) and what the table still holds is reported: dicts keep
their size when entries leave, until the upkeep compacts them.
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import random
import sys
import time
import tracemalloc
from typing import Any

LOOKUPS = 100_000


def call_id(i: int) -> str:
    return f"{i:08x}-4b2e-4f1a-9c7e-{(i * 2654435761) % (1 << 48):012x}"


def _lookup_ns(get: Any, keys: list[str], repeat: int = 5) -> float:
    """Best of ``repeat`` passes over ``keys``: nanoseconds per ``get`` call."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        for k in keys:
            get(k)
        best = min(best, (time.perf_counter_ns() - t0) / len(keys))
    return best


def _loop_ns(keys: list[str], repeat: int = 5) -> float:
    """Cost of the bare loop (with a trivial call) to subtract from the lookup figure."""

    def noop(_: str) -> None:
        return None

    return _lookup_ns(noop, keys, repeat)


def measure(sizes: tuple[int, ...], memory_at: int) -> dict[str, Any]:
    from rtpcluster.cluster.sessions import SessionTable

    members = [object(), object()]
    rng = random.Random(7)
    out: dict[str, Any] = {"sizes": list(sizes), "lookup_hit_ns": {}, "lookup_miss_ns": {}}

    # lookup cost as the table grows (no tracing: tracemalloc would dominate)
    table: SessionTable[object] = SessionTable(idle_timeout=3600.0, max_entries=2 * max(sizes) + 2)
    filled = 0
    absent = [call_id(10_000_000 + i) for i in range(LOOKUPS)]
    out["loop_ns"] = _loop_ns(absent)
    for size in sorted(sizes):
        while filled < size:
            table.bind(call_id(filled), members[filled & 1])
            filled += 1
        assert len(table) == size
        gc.collect()
        miss = _lookup_ns(table.get, absent)
        if size:
            sample = [call_id(rng.randrange(size)) for _ in range(LOOKUPS)]
            hit = _lookup_ns(table.get, sample)
        else:
            hit = miss  # an empty table: every lookup is the miss a new call makes
        out["lookup_hit_ns"][str(size)] = hit
        out["lookup_miss_ns"][str(size)] = miss
    del table
    gc.collect()

    # memory per tracked call at ``memory_at`` calls
    from rtpcluster.protocol import parse_command

    offers = [f"U {call_id(i)} 192.0.2.1 5000 ftag".encode() for i in range(memory_at)]
    gc.collect()
    tracemalloc.start()
    table2: SessionTable[object] = SessionTable(idle_timeout=3600.0, max_entries=2 * memory_at + 2)
    base, _ = tracemalloc.get_traced_memory()
    t0 = time.perf_counter()
    for i, offer in enumerate(offers):
        cid = parse_command(offer).call_id
        assert cid is not None
        table2.bind(cid, members[i & 1])
    bind_s = time.perf_counter() - t0
    used, _ = tracemalloc.get_traced_memory()
    table2.rotate()
    for i in range(0, memory_at, 2):
        table2.get(call_id(i))  # used again: back in the young generation
    assert len(table2) == memory_at
    used_two, _ = tracemalloc.get_traced_memory()
    for i in range(memory_at):
        table2.unbind(call_id(i))
    assert len(table2) == 0
    ended, _ = tracemalloc.get_traced_memory()
    table2.compact()  # what the cluster's upkeep does every second
    compacted, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    key_bytes = sys.getsizeof(call_id(0))
    per_call = (used - base) / memory_at
    out["memory_at"] = memory_at
    out["bytes_per_session"] = per_call
    out["bytes_per_session_without_key"] = per_call - key_bytes
    out["bytes_per_session_two_generations"] = (used_two - base) / memory_at
    out["bytes_held_after_end"] = ended - base
    out["bytes_held_after_compact"] = compacted - base
    out["key_bytes"] = key_bytes
    out["bind_us_traced"] = bind_s / memory_at * 1e6
    return out


def _child(conn: Any, sizes: tuple[int, ...], memory_at: int) -> None:
    try:
        conn.send(("ok", measure(sizes, memory_at)))
    except Exception as exc:  # reported, not raised: the run goes on without this phase
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    conn.close()


def measure_in_child(sizes: tuple[int, ...], memory_at: int, timeout: float = 300.0) -> Any:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_child, args=(child, sizes, memory_at), daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(timeout):
            return {"error": "timed out"}
        status, value = parent.recv()
    except EOFError:
        return {"error": "scale process died"}
    finally:
        proc.join(5.0)
        if proc.is_alive():
            proc.kill()
            proc.join(5.0)
    return value if status == "ok" else {"error": value}
