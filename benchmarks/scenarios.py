"""The measured phases of a run; each returns plain dicts that go into ``latest.json``.

* :func:`side_by_side`: the same load against one RTPproxy directly and through the
  cluster, alternating round by round, for each transport and in-flight level.
* :func:`live_sessions`: latency through the cluster while N sessions stay open.
* :func:`failover`: SIGKILL or SIGSTOP a member under load, bring it back, and time what
  the cluster does about it, from the replies the load generator sees.
* :func:`scraped`: the same load through the cluster without and with ``--http`` while
  a real Prometheus scrapes ``/metrics`` every second, alternating round by round.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import time
from dataclasses import dataclass
from typing import Any

from benchmarks.loadgen import (
    UNKNOWN,
    LoadJob,
    LoadPool,
    LoadResult,
    MemberRange,
    merge,
    split_jobs,
)
from testsupport import RtpclusterProcess, RtpProxy
from testsupport.prometheus import PrometheusServer

#: A new call's U slower than this during a fault counts as one the cluster still tried
#: on the faulty member (it waited for it, then answered or failed over).
SLOW_U = 0.25

#: Failover load: new calls per second, started on time whatever the earlier ones are
#: doing (open loop), so that a stalled member cannot starve the probe of new calls.
FAILOVER_RATE = 100.0
FAILOVER_SLOTS = 512


@dataclass(frozen=True)
class Plan:
    """How long and how hard each phase runs (``--quick`` or full)."""

    quick: bool
    levels: tuple[int, ...] = (1, 16, 64)
    unix_levels: tuple[int, ...] = (1, 4)
    rounds: int = 4
    round_seconds: float = 5.0
    max_calls: int = 200_000  # per round, over all load processes
    live_levels: tuple[int, ...] = (0, 1_000, 10_000)
    live_seconds: float = 4.0
    scale_sizes: tuple[int, ...] = (0, 10_000, 100_000, 1_000_000)
    memory_at: int = 1_000_000
    failover_modes: tuple[str, ...] = ("kill", "stop")
    failover_before: float = 2.0
    failover_down: float = 5.0
    failover_after: float = 6.0
    scraped_levels: tuple[int, ...] = (1, 16)
    scrape_interval: float = 1.0  # seconds between Prometheus scrapes of /metrics

    @classmethod
    def make(cls, quick: bool) -> Plan:
        if not quick:
            return cls(quick=False)
        return cls(
            quick=True,
            rounds=1,
            round_seconds=1.0,
            max_calls=50_000,
            live_levels=(0, 1_000),
            live_seconds=1.0,
            scale_sizes=(0, 10_000, 100_000),
            memory_at=100_000,
            failover_modes=("stop",),
            failover_before=1.0,
            failover_down=3.0,
            failover_after=4.0,
        )


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3


def summary(r: LoadResult, cpu: dict[str, float] | None = None) -> dict[str, Any]:
    """The JSON form of a load result (latencies reduced to percentiles)."""
    out: dict[str, Any] = {
        "commands": r.commands,
        "seconds": round(r.window, 3),
        "cmds_per_s": round(r.rate, 1),  # successful commands only
        "replies": r.replies,
        "p50_ms": ms(r.percentile(50)),
        "p99_ms": ms(r.percentile(99)),
        "max_ms": ms(max(r.latencies)) if r.latencies else None,
        "sent": r.sent,
        "retransmits": r.retransmits,
        "timeouts": r.timeouts,
        "e_replies": dict(r.e_replies),
        "affinity_errors": r.affinity_errors,
        "calls_done": r.calls_done,
        "calls_failed": r.calls_failed,
        "abandoned": r.abandoned,
        "late_replies": r.late_replies,
        "placements": dict(r.placements),
    }
    if cpu:
        out.update({k: round(v, 1) for k, v in cpu.items()})
    return out


def rtp_range(proxy: RtpProxy) -> MemberRange:
    """The proxy's RTP ports, by which the load generator tells who served a call."""
    return MemberRange(proxy.name, proxy.port_min, proxy.port_max)


