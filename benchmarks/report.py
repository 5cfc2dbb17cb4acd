"""Targets, ``results/latest.json``, the plot, and ``docs/performance.md`` (generated).

``docs/performance.md`` is rendered from the JSON by :func:`render_markdown`, never
edited by hand: ``python -m benchmarks.run --render-only`` rebuilds it from the last
results.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.scenarios import FAILOVER_RATE, FAILOVER_SLOTS, SLOW_U

ALL_PHASES = ("side_by_side", "live", "failover", "scale", "scraped", "store")

TARGETS_TEXT = {
    "throughput_16": "throughput at 16 in flight (udp) >= 0.5 x direct",
    "added_p50_1": "added median latency at 1 in flight (udp) <= 0.15 ms",
    "lookup_1m": "latency at 1M sessions within 10% of 0 (cluster p50 + lookup growth)",
    "bytes_per_session": "<= 200 bytes per tracked call",
    "hung_detect": "a hung member (SIGSTOP) gets no new calls within 2 s",
    "hung_return": "a returned member (SIGCONT) takes calls within 3 s",
    "killed_detect": "a killed member (SIGKILL) gets no new calls within 2 s",
    "killed_return": "a restarted member takes calls within 3 s",
    "healthy_failures": "0 failed commands for calls on healthy members",
    "affinity": "0 affinity errors (every L/re-U/D reached the U's member)",
    "scraped_16": "throughput at 16 in flight (udp) with --http, scraped every second,"
    " >= 0.9 x without",
    "scraped_1": "median latency at 1 in flight (udp) with --http, scraped every second,"
    " <= 1.1 x without",
    "store_steady_16": "Redis store at 16 in flight (udp) >= 0.9 x the memory store",
    "store_steady_1": "Redis store at 1 in flight (udp) >= 0.9 x the memory store",
    "store_window_16": "Redis store reading every offer (the first idle timeout after a start)"
    " at 16 in flight >= 0.9 x the memory store",
    "store_window_1": "Redis store reading every offer (the first idle timeout after a start)"
    " at 1 in flight >= 0.9 x the memory store",
    "store_bind_delay": "bindings in Redis within 50 ms of the bind (share of binds)",
    "store_cross_affinity": "0 affinity errors with U on one rtpcluster, the rest on another",
}


def _target(key: str, value: float | None, limit: float, op: str, unit: str) -> dict[str, Any]:
    if value is None:
        ok = None
    elif op == "<=":
        ok = value <= limit
    else:
        ok = value >= limit
    return {
        "key": key,
        "text": TARGETS_TEXT[key],
        "value": value,
        "limit": limit,
        "op": op,
        "unit": unit,
        "pass": ok,
    }


def _row(rows: list[dict[str, Any]], transport: str, level: int) -> dict[str, Any] | None:
    for r in rows:
        if r["transport"] == transport and r["in_flight"] == level:
            return r
    return None


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The pass/fail targets; ``pass`` is None where the figure was not measured."""
    rows = results.get("side_by_side", [])
    out: list[dict[str, Any]] = []
    r16 = _row(rows, "udp", 16)
    out.append(_target("throughput_16", r16["ratio"] if r16 else None, 0.5, ">=", "x direct"))
    r1 = _row(rows, "udp", 1)
    added = None
    if r1 and r1["direct"] and r1["cluster"] and r1["cluster"]["p50_ms"] is not None:
        added = r1["cluster"]["p50_ms"] - r1["direct"]["p50_ms"]
    out.append(_target("added_p50_1", added, 0.15, "<=", "ms"))

    scale = results.get("scale") or {}
    out.append(_target("lookup_1m", lookup_growth(results), 0.10, "<=", "relative"))
    out.append(_target("bytes_per_session", scale.get("bytes_per_session"), 200, "<=", "bytes"))

    fo = results.get("failover") or {}
    for mode, prefix in (("stop", "hung"), ("kill", "killed")):
        f = fo.get(mode)
        out.append(_target(f"{prefix}_detect", f and f["no_new_calls_after_s"], 2.0, "<=", "s"))
        out.append(_target(f"{prefix}_return", f and f["takes_calls_after_s"], 3.0, "<=", "s"))
        if f and f["takes_calls_after_s"] is None:
            out[-1]["pass"] = False  # measured, and it never came back
    healthy = [f["failed_on_healthy"] for f in fo.values()] if fo else []
    out.append(_target("healthy_failures", sum(healthy) if healthy else None, 0, "<=", ""))
    aff = [
        side["affinity_errors"]
        for r in rows
        for side in (r["direct"], r["cluster"])
        if side is not None
    ]
    out.append(_target("affinity", sum(aff) if aff else None, 0, "<=", ""))

    scraped = {r["in_flight"]: r for r in (results.get("scraped") or {}).get("rows", [])}
    s16 = scraped.get(16)
    out.append(_target("scraped_16", s16 and s16["ratio"], 0.9, ">=", "x without"))
    s1 = scraped.get(1)
    p50_ratio = None
    if s1 and s1["plain"] and s1["scraped"] and s1["plain"]["p50_ms"] and s1["scraped"]["p50_ms"]:
        p50_ratio = s1["scraped"]["p50_ms"] / s1["plain"]["p50_ms"]
    out.append(_target("scraped_1", p50_ratio, 1.1, "<=", "x without"))
    out += _store_targets(results.get("session_store") or {})
    return out


