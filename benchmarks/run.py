"""``python -m benchmarks.run [--quick]``: the whole benchmark, bounded in time.

Starts one RTPproxy for direct runs and two cluster members (rtp-io, a subprocess each,
disjoint RTP port ranges), the cluster (``python -m rtpcluster serve --foreground``),
load processes; runs the phases; writes ``benchmarks/results/latest.json``,
``latest.png`` and ``docs/performance.md``. Everything started is stopped by PID at the
end, also on errors. If the cluster cannot be started the direct figures are still taken
and the report says why the cluster ones are missing.

The session-store rows (benchmarks/shared_store.py) need a redis-server: three more
rtpcluster processes with the Redis store are started at the beginning (so that the
steady side's offer window has closed by the time they run). ``--only-store`` runs those
rows alone and writes ``results/session-store.json``, not the report.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks import report, scale, scenarios, shared_store
from benchmarks.loadgen import LoadPool, MemberRange
from testsupport import MemberEntry, RtpclusterProcess, RtpProxy, cluster_xml, free_port

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DOCS = HERE.parent / "docs" / "performance.md"

# RTP port ranges: below the kernel's ephemeral range, clear of 30000-30999 (tests)
DIRECT_RTP = MemberRange("direct", 31000, 32499)
MEMBER_RTP = (MemberRange("m1", 2000, 15999), MemberRange("m2", 16000, 29999))
# RTPproxy's session timeout (-T) and set-up timeout (-W): the live-sessions phase holds
# offers open for its whole length, so far above any phase (RTPproxy's default is 60 s).
SESSION_TTL = 600


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
    ap.add_argument("--skip-store", action="store_true", help="no session-store rows")
    ap.add_argument(
        "--only-store",
        action="store_true",
        help="only the session-store rows; writes results/session-store.json, not the report",
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
        fleet = None
        if cluster is not None and not args.skip_store:
            fleet = _start_store_fleet(work, members, started, meta)
        pool = LoadPool(args.load_procs)
        runner = scenarios.Runner(pool)
        try:
            if args.only_store:
                if cluster is None or fleet is None:
                    log(f"session store rows not measured: {meta['notes'] or 'no cluster'}")
                    return 1
                log("session store (alternating memory / redis):")
                store = shared_store.measure(runner, plan, members, cluster, fleet, log)
                path = args.results / "session-store.json"
                report.write_json({"meta": meta, "session_store": store}, path)
                log(f"wrote {_rel(path)}")
                return 0
            log("side by side (alternating direct / cluster):")
            results["side_by_side"] = scenarios.side_by_side(
                runner, plan, direct, members, cluster, log
            )
            if cluster is not None:
                log("live sessions:")
                results["live_sessions"] = scenarios.live_sessions(
                    runner, plan, members, cluster, log
                )
            if cluster is not None and not args.skip_failover:
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
    if not args.skip_scale:
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


def _start_store_fleet(
    work: Path, members: list[RtpProxy], started: contextlib.ExitStack, meta: dict[str, Any]
) -> shared_store.StoreFleet | None:
    """The redis-server and the Redis-store processes, or None with a note why not."""
    binary = shutil.which(os.environ.get("RTPCLUSTER_REDIS_SERVER", "redis-server"))
    if binary is None:
        meta["notes"].append("session store rows not measured: redis-server not found")
        return None
    try:
        return shared_store.start(work, members, binary, started)
    except RuntimeError as exc:
        meta["notes"].append(f"session store rows not measured: {_short(str(exc), work)}")
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
