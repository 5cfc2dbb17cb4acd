"""The session-store rows of the benchmark: the Redis store against the memory store.

Three more rtpcluster processes in front of the same two members, beside the memory-store
cluster the other phases use, and a redis-server (testsupport) on a unix socket:

* ``window``: the Redis store, in its first idle timeout: every offer of a new call is
  read from the store first (see rtpcluster/cluster/store_reads.py);
* ``steady``: the Redis store once that window has closed (``session_idle_timeout`` 60 s,
  the least allowed, and its first offer sent a minute before its rows): offers are
  placed at once, as with the memory store; every bind, refresh and unbind is written;
* ``continued``: the second front end of the cross-front-end rows: each call's U goes to
  ``window``, its L, re-U and D to ``continued``, which reads the call from the store;
* ``twin``: the steady side's settings (idle timeout, HTTP endpoint, log level) with the
  memory store: the baseline of the window and steady sides.

The twin (memory), window and steady sides run alternately, round by round, at 1 and 16 in
flight: the figures of one row are side by side in time. The cross-front-end rows put a
delay between each U's reply and its L (the callee's answer; the issue allows for the
binding to be stored within 50 ms of the U's reply) and are compared with the same calls,
same delay, through the memory-store cluster alone. Broadcasts are counted from the
members' own ``ncmds_errs``: a lookup of a call a member does not hold is one of those.
The bind -> stored delay is the stores' own histogram, read from ``/metrics``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.loadgen import LoadJob, LoadResult, merge
from benchmarks.scenarios import Plan, Runner, cpu_seconds, rtp_range, summary
from testsupport import MemberEntry, RtpclusterProcess, RtpProxy, ask, cluster_xml, free_port
from testsupport.redis_server import RedisServer

LEVELS = (1, 16)
STEADY_IDLE = 60.0  # the steady side's session_idle_timeout: its offer window's length
ANSWER_DELAY = 0.02  # seconds from a U's reply to its L in the cross-front-end rows
WITHIN = 0.05  # the bind -> stored delay the issue promises under normal load
MIN_ROUNDS = 3  # alternating rounds per figure, also in a --quick run


@dataclass
class StoreFleet:
    redis: RedisServer
    window: RtpclusterProcess
    steady: RtpclusterProcess
    continued: RtpclusterProcess
    twin: RtpclusterProcess  # the steady side's settings with the memory store
    steady_from: float  # time.monotonic() once the steady side's offer window has closed
    http_ports: dict[str, int]


def start(
    work: Path, members: list[RtpProxy], redis_binary: str, started: contextlib.ExitStack
) -> StoreFleet:
    """The redis-server and the three Redis-store processes; stopped by ``started``."""
    directory = work / "redis"
    directory.mkdir()
    redis = RedisServer(redis_binary, directory)
    redis.start()
    started.callback(redis.stop)
    entries = [
        MemberEntry.of(m.name, m, weight=100, capacity=100_000, status="active") for m in members
    ]
    processes: dict[str, RtpclusterProcess] = {}
    ports: dict[str, int] = {}
    for name, settings, store in (
        ("window", {}, redis.url),
        ("steady", {"session_idle_timeout": STEADY_IDLE}, redis.url),
        ("continued", {}, redis.url),
        ("twin", {"session_idle_timeout": STEADY_IDLE}, None),
    ):
        process = RtpclusterProcess(work / f"store-{name}", free_port(), log_level="warning")
        ports[name] = free_port(socket.SOCK_STREAM)
        # One cluster name and the same member names in each: they share call affinity.
        config = cluster_xml(
            "bench",
            process.udp_port,
            entries,
            settings=settings,
            http=f"127.0.0.1:{ports[name]}",
            session_store=store,
        )
        process.start(config=config)
        started.callback(process.stop)
        processes[name] = process
    steady = processes["steady"]
    _wait_online(steady)
    # Its first offer opens its window; the steady rows begin once it has closed.
    opened = time.monotonic()
    for i in range(2):
        reply = ask(steady.udp, f"U window-opener-{i} 127.0.0.1 4000 ft{i}", 2.0)
        if reply is None or reply.startswith("E"):
            raise RuntimeError(f"the steady side did not place an offer: {reply!r}")
        ask(steady.udp, f"D window-opener-{i} ft{i}", 2.0)
    for process in processes.values():
        _wait_online(process)
    return StoreFleet(
        redis,
        processes["window"],
        steady,
        processes["continued"],
        processes["twin"],
        opened + STEADY_IDLE + 1.0,
        ports,
    )


def _wait_online(process: RtpclusterProcess, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = process.members_info("bench")
        if info and all(m["online"] for m in info.values()):
            return
        time.sleep(0.1)
    raise RuntimeError(f"members not online behind {process.workdir.name}")


def _errors(members: list[RtpProxy]) -> int:
    """The members' ncmds_errs, summed: every lookup of a call a member does not hold."""
    total = 0
    for member in members:
        reply = member.ask("G ncmds_errs", 2.0)
        total += int(reply.split()[0]) if reply else 0
    return total