def cpu_seconds(pid: int | None) -> float:
    """CPU time (user + system) a process has used so far; 0.0 if it is gone."""
    import psutil  # type: ignore[import-untyped,unused-ignore]  # only the run needs it

    if pid is None:
        return 0.0
    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return float(t.user + t.system)


class Runner:
    """Runs load jobs on the pool and measures the CPU of the processes involved."""

    def __init__(self, pool: LoadPool) -> None:
        self.pool = pool
        self.seq = 0

    def tag(self, prefix: str) -> str:
        self.seq += 1
        return f"{prefix}{self.seq}r{time.monotonic_ns() % 1_000_000_007:x}"

    def run(
        self, job: LoadJob, cluster_pid: int | None, member_pids: list[int | None]
    ) -> tuple[LoadResult, dict[str, float]]:
        start_at = time.monotonic() + 0.2
        job = dataclasses.replace(job, start_at=start_at, tag=self.tag(job.tag))
        self.pool.submit(split_jobs(self.pool.size, job))
        time.sleep(max(start_at - time.monotonic(), 0.0))
        c0 = cpu_seconds(cluster_pid)
        m0 = sum(cpu_seconds(p) for p in member_pids)
        bound = job.duration + job.drain + sum(job.waits) + 30.0
        result = merge(self.pool.collect(bound))
        wall = max(time.monotonic() - start_at, 1e-9)
        cpu = {
            "loadgen_cpu_pct": 100.0 * result.cpu / wall,
            "members_cpu_pct": 100.0 * (sum(cpu_seconds(p) for p in member_pids) - m0) / wall,
        }
        if cluster_pid is not None:
            cpu["cluster_cpu_pct"] = 100.0 * (cpu_seconds(cluster_pid) - c0) / wall
        return result, cpu


def _ensure(member: RtpProxy) -> bool:
    """Restart ``member`` if it stopped answering (returns True if it had to)."""
    if member.ask("V", 0.5) == "20040107\n":
        return False
    member.stop()
    member.start()
    return True


def side_by_side(
    runner: Runner,
    plan: Plan,
    direct: RtpProxy,
    members: list[RtpProxy],
    cluster: RtpclusterProcess | None,
    log: Any,
) -> list[dict[str, Any]]:
    """Direct, cluster, direct, cluster ... per transport and level."""
    rows: list[dict[str, Any]] = []
    cases = [("udp", lvl) for lvl in plan.levels] + [("unix", lvl) for lvl in plan.unix_levels]
    for transport, level in cases:
        acc: dict[str, list[tuple[LoadResult, dict[str, float]]]] = {"direct": [], "cluster": []}
        notes: list[str] = []
        for _ in range(plan.rounds):
            for side in ("direct", "cluster"):
                if side == "cluster" and cluster is None:
                    continue
                if side == "direct":
                    target = direct.control_of(transport)
                    ranges: tuple[MemberRange, ...] = (rtp_range(direct),)
                    pids: tuple[int | None, list[int | None]] = (None, [direct.pid])
                else:
                    assert cluster is not None
                    target = cluster.udp if transport == "udp" else cluster.unix
                    ranges = tuple(rtp_range(m) for m in members)
                    pids = (cluster.pid, [m.pid for m in members])
                if target is None:
                    continue
                job = LoadJob(
                    target=target,
                    in_flight=level,
                    max_calls=plan.max_calls // 4,
                    duration=plan.round_seconds,
                    ranges=ranges,
                    tag=f"{side[0]}{transport[0]}{level}",
                    drain=3.0,
                )
                acc[side].append(runner.run(job, *pids))
                if side == "direct" and _ensure(direct):
                    notes.append("the direct RTPproxy stopped answering and was restarted")
        row: dict[str, Any] = {"transport": transport, "in_flight": level, "notes": notes}
        for side, runs in acc.items():
            row[side] = _rounds_summary(runs)
        d, c = row["direct"], row["cluster"]
        row["ratio"] = (
            c["cmds_per_s"] / d["cmds_per_s"] if d and c and d["cmds_per_s"] > 0 else None
        )
        rows.append(row)
        log(_row_line(row))
    return rows