def _store_targets(store: dict[str, Any]) -> list[dict[str, Any]]:
    if not store:
        return []
    out = []
    levels = {row["in_flight"]: row for row in store.get("levels", [])}
    for side in ("steady", "window"):
        for level in (16, 1):
            row = levels.get(level)
            ratio = row.get(f"{side}_ratio") if row else None
            out.append(_target(f"store_{side}_{level}", ratio, 0.9, ">=", "x memory"))
    delay = store.get("bind_delay") or {}
    out.append(_target("store_bind_delay", delay.get("within_50ms"), 0.99, ">=", "of binds"))
    cross = [e["cross"]["affinity_errors"] for e in store.get("cross", [])]
    out.append(_target("store_cross_affinity", sum(cross) if cross else None, 0, "<=", ""))
    return out


def lookup_growth(results: dict[str, Any]) -> float | None:
    """What a million tracked calls add to a command, relative to its latency at none.

    The members cannot hold a million live sessions (open files), so this is not an
    end-to-end figure: it adds the measured growth of one session-table lookup (a hit at
    1M against the miss of an empty table) to the cluster's median command latency at
    1 in flight with no live sessions.
    """
    hits = (results.get("scale") or {}).get("lookup_hit_ns", {})
    if "0" not in hits or "1000000" not in hits:
        return None
    base_ms = None
    live = (results.get("live_sessions") or {}).get("levels") or []
    if live and live[0]["sessions"] == 0:
        base_ms = live[0]["cluster"]["p50_ms"]
    r1 = _row(results.get("side_by_side", []), "udp", 1)
    if base_ms is None and r1 and r1["cluster"]:
        base_ms = r1["cluster"]["p50_ms"]
    if not base_ms:
        return None
    return float((hits["1000000"] - hits["0"]) / (base_ms * 1e6))