def _reads(process: RtpclusterProcess) -> dict[str, int]:
    store = process.session_store()
    return {k: int(store[f"reads_{k}"]) for k in ("hit", "miss", "error")}


def measure(
    runner: Runner,
    plan: Plan,
    members: list[RtpProxy],
    memory: RtpclusterProcess,
    fleet: StoreFleet,
    log: Any,
) -> dict[str, Any]:
    ranges = tuple(rtp_range(m) for m in members)
    pids = [m.pid for m in members]
    # A --quick plan's single round of 1 s is too noisy for a 10 % comparison.
    plan = dataclasses.replace(
        plan, rounds=max(plan.rounds, MIN_ROUNDS), round_seconds=max(plan.round_seconds, 2.0)
    )
    wait = fleet.steady_from - time.monotonic()
    if wait > 0:
        log(f"  waiting {wait:.0f} s for the steady side's offer window to close")
        time.sleep(wait)
    # The baseline is the twin, not the cluster of the other phases: that one runs with
    # other settings (no HTTP endpoint, another idle timeout, another log level), so only
    # the store differs between the sides compared.
    sides = {"memory": fleet.twin, "window": fleet.window, "steady": fleet.steady}
    order = list(sides.items())
    turns = -(-plan.rounds // len(order))  # rounds rounded up to whole turns
    plan = dataclasses.replace(plan, rounds=turns * len(order))
    rows: list[dict[str, Any]] = []
    for level in LEVELS:
        acc: dict[str, list[tuple[LoadResult, dict[str, float]]]] = {s: [] for s in sides}
        reads_before = {side: _reads(sides[side]) for side in ("window", "steady")}
        for round_index in range(plan.rounds):
            # Each round starts with another side, and the rounds are a whole number of
            # turns: two quick runs put steady / memory at 0.91 with the memory side last
            # in every round and at 0.85 with it first.
            turn = round_index % len(order)
            for side, process in order[turn:] + order[:turn]:
                job = LoadJob(
                    target=process.udp,
                    in_flight=level,
                    max_calls=plan.max_calls // 4,
                    duration=plan.round_seconds,
                    ranges=ranges,
                    tag=f"s{side[0]}{level}",
                    drain=3.0,
                )
                redis_cpu = cpu_seconds(fleet.redis.pid)
                started = time.monotonic()
                result, cpu = runner.run(job, process.pid, pids)
                # redis-server shares the machine's cores with the load and the members:
                # what it takes is not there for the cluster (0 on the memory side)
                wall = time.monotonic() - started
                cpu["redis_cpu_pct"] = 100.0 * (cpu_seconds(fleet.redis.pid) - redis_cpu) / wall
                acc[side].append((result, cpu))
        row: dict[str, Any] = {"in_flight": level}
        for side, runs in acc.items():
            row[side] = _merged(runs)
        base = row["memory"]["cmds_per_s"]
        for side in ("window", "steady"):
            row[f"{side}_ratio"] = row[side]["cmds_per_s"] / base if base else None
            after = _reads(sides[side])  # the offers read: all of them, or none
            row[f"{side}_reads"] = {k: after[k] - reads_before[side][k] for k in after}
        rows.append(row)
        log(_row_line(row))

    cross: list[dict[str, Any]] = []
    for level in LEVELS:
        runs_same: list[tuple[LoadResult, dict[str, float]]] = []
        runs_cross: list[tuple[LoadResult, dict[str, float]]] = []
        broadcasts = 0
        reads_before = _reads(fleet.continued)
        for _ in range(plan.rounds):
            common: dict[str, Any] = dict(
                in_flight=level,
                max_calls=plan.max_calls // 4,
                duration=plan.round_seconds,
                ranges=ranges,
                drain=3.0,
                answer_delay=ANSWER_DELAY,
            )
            job = LoadJob(target=memory.udp, tag=f"xm{level}", **common)
            runs_same.append(runner.run(job, memory.pid, pids))
            errors = _errors(members)
            cpu_continued = cpu_seconds(fleet.continued.pid)
            started = time.monotonic()
            job = LoadJob(
                target=fleet.window.udp,
                continue_target=fleet.continued.udp,
                tag=f"xc{level}",
                **common,
            )
            result, cpu = runner.run(job, fleet.window.pid, pids)
            wall = time.monotonic() - started
            cpu["continued_cpu_pct"] = (
                100.0 * (cpu_seconds(fleet.continued.pid) - cpu_continued) / wall
            )
            runs_cross.append((result, cpu))
            broadcasts += _errors(members) - errors
        reads_after = _reads(fleet.continued)
        entry = {
            "in_flight": level,
            "answer_delay_ms": ANSWER_DELAY * 1e3,
            "same": _merged(runs_same),
            "cross": _merged(runs_cross),
            "member_lookups": broadcasts,
            "continued_reads": {k: reads_after[k] - reads_before[k] for k in reads_after},
        }
        same = entry["same"]["cmds_per_s"]
        entry["ratio"] = entry["cross"]["cmds_per_s"] / same if same else None
        cross.append(entry)
        log(_cross_line(entry))

    delay = _bind_delay([fleet.http_ports[n] for n in ("window", "steady", "continued")])
    log(
        f"  bind -> stored: {delay['count']} binds, mean {delay['mean_ms']:.2f} ms,"
        f" {delay['within_50ms']:.2%} within 50 ms (histogram bound below 50 ms:"
        f" {delay['p99_bound_ms']} ms holds 99 %)"
    )
    return {
        "levels": rows,
        "cross": cross,
        "bind_delay": delay,
        "steady_idle_s": STEADY_IDLE,
        "rounds": plan.rounds,
        "round_seconds": plan.round_seconds,
    }


def _merged(runs: list[tuple[LoadResult, dict[str, float]]]) -> dict[str, Any]:
    merged = merge([r for r, _ in runs], sequential=True)
    keys = runs[0][1].keys()
    cpu = {k: sum(c[k] for _, c in runs) / len(runs) for k in keys}
    return summary(merged, cpu)


def _bind_delay(ports: list[int]) -> dict[str, Any]:
    """The stores' bind -> stored histograms, summed over the processes, from /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    buckets: dict[float, float] = {}
    count = total = 0.0
    for port in ports:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
        for family in text_string_to_metric_families(text):
            if family.name != "rtpcluster_session_store_bind_delay_seconds":
                continue
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    bound = float(sample.labels["le"])
                    buckets[bound] = buckets.get(bound, 0.0) + sample.value
                elif sample.name.endswith("_count"):
                    count += sample.value
                elif sample.name.endswith("_sum"):
                    total += sample.value
    within = buckets.get(WITHIN, 0.0)
    p99 = next((b for b in sorted(buckets) if count and buckets[b] >= 0.99 * count), None)
    return {
        "count": int(count),
        "mean_ms": total / count * 1e3 if count else 0.0,
        "within_50ms": within / count if count else 1.0,
        "p99_bound_ms": None if p99 is None else p99 * 1e3,
        "cumulative": {f"{b * 1e3:g} ms": int(n) for b, n in sorted(buckets.items())},
    }


def _part(s: dict[str, Any]) -> str:
    p50, p99 = s["p50_ms"], s["p99_ms"]
    lat = f"p50 {p50:.3f} p99 {p99:.3f} ms" if p50 is not None else "no replies"
    errors = s["timeouts"] + sum(s["e_replies"].values()) + s["affinity_errors"]
    return f"{s['cmds_per_s']:7.0f}/s {lat} errs {errors}"


def _cpu(s: dict[str, Any]) -> str:
    return f"cpu {s.get('cluster_cpu_pct', 0):.0f}%/redis {s.get('redis_cpu_pct', 0):.0f}%"


def _row_line(row: dict[str, Any]) -> str:
    return (
        f"  {row['in_flight']:2} in flight | memory {_part(row['memory'])} {_cpu(row['memory'])}"
        f" | redis, offers read {_part(row['window'])} ({row['window_ratio']:.2f})"
        f" {_cpu(row['window'])}"
        f" | redis, steady {_part(row['steady'])} ({row['steady_ratio']:.2f})"
        f" {_cpu(row['steady'])}"
        f" | reads {row['window_reads']} / {row['steady_reads']}"
    )


def _cross_line(entry: dict[str, Any]) -> str:
    return (
        f"  cross {entry['in_flight']:2} in flight, answer after {entry['answer_delay_ms']:g} ms"
        f" | one front end (memory) {_part(entry['same'])}"
        f" | U on one, the rest on the other (redis) {_part(entry['cross'])}"
        f" ({entry['ratio']:.2f}) | member lookups {entry['member_lookups']},"
        f" reads {entry['continued_reads']}"
    )