def _rounds_summary(runs: list[tuple[LoadResult, dict[str, float]]]) -> dict[str, Any] | None:
    """The rounds of one side merged: their load results, their CPU figures averaged."""
    if not runs:
        return None
    merged = merge([r for r, _ in runs], sequential=True)
    cpu_keys = runs[0][1].keys()
    cpu = {k: sum(c[k] for _, c in runs) / len(runs) for k in cpu_keys}
    return summary(merged, cpu)


def _row_line(row: dict[str, Any]) -> str:
    def part(s: dict[str, Any] | None) -> str:
        if not s:
            return "-"
        p50, p99 = s["p50_ms"], s["p99_ms"]
        lat = f"p50 {p50:.3f} p99 {p99:.3f} ms" if p50 is not None else "no replies"
        errs = s["timeouts"] + sum(s["e_replies"].values()) + s["affinity_errors"]
        return f"{s['cmds_per_s']:8.0f}/s {lat} rtx {s['retransmits']} errs {errs}"

    ratio = f"{row['ratio']:.2f}" if row["ratio"] is not None else "-"
    cpu = row["cluster"]["cluster_cpu_pct"] if row["cluster"] else None
    cpu_s = f" cluster cpu {cpu:.0f}%" if cpu is not None else ""
    return (
        f"  {row['transport']:4} {row['in_flight']:3} in flight | direct {part(row['direct'])}"
        f" | cluster {part(row['cluster'])} | ratio {ratio}{cpu_s}"
    )