def write_json(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")


def plot(results: dict[str, Any], path: Path) -> None:
    """Throughput and p99 by in-flight level (cluster vs direct), latency vs live sessions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results.get("side_by_side", [])
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    ax_tp, ax_p99, ax_live = axes
    for transport, style in (("udp", "-"), ("unix", "--")):
        sel = [r for r in rows if r["transport"] == transport]
        for side, marker, color in (("direct", "o", "tab:blue"), ("cluster", "s", "tab:orange")):
            pts = [(r["in_flight"], r[side]) for r in sel if r[side]]
            if not pts:
                continue
            xs = [p[0] for p in pts]
            label = f"{side} ({transport})"
            kw: dict[str, Any] = {"marker": marker, "color": color, "label": label}
            ax_tp.plot(xs, [p[1]["cmds_per_s"] for p in pts], style, **kw)
            p99 = [(x, s["p99_ms"]) for x, s in pts if s["p99_ms"] is not None]
            ax_p99.plot([p[0] for p in p99], [p[1] for p in p99], style, **kw)
    for ax, title, unit in (
        (ax_tp, "throughput", "commands/s"),
        (ax_p99, "p99 latency", "ms"),
    ):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("commands in flight")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    ax_p99.set_yscale("log")

    live = (results.get("live_sessions") or {}).get("levels") or []
    if live:
        xs = [lv["sessions"] for lv in live]
        for side, label, color in (
            ("cluster", "through cluster", "tab:orange"),
            ("member", "member direct", "tab:blue"),
        ):
            for q, style in (("p50_ms", "-"), ("p99_ms", ":")):
                ys = [lv[side][q] for lv in live]
                ax_live.plot(xs, ys, style, marker="o", color=color, label=f"{label} {q[:3]}")
        ax_live.legend(fontsize=8)
    ax_live.set_xlabel("live sessions")
    ax_live.set_ylabel("ms (1 in flight)")
    ax_live.set_title("latency vs live sessions")
    ax_live.grid(True, alpha=0.3)

    meta = results["meta"]
    fig.suptitle(
        f"rtpcluster benchmark, {meta['date']}, {meta['cores']} cores"
        + (" (quick run)" if meta["quick"] else "")
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# -- markdown ------------------------------------------------------------------------------


def _f(v: float | None, fmt: str = ".3f", none: str = "-") -> str:
    return none if v is None else format(v, fmt)


def _verdict(ok: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "not measured"}[ok]


def _side_cells(s: dict[str, Any] | None) -> list[str]:
    if not s:
        return ["-", "-", "-"]
    return [_f(s["cmds_per_s"], ".0f"), _f(s["p50_ms"]), _f(s["p99_ms"])]


def _cpus(side: dict[str, Any]) -> str:
    """The cluster's and redis-server's CPU of a store row (absent in older results)."""
    return f"{_f(side.get('cluster_cpu_pct'), '.0f')} / {_f(side.get('redis_cpu_pct'), '.0f')}"


def _store_section(store: dict[str, Any]) -> list[str]:
    """The session-store rows (benchmarks/shared_store.py)."""
    if not store:
        return []
    if "error" in store:
        return ["## Session store (Redis)", "", f"Not measured: {store['error']}", ""]
    out = [
        "## Session store (Redis)",
        "",
        "The same calls through an rtpcluster process with the memory store and through"
        " processes with the Redis store (a local redis-server on a unix socket), all with"
        " the same settings but the store, alternating round by"
        f" round ({store['rounds']} rounds of {store['round_seconds']:g} s per figure)."
        " *Offers read*: a process in its first idle timeout, which reads every offer of an"
        " unknown call from the store before placing it; *steady*: one whose window has"
        f" closed (session_idle_timeout {store['steady_idle_s']:g} s, its first offer a"
        " minute before), which places offers at once and writes every bind, refresh and"
        " unbind. The reads columns count the store reads each side made. *CPU*: percent of"
        " one core, the cluster process / redis-server, averaged over rounds; redis-server"
        " runs on the same two cores as the load, the members and the cluster.",
        "",
        "| in flight | memory cmd/s | memory p50 ms | CPU % | offers read cmd/s | p50 ms | ratio"
        " | reads | CPU % | steady cmd/s | p50 ms | ratio | reads | CPU % |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in store["levels"]:
        m = row["memory"]
        cells = [str(row["in_flight"]), _f(m["cmds_per_s"], ".0f"), _f(m["p50_ms"]), _cpus(m)]
        for side in ("window", "steady"):
            s = row[side]
            cells += [_f(s["cmds_per_s"], ".0f"), _f(s["p50_ms"]), _f(row[f"{side}_ratio"], ".2f")]
            cells += [_reads(row.get(f"{side}_reads")), _cpus(s)]
        out.append("| " + " | ".join(cells) + " |")
    out += [
        "",
        "Cross front end: each call's U through one rtpcluster, its L, re-U and D through"
        " another (both with the Redis store), the L sent a fixed delay after the U's reply;"
        " against the same calls through the memory-store cluster alone. *Member lookups*:"
        " broadcasts, from the members' own `ncmds_errs` (an L whose binding was not stored"
        " yet is found that way).",
        "",
        "| in flight | answer delay ms | one front end cmd/s | p50 ms | p99 ms"
        " | across cmd/s | p50 ms | p99 ms | ratio | member lookups | reads of the second"
        " | affinity errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in store.get("cross", []):
        same, cross = e["same"], e["cross"]
        out.append(
            f"| {e['in_flight']} | {e['answer_delay_ms']:g} | {_f(same['cmds_per_s'], '.0f')}"
            f" | {_f(same['p50_ms'])} | {_f(same['p99_ms'])} | {_f(cross['cmds_per_s'], '.0f')}"
            f" | {_f(cross['p50_ms'])} | {_f(cross['p99_ms'])} | {_f(e['ratio'], '.2f')}"
            f" | {e['member_lookups']} | {_reads(e['continued_reads'])}"
            f" | {cross['affinity_errors']} |"
        )
    delay = store.get("bind_delay") or {}
    if delay:
        out += [
            "",
            f"Bind -> stored (the stores' own histogram, every bind of these rows):"
            f" {delay['count']} binds, mean {_f(delay['mean_ms'], '.2f')} ms,"
            f" {delay['within_50ms']:.2%} within 50 ms; 99 % within the"
            f" {_f(delay['p99_bound_ms'], 'g')} ms bucket. The writer waits 10 ms after the"
            " first write it sees, so that one pipeline carries the writes of several calls.",
        ]
    return [*out, ""]


def _reads(reads: dict[str, int] | None) -> str:
    if not reads:
        return "-"
    return f"{reads['hit']} hit, {reads['miss']} miss, {reads['error']} error"


def _scraped_section(scraped: dict[str, Any] | None) -> list[str]:
    """The cluster without and with ``--http`` scraped by Prometheus, side by side."""
    if not scraped:
        return []
    head = ["## With the HTTP endpoint scraped by Prometheus", ""]
    if "error" in scraped:
        return [*head, f"Not measured: {scraped['error']}", ""]
    scrapes = scraped["scrapes"]
    out = [
        *head,
        "The same udp calls through two clusters over the same two members, alternating"
        " round by round: one without `--http`, one with `--http` while a real Prometheus"
        f" scrapes its `/metrics` every {scraped['scrape_interval']:g} s (both run the"
        " whole time; only the one under load gets calls). Prometheus recorded"
        f" {_f(scrapes['count'], '.0f')} scrapes, {_f(scrapes['failed'] or 0, '.0f')} of"
        f" them failed; one took {_f(scrapes['mean_duration_ms'], '.1f')} ms on average,"
        f" at most {_f(scrapes['max_duration_ms'], '.1f')} ms, for"
        f" {_f(scrapes['samples'], '.0f')} samples.",
        "",
        "| in flight | without cmd/s | without p50 ms | without p99 ms | with cmd/s"
        " | with p50 ms | with p99 ms | ratio | cluster CPU % without/with |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in scraped["rows"]:
        plain, observed = r["plain"], r["scraped"]
        cpu = "/".join(
            _f(side.get("cluster_cpu_pct") if side else None, ".0f") for side in (plain, observed)
        )
        out.append(
            "| "
            + " | ".join(
                [
                    str(r["in_flight"]),
                    *_side_cells(plain),
                    *_side_cells(observed),
                    _f(r["ratio"], ".2f"),
                    cpu,
                ]
            )
            + " |"
        )
    return [*out, ""]


def render_markdown(results: dict[str, Any], png_name: str) -> str:
    meta = results["meta"]
    out: list[str] = [
        "<!-- GENERATED by `python -m benchmarks.run` from benchmarks/results/latest.json;"
        " do not edit by hand. -->",
        "",
        "# Performance",
        "",
        f"Measured {meta['date']} on {meta['cores']} cores ({meta['platform']}), Python"
        f" {meta['python']}, rtp-io {meta['rtp_io']}; "
        + ("a `--quick` run." if meta["quick"] else "a full run.")
        + f" {meta['load_procs']} load processes, {meta['rounds']} alternating rounds of"
        f" {meta['round_seconds']} s per figure. Reproduce with `nox -s bench`"
        " (or `python -m benchmarks.run [--quick]`).",
        "",
        f"![benchmark plots](../benchmarks/results/{png_name})",
        "",
    ]
    if meta.get("cluster_status") != "ok":
        out += [f"**Cluster not measured:** {meta.get('cluster_status')}", ""]
    phases = meta.get("phases")
    if phases is not None and set(phases) != set(ALL_PHASES):
        out += [f"**A partial run:** only {', '.join(phases)}.", ""]
    for note in meta.get("notes", []):
        out += [f"* {note}"]
    if meta.get("notes"):
        out.append("")

    out += ["## Targets", "", "| target | measured | verdict |", "|---|---|---|"]
    for t in results.get("targets", []):
        v = t["value"]
        shown = "-" if v is None else (f"{v:.3g} {t['unit']}".strip())
        out.append(f"| {t['text']} | {shown} | {_verdict(t['pass'])} |")
    out.append("")

    out += [
        "## Direct RTPproxy vs through rtpcluster",
        "",
        "Calls of four commands (U, L, re-U, D) played by the load generator, the same load"
        " against one RTPproxy directly (the ceiling) and through rtpcluster with two"
        " RTPproxy members, alternating. Latency is from the first send of a command to its"
        " reply (retransmits included); commands/s and latencies count successful replies"
        " only, failures are in the last columns. CPU is percent of one core, averaged"
        " over rounds."
        " The `unix:` rows stop at 4 in flight: the RTPproxy of rtp-io 1.1.1 stops answering"
        " on every control socket once about 6-8 clients use its `unix:` socket at once"
        " (also with a plain blocking Kamailio-style client), so there is no direct ceiling"
        " to compare with beyond that. Above about 40 commands in flight one RTPproxy drops"
        " datagrams (kernel receive buffer): the direct retransmits at 64.",
        "",
        "| transport | in flight | direct cmd/s | direct p50 ms | direct p99 ms"
        " | cluster cmd/s | cluster p50 ms | cluster p99 ms | ratio | cluster CPU %"
        " | load gen CPU % d/c | retransmits d/c | timeouts d/c | E replies d/c |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results.get("side_by_side", []):
        d, c = r["direct"], r["cluster"]

        def pair(key: str, d: Any = d, c: Any = c) -> str:
            def one(s: dict[str, Any] | None) -> str:
                if not s:
                    return "-"
                v = s[key]
                if isinstance(v, float):
                    return f"{v:.0f}"
                if isinstance(v, dict):
                    return " ".join(f"{k}:{n}" for k, n in sorted(v.items())) or "0"
                return str(v)

            return f"{one(d)}/{one(c)}"

        out.append(
            "| "
            + " | ".join(
                [
                    r["transport"],
                    str(r["in_flight"]),
                    *_side_cells(d),
                    *_side_cells(c),
                    _f(r["ratio"], ".2f"),
                    _f(c.get("cluster_cpu_pct") if c else None, ".0f"),
                    pair("loadgen_cpu_pct"),
                    pair("retransmits"),
                    pair("timeouts"),
                    pair("e_replies"),
                ]
            )
            + " |"
        )
    notes = [n for r in results.get("side_by_side", []) for n in r.get("notes", [])]
    out += [""] + [f"* {n}" for n in sorted(set(notes))] + ([""] if notes else [])

    live = results.get("live_sessions") or {}
    if live.get("levels"):
        out += [
            "## Latency with live sessions",
            "",
            f"Sessions opened through the cluster with offers only (each holds two sockets"
            f" on its member; the members' open-files limit is {live['member_nofile']}, so"
            f" at most about {live['capacity']} fit). Then calls at 1 in flight, through the"
            " cluster and directly to one member (whose own latency grows with its sessions).",
            "",
            "| live sessions | cluster p50 ms | cluster p99 ms | member p50 ms | member p99 ms"
            " | added by the cluster, p50 ms |",
            "|---|---|---|---|---|---|",
        ]
        for lv in live["levels"]:
            c, m = lv["cluster"], lv["member"]
            added = c["p50_ms"] - m["p50_ms"] if c["p50_ms"] is not None and m["p50_ms"] else None
            out.append(
                f"| {lv['sessions']} | {_f(c['p50_ms'])} | {_f(c['p99_ms'])}"
                f" | {_f(m['p50_ms'])} | {_f(m['p99_ms'])} | {_f(added)} |"
            )
        out.append("")

    scale = results.get("scale") or {}
    if scale and "error" not in scale:
        out += [
            "## Session table",
            "",
            "`SessionTable.get` timed in a loop (best of 5 passes of 100,000 lookups in random"
            f" order; the bare loop costs {_f(scale['loop_ns'], '.0f')} ns and is included)."
            " At 0 sessions every lookup is the miss a new call makes. The members cannot"
            " hold a million live sessions, so the 1M latency target adds the growth of one"
            " lookup (1M hit minus empty-table miss) to the cluster's median command latency"
            " at 0 live sessions.",
            "",
            "| sessions | hit ns | miss ns |",
            "|---|---|---|",
        ]
        for size in scale["sizes"]:
            k = str(size)
            out.append(
                f"| {size:,} | {_f(scale['lookup_hit_ns'][k], '.0f')}"
                f" | {_f(scale['lookup_miss_ns'][k], '.0f')} |"
            )
        out += ["", f"Binding a call (tracemalloc on): {_f(scale['bind_us_traced'], '.2f')} us."]
        out += [
            "",
            f"Memory (tracemalloc) at {scale['memory_at']:,} tracked calls:"
            f" {_f(scale['bytes_per_session'], '.1f')} bytes per call, of which"
            f" {scale['key_bytes']} are the 36-character call-id string the table keeps"
            f" ({_f(scale['bytes_per_session_without_key'], '.1f')} bytes without it).",
        ]
        if "bytes_per_session_two_generations" in scale:
            out += [
                f"With the calls spread over both generations (an ageing, then every other"
                f" call used again): {_f(scale['bytes_per_session_two_generations'], '.1f')}"
                f" bytes per call. When every call has ended the table still holds"
                f" {scale['bytes_held_after_end'] / 1e6:.1f} MB (a dict keeps its size"
                f" when entries leave), {scale.get('bytes_held_after_compact', 0) / 1e6:.1f}"
                f" MB after the upkeep's compaction.",
            ]
        out.append("")
    elif scale:
        out += ["## Session table", "", f"Not measured: {scale['error']}", ""]

    out += _scraped_section(results.get("scraped"))

    fo = results.get("failover") or {}
    if fo:
        out += [
            "## Failover",
            "",
            f"A steady call load through the cluster ({FAILOVER_RATE:.0f} new calls/s started"
            " on time whatever earlier calls are waiting for, up to"
            f" {FAILOVER_SLOTS} at once); one member is"
            " killed (SIGKILL, later restarted) or hung (SIGSTOP, later SIGCONT). *No new"
            " calls after*: from the fault to the last new call the cluster still tried on"
            f" that member (its offer failed, landed there, or took over {SLOW_U} s). *Takes"
            " calls after*: from its return (the restarted member answering `V`, or SIGCONT)"
            " to the first new call placed on it.",
            "",
            "| fault | down s | no new calls after s | takes calls after s"
            " | failed on healthy members | new calls failed | failed on the faulty member |",
            "|---|---|---|---|---|---|---|",
        ]
        for mode, f in fo.items():
            out.append(
                f"| {'SIGKILL + restart' if mode == 'kill' else 'SIGSTOP + SIGCONT'}"
                f" | {f['down_s']} | {_f(f['no_new_calls_after_s'], '.2f')}"
                f" | {_f(f['takes_calls_after_s'], '.2f', 'never')}"
                f" | {f['failed_on_healthy']} | {f['new_calls_failed']}"
                f" | {f['failed_on_victim']} |"
            )
        out.append("")
    out += _store_section(results.get("session_store") or {})
    out += [
        "## Where the time goes",
        "",
        "Through the cluster a command needs two more process wake-ups (the cluster's, once"
        " each way) and four more loopback UDP system calls than direct, on the same two"
        " cores as the load generator and the RTPproxies. The cluster's own work per command"
        " is small: no trio task per UDP command, one parse, one dict lookup; after each"
        " batch every UDP socket of the cluster is read, so one wake-up serves both"
        " directions under load (see [routing.md](routing.md#the-hot-path)). What remains"
        " is trio's scheduling per wake-up and the system calls. Going well past half the"
        " direct rate at 16 in flight on two cores would take batching those calls"
        " (recvmmsg/sendmmsg in a small native data plane) rather than more Python tuning.",
        "",
    ]
    return "\n".join(out).rstrip() + "\n"
