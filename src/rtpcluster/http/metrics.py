"""``/metrics``: our counters and the service's state as Prometheus metric families.

A custom collector builds every family at scrape time from :meth:`StatusSource.readings`;
between scrapes nothing is kept, so the hot path pays only for its integer increments.
The exposition format (Prometheus text or OpenMetrics) follows the scraper's ``Accept``
header through prometheus_client's own ``choose_encoder``.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from rtpcluster import __version__
from rtpcluster.cluster.counters import MEMBER_RESULTS
from rtpcluster.config.models import MemberStatus
from rtpcluster.http.readings import ClusterReading, StatusSource, StoreReading
from rtpcluster.store import DELAY_BOUNDS

_MEMBER = ("cluster", "member")


class ServiceCollector:
    """Reads a :class:`StatusSource` into metric families on every scrape."""

    def __init__(self, source: StatusSource) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        readings = self._source.readings()
        yield _build_info()
        yield from _member_families(readings)
        yield from _cluster_families(readings)
        yield from _store_families(self._source.store_reading())


def _build_info() -> Metric:
    family = GaugeMetricFamily(
        "rtpcluster_build_info", "Always 1; the version is a label.", labels=["version"]
    )
    family.add_metric([__version__], 1)
    return family


def _gauge(name: str, documentation: str, labels: tuple[str, ...] = _MEMBER) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=labels)


def _member_families(readings: list[ClusterReading]) -> Iterator[Metric]:
    up = _gauge("rtpcluster_member_up", "1 while the member answers, 0 while it is offline.")
    status = _gauge(
        "rtpcluster_member_status",
        "1 for the member's administrative status, 0 for the others.",
        (*_MEMBER, "status"),
    )
    weight = _gauge("rtpcluster_member_weight", "Configured weight.")
    capacity = _gauge("rtpcluster_member_capacity", "Configured capacity in sessions.")
    sessions = _gauge(
        "rtpcluster_member_sessions",
        "Active sessions: the last heartbeat's figure plus calls placed since.",
    )
    tracked = _gauge(
        "rtpcluster_member_tracked_calls", "Call-ids the cluster has bound to the member."
    )
    utilisation = _gauge("rtpcluster_member_utilisation", "Sessions divided by capacity.")
    rtt = _gauge(
        "rtpcluster_member_rtt_seconds",
        "Smoothed round-trip time of commands to the member (absent until measured).",
    )
    changes = CounterMetricFamily(
        "rtpcluster_member_state_changes", "Online/offline changes.", labels=_MEMBER
    )
    last_change = _gauge(
        "rtpcluster_member_last_change_seconds",
        "Unix time of the member's last online/offline change (or of its creation).",
    )
    downtime = CounterMetricFamily(
        "rtpcluster_member_downtime_seconds", "Seconds spent offline.", labels=_MEMBER
    )
    deferred = _gauge(
        "rtpcluster_member_deferred_deletes",
        "Deletes kept for delivery when the member answers again.",
    )
    deferred_dropped = CounterMetricFamily(
        "rtpcluster_member_deferred_deletes_dropped",
        "Deletes not kept for the member because its queue was full.",
        labels=_MEMBER,
    )
    commands = CounterMetricFamily(
        "rtpcluster_member_commands",
        "Commands forwarded to the member, by result.",
        labels=(*_MEMBER, "result"),
    )
    for cluster in readings:
        name = cluster.info.name
        for member in cluster.members:
            info, counters = member.info, member.counters
            labels = (name, info.name)
            up.add_metric(labels, 1 if info.online else 0)
            for value in MemberStatus:
                status.add_metric((*labels, value.value), 1 if info.status == value else 0)
            weight.add_metric(labels, info.weight)
            capacity.add_metric(labels, info.capacity)
            sessions.add_metric(labels, info.active_sessions)
            tracked.add_metric(labels, info.tracked_calls)
            utilisation.add_metric(labels, info.utilisation)
            if info.rtt is not None:
                rtt.add_metric(labels, info.rtt)
            changes.add_metric(labels, counters.state_changes)
            last_change.add_metric(labels, counters.last_change)
            downtime.add_metric(labels, counters.downtime())
            deferred.add_metric(labels, info.deferred_deletes)
            deferred_dropped.add_metric(labels, info.deferred_dropped)
            for result in MEMBER_RESULTS:
                commands.add_metric((*labels, result), counters.commands[result])
    yield from (up, status, weight, capacity, sessions, tracked, utilisation, rtt)
    yield from (changes, last_change, downtime, deferred, deferred_dropped, commands)


def _cluster_families(readings: list[ClusterReading]) -> Iterator[Metric]:
    commands = CounterMetricFamily(
        "rtpcluster_commands",
        "Control commands answered, by op and result (ok, error, timeout, cached).",
        labels=("cluster", "op", "result"),
    )
    duration = HistogramMetricFamily(
        "rtpcluster_command_duration_seconds",
        "Time from a command's arrival to its reply.",
        labels=("cluster",),
    )
    new_calls = CounterMetricFamily(
        "rtpcluster_new_calls",
        "New calls: placed on the first member, placed after a failover, or refused.",
        labels=("cluster", "result"),
    )
    lookups = CounterMetricFamily(
        "rtpcluster_broadcast_lookups",
        "Commands for an unknown call asked of every member, by whether one had it.",
        labels=("cluster", "result"),
    )
    retransmits = CounterMetricFamily(
        "rtpcluster_retransmits",
        "UDP retransmits answered from the reply cache.",
        labels=("cluster",),
    )
    cache = _gauge("rtpcluster_reply_cache_entries", "Replies kept for retransmits.", ("cluster",))
    tracked = _gauge("rtpcluster_calls_tracked", "Call-ids bound to a member.", ("cluster",))
    for cluster in readings:
        name = cluster.info.name
        counters = cluster.counters
        for op, results in counters.commands.items():
            for result, count in results.items():
                commands.add_metric((name, op, result), count)
        histogram = counters.latency
        buckets = [(_bound(bound), count) for bound, count in histogram.cumulative()]
        duration.add_metric((name,), buckets, histogram.total_seconds)
        new_calls.add_metric((name, "placed"), counters.new_calls_placed)
        new_calls.add_metric((name, "failover"), counters.new_calls_failover)
        new_calls.add_metric((name, "refused"), counters.new_calls_refused)
        lookups.add_metric((name, "found"), counters.broadcast_found)
        lookups.add_metric((name, "not_found"), counters.broadcast_not_found)
        retransmits.add_metric((name,), counters.retransmits)
        cache.add_metric((name,), cluster.reply_cache_entries)
        tracked.add_metric((name,), cluster.calls_tracked)
    yield from (commands, duration, new_calls, lookups, retransmits, cache, tracked)


# The store's write results, as the counters of StoreCounters name them.
_STORE_WRITES = ("queued", "coalesced", "dropped", "written", "rejected")


def _store_families(reading: StoreReading) -> Iterator[Metric]:
    """The session store: state, writes and reads, the bind -> stored delay."""
    counters = reading.counters
    up = _gauge(
        "rtpcluster_session_store_up",
        "1 while the session store answers (always 1 for the memory store).",
        (),
    )
    up.add_metric((), counters.store_up)
    shared = _gauge(
        "rtpcluster_session_store_shared", "1 for a Redis/Valkey store, 0 for memory.", ()
    )
    shared.add_metric((), 1 if reading.shared else 0)
    pending = _gauge(
        "rtpcluster_session_store_writes_pending",
        "Writes queued or in flight, not yet acknowledged by the store.",
        (),
    )
    pending.add_metric((), reading.pending)
    writes = CounterMetricFamily(
        "rtpcluster_session_store_writes",
        "Writes (SET/DEL) by what became of them: queued (accepted), coalesced (replaced by"
        " a later write of the key), dropped (queue full), written, rejected (by the store).",
        labels=("result",),
    )
    for result in _STORE_WRITES:
        writes.add_metric((result,), getattr(counters, f"writes_{result}"))
    reads = CounterMetricFamily(
        "rtpcluster_session_store_reads",
        "Reads of a call's member (GET on a local miss), by result: hit, miss, error.",
        labels=("result",),
    )
    for result in ("hit", "miss", "error"):
        reads.add_metric((result,), getattr(counters, f"reads_{result}"))
    outages = CounterMetricFamily(
        "rtpcluster_session_store_outages", "Times the store became unreachable.", labels=()
    )
    outages.add_metric((), counters.outages)
    delay = HistogramMetricFamily(
        "rtpcluster_session_store_bind_delay_seconds",
        "Time from a call's bind to the store's acknowledgement of its write.",
        labels=(),
    )
    cumulative, buckets = 0, []
    for bound, count in zip(
        (*DELAY_BOUNDS, float("inf")), counters.bind_delay_buckets, strict=True
    ):
        cumulative += count
        buckets.append((_bound(bound), cumulative))
    delay.add_metric((), buckets, counters.bind_delay_sum)
    yield from (up, shared, pending, writes, reads, outages, delay)


def _bound(bound: float) -> str:
    """A bucket's ``le`` label as Prometheus clients write it: ``0.0001``, ``1.0``, ``+Inf``."""
    return "+Inf" if bound == float("inf") else repr(bound)


def make_registry(source: StatusSource) -> CollectorRegistry:
    """Our collector, plus the process's CPU, memory and file descriptors."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(source))
    ProcessCollector(registry=registry)
    return registry


def exposition(registry: CollectorRegistry, accept: str) -> tuple[bytes, str]:
    """The scrape body in the format ``accept`` asks for, and its content type."""
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type