def live_capacity(members: list[RtpProxy]) -> int:
    """How many offer-only sessions the members can hold (2 sockets and 2 ports each)."""
    per_member = []
    for m in members:
        by_files = (m.nofile - 200) // 2 if m.nofile else 0
        by_ports = int((m.port_max - m.port_min) // 2 * 0.8)
        per_member.append(min(by_files, by_ports))
    # the balancer spreads calls randomly: leave 10 % headroom on the smaller member
    return int(min(per_member) * len(members) * 0.9)


def live_sessions(
    runner: Runner,
    plan: Plan,
    members: list[RtpProxy],
    cluster: RtpclusterProcess,
    log: Any,
) -> dict[str, Any]:
    """Open sessions (offers only) through the cluster; measure 1-in-flight calls."""
    cap = live_capacity(members)
    levels = sorted({min(lvl, cap) for lvl in plan.live_levels})
    ranges = tuple(rtp_range(m) for m in members)
    pids = [m.pid for m in members]
    rows: list[dict[str, Any]] = []
    opened = 0
    for level in levels:
        pad: dict[str, Any] | None = None
        if level > opened:
            job = LoadJob(
                target=cluster.udp,
                in_flight=16,
                max_calls=level - opened,
                duration=120.0,
                ranges=ranges,
                tag="pad",
                mode="offers",
                drain=5.0,
            )
            res, _ = runner.run(job, cluster.pid, pids)
            opened += res.calls_done
            pad = {"opened": res.calls_done, "failed": res.calls_failed}
        row: dict[str, Any] = {"sessions": opened, "padding": pad}
        for side in ("cluster", "member"):
            target = cluster.udp if side == "cluster" else members[0].control
            job = LoadJob(
                target=target,
                in_flight=1,
                max_calls=plan.max_calls // 4,
                duration=plan.live_seconds,
                ranges=ranges if side == "cluster" else (rtp_range(members[0]),),
                tag=f"live{side[0]}",
                drain=3.0,
            )
            res, cpu = runner.run(job, cluster.pid, pids)
            row[side] = summary(res, cpu)
        rows.append(row)
        c, m = row["cluster"], row["member"]
        log(
            f"  {opened:6} live sessions | cluster p50 {c['p50_ms']:.3f} p99 {c['p99_ms']:.3f} ms"
            f" | member {members[0].name} direct p50 {m['p50_ms']:.3f} ms"
        )
    for m in members:  # free the members' sockets for what comes next
        m.ask("X", 2.0)
    nofile = min((m.nofile for m in members), default=0)
    return {"capacity": cap, "member_nofile": nofile, "levels": rows}


def failover(
    runner: Runner,
    plan: Plan,
    mode: str,
    members: list[RtpProxy],
    cluster: RtpclusterProcess,
    log: Any,
) -> dict[str, Any]:
    """Kill (SIGKILL) or hang (SIGSTOP) the last member under a steady call load."""
    victim = members[-1]
    ranges = tuple(rtp_range(m) for m in members)
    total = plan.failover_before + plan.failover_down + plan.failover_after + 2.0
    start_at = time.monotonic() + 0.3
    job = LoadJob(
        target=cluster.udp,
        in_flight=FAILOVER_SLOTS,
        max_calls=10**7,
        duration=total,
        ranges=ranges,
        tag=runner.tag(f"fo{mode}"),
        start_at=start_at,
        arrival_rate=FAILOVER_RATE,
        drain=5.0,
        record_events=True,
    )
    runner.pool.submit(split_jobs(runner.pool.size, job))
    result: LoadResult | None = None
    t_fault = t_back = t_restart = 0.0
    try:
        time.sleep(max(start_at + plan.failover_before - time.monotonic(), 0.0))
        t_fault = time.monotonic()
        if mode == "kill":
            victim.kill()
        else:
            victim.signal(signal.SIGSTOP)
        time.sleep(plan.failover_down)
        t_restart = time.monotonic()
        if mode == "kill":
            victim.start()  # returns once it answers V
        else:
            victim.signal(signal.SIGCONT)
        t_back = time.monotonic()
    finally:
        if mode == "stop":
            victim.signal(signal.SIGCONT)
        result = merge(runner.pool.collect(total + job.drain + 30.0))
    out = analyse_failover(result, victim.name, t_fault, t_back)
    out["restart_s"] = round(t_back - t_restart, 3)
    out["down_s"] = plan.failover_down
    out["mode"] = mode
    det, rec = out["no_new_calls_after_s"], out["takes_calls_after_s"]
    log(
        f"  {mode:4}: no new calls on {victim.name} after {_s(det)}, "
        f"takes calls {_s(rec)} after its return; failed on healthy members: "
        f"{out['failed_on_healthy']}, new calls failed: {out['new_calls_failed']}"
    )
    with contextlib.suppress(Exception):
        _ensure(victim)
    return out


def _s(v: float | None) -> str:
    return "never" if v is None else f"{v:.2f} s"


def analyse_failover(r: LoadResult, victim: str, t_fault: float, t_back: float) -> dict[str, Any]:
    """From the U events: when the cluster stopped trying the faulty member, when it
    started placing calls on it again, and what failed on the healthy members."""
    during = [e for e in r.events if t_fault <= e[0] < t_back]
    affected = [e for e in during if not e[2] or e[1] == victim or e[3] > SLOW_U]
    detect = (max(e[0] for e in affected) - t_fault) if affected else 0.0
    back_on = [e[0] for e in r.events if e[0] >= t_back and e[2] and e[1] == victim]
    recover = (min(back_on) - t_back) if back_on else None
    healthy = sum(n for owner, n in r.failures_by_owner.items() if owner not in (victim, UNKNOWN))
    return {
        "no_new_calls_after_s": round(detect, 3),
        "takes_calls_after_s": None if recover is None else round(recover, 3),
        "failed_on_healthy": healthy,
        "failed_on_victim": r.failures_by_owner.get(victim, 0),
        "new_calls_failed": r.failures_by_owner.get(UNKNOWN, 0),
        "new_calls_affected": len(affected),
        "new_calls_during_fault": len(during),
        "load": summary(r),
    }


def scraped(
    runner: Runner,
    plan: Plan,
    members: list[RtpProxy],
    plain: RtpclusterProcess,
    observed: RtpclusterProcess,
    prometheus: PrometheusServer,
    log: Any,
) -> dict[str, Any]:
    """udp calls through ``plain`` (no ``--http``) and ``observed`` (``--http``, scraped by
    ``prometheus`` every ``plan.scrape_interval`` s), alternating round by round.

    Both clusters run the whole time over the same members; only the one under load is
    sent calls. What Prometheus saw of its scrapes (how many, whether every one worked,
    how long one took) goes with the figures, so the row shows that it really scraped.
    """
    ranges = tuple(rtp_range(m) for m in members)
    pids: list[int | None] = [m.pid for m in members]
    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    for level in plan.scraped_levels:
        acc: dict[str, list[tuple[LoadResult, dict[str, float]]]] = {"plain": [], "scraped": []}
        for _ in range(plan.rounds):
            for side, cluster in (("plain", plain), ("scraped", observed)):
                job = LoadJob(
                    target=cluster.udp,
                    in_flight=level,
                    max_calls=plan.max_calls // 4,
                    duration=plan.round_seconds,
                    ranges=ranges,
                    tag=f"s{side[0]}{level}",
                    drain=3.0,
                )
                acc[side].append(runner.run(job, cluster.pid, pids))
        row: dict[str, Any] = {"in_flight": level}
        for side, runs in acc.items():
            row[side] = _rounds_summary(runs)
        p, o = row["plain"], row["scraped"]
        row["ratio"] = o["cmds_per_s"] / p["cmds_per_s"] if p and o and p["cmds_per_s"] else None
        rows.append(row)
        log(_scraped_line(row))
    window = f"{int(time.monotonic() - started) + 2}s"
    target = f'job="{prometheus.job}"'
    scrapes = {
        "count": _one_value(prometheus, f"count_over_time(up{{{target}}}[{window}])"),
        "failed": _one_value(prometheus, f"count_over_time((up{{{target}}} == 0)[{window}:])"),
        "mean_duration_ms": ms(
            _one_value(prometheus, f"avg_over_time(scrape_duration_seconds{{{target}}}[{window}])")
        ),
        "max_duration_ms": ms(
            _one_value(prometheus, f"max_over_time(scrape_duration_seconds{{{target}}}[{window}])")
        ),
        "samples": _one_value(prometheus, f"scrape_samples_scraped{{{target}}}"),
    }
    log(
        f"  Prometheus: {scrapes['count'] or 0:.0f} scrapes of /metrics in {window},"
        f" {scrapes['failed'] or 0:.0f} failed, mean {_ms(scrapes['mean_duration_ms'])},"
        f" max {_ms(scrapes['max_duration_ms'])}"
    )
    return {"scrape_interval": plan.scrape_interval, "scrapes": scrapes, "rows": rows}


def _one_value(prometheus: PrometheusServer, expr: str) -> float | None:
    """The value of a query with one series in its result (None when it has none)."""
    result = prometheus.query(expr)
    return float(result[0]["value"][1]) if result else None


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def _scraped_line(row: dict[str, Any]) -> str:
    def part(s: dict[str, Any] | None) -> str:
        if not s or s["p50_ms"] is None:
            return "-"
        return f"{s['cmds_per_s']:8.0f}/s p50 {s['p50_ms']:.3f} p99 {s['p99_ms']:.3f} ms"

    ratio = f"{row['ratio']:.2f}" if row["ratio"] is not None else "-"
    return (
        f"  udp {row['in_flight']:3} in flight | without --http {part(row['plain'])}"
        f" | with --http, scraped {part(row['scraped'])} | ratio {ratio}"
    )
