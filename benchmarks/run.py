"""``python -m benchmarks.run [--quick]``: the whole benchmark, bounded in time.

Starts one RTPproxy for direct runs and two cluster members (rtp-io, a subprocess each,
disjoint RTP port ranges), the cluster (``python -m rtpcluster serve --foreground``),
for the scraped phase a second cluster with ``--http`` over the same members and a
Prometheus scraping it, and load processes; runs the phases; writes
``benchmarks/results/latest.json``, ``latest.png`` and ``docs/performance.md``.
Everything started is stopped by PID at the end, also on errors. If the cluster cannot
be started the direct figures are still taken and the report says why the cluster ones
are missing.

The ``store`` phase (benchmarks/shared_store.py) needs a redis-server: three more
rtpcluster processes with the Redis store are started at the beginning, so that the
steady side's offer window has closed by the time its rows run (``--phases store`` alone
waits for that, about a minute).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import socket
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks import report, scale, scenarios, shared_store
from benchmarks.loadgen import LoadPool, MemberRange
from testsupport import (
    MemberEntry,
    RtpclusterProcess,
    RtpProxy,
    cluster_xml,
    free_port,
    wait_until,
)
from testsupport.prometheus import PrometheusServer, find_prometheus

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DOCS = HERE.parent / "docs" / "performance.md"

# RTP port ranges: below the kernel's ephemeral range, clear of 30000-30999 (tests)
DIRECT_RTP = MemberRange("direct", 31000, 32499)
MEMBER_RTP = (MemberRange("m1", 2000, 15999), MemberRange("m2", 16000, 29999))
# RTPproxy's session timeout (-T) and set-up timeout (-W): the live-sessions phase holds
# offers open for its whole length, so far above any phase (RTPproxy's default is 60 s).
SESSION_TTL = 600
PHASES = report.ALL_PHASES


def log(msg: str) -> None:
    print(msg, flush=True)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="short run (well under a minute)")
    ap.add_argument("--load-procs", type=int, default=2, help="load generator processes")
    ap.add_argument("--no-cluster", action="store_true", help="direct RTPproxy figures only")
    ap.add_argument("--skip-failover", action="store_true")
    ap.add_argument("--skip-scale", action="store_true")
    ap.add_argument(
        "--phases",
        default=",".join(PHASES),
        help=f"comma-separated phases to run (default: all of {','.join(PHASES)});"
        " a partial run's report says which ran",
    )
    ap.add_argument("--results", type=Path, default=RESULTS, help="directory for json/png")
    ap.add_argument("--docs", type=Path, default=DOCS, help="markdown file to generate")
    ap.add_argument(
        "--render-only", action="store_true", help="rebuild the markdown and plot from the json"
    )
    args = ap.parse_args(argv)
    json_path = args.results / "latest.json"
    png_path = args.results / "latest.png"

    if args.render_only:
        results = json.loads(json_path.read_text())
        results["targets"] = report.evaluate(results)  # derived: follow the current rules
        _write(results, json_path, png_path, args.docs)
        return 0

    phases = [phase.strip() for phase in args.phases.split(",") if phase.strip()]
    unknown = sorted(set(phases) - set(PHASES))
    if unknown:
        ap.error(f"--phases: unknown {', '.join(unknown)} (known: {', '.join(PHASES)})")
    if args.skip_failover:
        phases = [phase for phase in phases if phase != "failover"]
    if args.skip_scale:
        phases = [phase for phase in phases if phase != "scale"]
    plan = scenarios.Plan.make(args.quick)
    t0 = time.monotonic()
    results = {
        "meta": {
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "cores": os.cpu_count(),
            "platform": f"{platform.system()} {platform.machine()}",
            "python": platform.python_version(),
            "rtp_io": _version("rtp.io"),
            "rtpcluster": _version("rtpcluster"),
            "quick": plan.quick,
            "load_procs": args.load_procs,
            "rounds": plan.rounds,
            "round_seconds": plan.round_seconds,
            "cluster_status": "not started",
            "phases": phases,
            "notes": [],
        }
    }
    meta = results["meta"]
    log(
        f"rtpcluster benchmark ({'quick' if plan.quick else 'full'}), {meta['cores']} cores,"
        f" {args.load_procs} load processes"
    )
    # Every process started is stopped by its PID when this block ends, also on errors.
    with (
        tempfile.TemporaryDirectory(prefix="rtpcluster-bench-") as tmp,
        contextlib.ExitStack() as started,
    ):
        work = Path(tmp)
        direct = _rtpproxy(DIRECT_RTP, work, unix=work / "direct.sock")
        members = [_rtpproxy(r, work) for r in MEMBER_RTP]
        for m in (direct, *members):
            started.callback(m.stop)
            m.start()
        cluster: RtpclusterProcess | None = None
        if args.no_cluster:
            meta["cluster_status"] = "skipped (--no-cluster)"
        else:
            cluster = _start_cluster(work, members, started, meta)
        observed = None
        if cluster is not None and "scraped" in phases:
            observed = _start_observed(work, members, plan, started, results)
        fleet = None
        if cluster is not None and "store" in phases:
            fleet = _start_store_fleet(work, members, started, results)
        pool = LoadPool(args.load_procs)
        runner = scenarios.Runner(pool)
        try:
            if "side_by_side" in phases:
                log("side by side (alternating direct / cluster):")
                results["side_by_side"] = scenarios.side_by_side(
                    runner, plan, direct, members, cluster, log
                )
            if cluster is not None and "live" in phases:
                log("live sessions:")
                results["live_sessions"] = scenarios.live_sessions(
                    runner, plan, members, cluster, log
                )
            if cluster is not None and observed is not None:
                log(f"with --http, scraped every {plan.scrape_interval:g} s (alternating):")
                results["scraped"] = scenarios.scraped(
                    runner, plan, members, cluster, *observed, log
                )
            if cluster is not None and "failover" in phases:
                log("failover:")
                results["failover"] = {
                    mode: scenarios.failover(runner, plan, mode, members, cluster, log)
                    for mode in plan.failover_modes
                }
            if cluster is not None and fleet is not None:
                log("session store (alternating memory / redis):")
                results["session_store"] = shared_store.measure(
                    runner, plan, members, cluster, fleet, log
                )
        finally:
            pool.close()
    if "scale" in phases:
        log("session table:")
        results["scale"] = scale.measure_in_child(plan.scale_sizes, plan.memory_at)
        _log_scale(results["scale"])
    results["targets"] = report.evaluate(results)
    meta["elapsed_s"] = round(time.monotonic() - t0, 1)
    log("targets:")
    for t in results["targets"]:
        v = t["value"]
        shown = "-" if v is None else f"{v:.3g} {t['unit']}"
        log(f"  [{report._verdict(t['pass']):^12}] {t['text']}: {shown}")
    _write(results, json_path, png_path, args.docs)
    log(f"wrote {_rel(json_path)}, {_rel(png_path)}, {_rel(args.docs)} in {meta['elapsed_s']} s")
    return 0


def _rtpproxy(rtp: MemberRange, work: Path, unix: Path | None = None) -> RtpProxy:
    """A member (or the direct RTPproxy) on a free udp port, its RTP ports ``rtp``."""
    return RtpProxy(
        control=f"udp:127.0.0.1:{free_port()}",
        port_min=rtp.lo,
        port_max=rtp.hi,
        extra=["-T", str(SESSION_TTL), "-W", str(SESSION_TTL)],
        name=rtp.name,
        workdir=work,
        more_controls=[] if unix is None else [f"unix:{unix}"],
    )


def _start_cluster(
    work: Path, members: list[RtpProxy], started: contextlib.ExitStack, meta: dict[str, Any]
) -> RtpclusterProcess | None:
    """Start the cluster with a udp and a unix control socket (udp only as a fallback)."""
    entries = [
        MemberEntry.of(m.name, m, weight=100, capacity=100_000, status="active") for m in members
    ]
    errors = []
    for unix in (work / "cluster.sock", None):
        cluster = RtpclusterProcess(work, free_port(), unix_path=unix, log_level="warning")
        listen = [] if cluster.unix is None else [cluster.unix]
        try:
            cluster.start(config=cluster_xml("bench", cluster.udp_port, entries, listen=listen))
        except RuntimeError as exc:
            errors.append(_short(str(exc), work))
            continue
        started.callback(cluster.stop)
        meta["cluster_status"] = "ok"
        if unix is None:
            meta["notes"].append(f"cluster unix: listener unavailable: {errors[0]}")
        return cluster
    meta["cluster_status"] = f"could not start: {errors[-1]}"
    log(f"cluster: {meta['cluster_status']}")
    return None


def _start_observed(
    work: Path,
    members: list[RtpProxy],
    plan: scenarios.Plan,
    started: contextlib.ExitStack,
    results: dict[str, Any],
) -> tuple[RtpclusterProcess, PrometheusServer] | None:
    """A second cluster over the same members with ``--http``, and Prometheus scraping it.

    Where either cannot start, ``results["scraped"]`` says why and None is returned.
    """
    binary = find_prometheus()
    if binary is None:
        results["scraped"] = {
            "error": "prometheus is not installed (Debian package prometheus;"
            " .ci/install-observe-deps installs it)"
        }
        log(f"scraped: not measured: {results['scraped']['error']}")
        return None
    entries = [
        MemberEntry.of(m.name, m, weight=100, capacity=100_000, status="active") for m in members
    ]
    http_port = free_port(socket.SOCK_STREAM)
    observed = RtpclusterProcess(work / "observed", free_port(), log_level="warning")
    try:
        observed.start(
            "--http",
            f"127.0.0.1:{http_port}",
            config=cluster_xml("bench", observed.udp_port, entries),
        )
    except RuntimeError as exc:
        results["scraped"] = {"error": f"cluster with --http: {_short(str(exc), work)}"}
        log(f"scraped: not measured: {results['scraped']['error']}")
        return None
    started.callback(observed.stop)
    prometheus = PrometheusServer(
        binary, work / "prometheus", [f"127.0.0.1:{http_port}"], interval=plan.scrape_interval
    )
    started.callback(prometheus.stop)  # also after a start that failed half way
    try:
        prometheus.start()
        wait_until(prometheus.scraping, "Prometheus to scrape the cluster", timeout=60)
    except (AssertionError, RuntimeError) as exc:
        results["scraped"] = {"error": f"prometheus: {_short(str(exc), work)}"}
        log(f"scraped: not measured: {results['scraped']['error']}")
        return None
    return observed, prometheus


def _start_store_fleet(
    work: Path, members: list[RtpProxy], started: contextlib.ExitStack, results: dict[str, Any]
) -> shared_store.StoreFleet | None:
    """The redis-server and the Redis-store processes; where they cannot start,
    ``results["session_store"]`` says why and None is returned."""
    binary = shutil.which(os.environ.get("RTPCLUSTER_REDIS_SERVER", "redis-server"))
    if binary is None:
        error = "redis-server is not installed (Debian package redis-server; .ci/install-redis)"
    else:
        try:
            return shared_store.start(work, members, binary, started)
        except RuntimeError as exc:
            error = _short(str(exc), work)
    results["session_store"] = {"error": error}
    log(f"session store: not measured: {error}")
    return None


def _short(error: str, work: Path) -> str:
    """An error for the report: its last three lines, no path of this machine."""
    lines = [ln for ln in error.strip().splitlines() if ln.strip()][-3:]
    return " | ".join(lines)[-400:].replace(str(work), "<tmp>")


def _log_scale(s: dict[str, Any]) -> None:
    if "error" in s:
        log(f"  not measured: {s['error']}")
        return
    for size in s["sizes"]:
        k = str(size)
        log(
            f"  {size:>9,} sessions: get hit {s['lookup_hit_ns'][k]:.0f} ns,"
            f" miss {s['lookup_miss_ns'][k]:.0f} ns"
        )
    log(f"  {s['bytes_per_session']:.1f} bytes per tracked session at {s['memory_at']:,}")


def _rel(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(Path.cwd()))
    except ValueError:
        return p.name


def _write(results: dict[str, Any], json_path: Path, png_path: Path, docs: Path) -> None:
    report.write_json(results, json_path)
    report.plot(results, png_path)
    docs.parent.mkdir(parents=True, exist_ok=True)
    docs.write_text(report.render_markdown(results, png_path.name))


if __name__ == "__main__":
    sys.exit(main())
