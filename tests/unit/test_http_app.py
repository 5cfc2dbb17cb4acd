"""The ASGI app on its own: routes, refusals, the JSON documents and the metrics.

The service is a hand-written fake (this module's subject is the app); the endpoint
against real members is in tests/integration/test_http_live.py.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from rtpcluster.admin.commands import run_command
from rtpcluster.cluster.control import ClusterInfo, StoreInfo
from rtpcluster.cluster.counters import ClusterCounters, MemberCounters
from rtpcluster.http.app import Response, StatusApp, readiness
from rtpcluster.http.readings import ClusterReading, MemberReading, StoreReading
from rtpcluster.store import StoreCounters
from tests.unit.test_admin_commands import FakeControl, member

# Every metric the issue names, as the text format writes the sample names.
MEMBER_METRICS = (
    "rtpcluster_member_up",
    "rtpcluster_member_status",
    "rtpcluster_member_weight",
    "rtpcluster_member_capacity",
    "rtpcluster_member_sessions",
    "rtpcluster_member_tracked_calls",
    "rtpcluster_member_utilisation",
    "rtpcluster_member_rtt_seconds",
    "rtpcluster_member_state_changes_total",
    "rtpcluster_member_last_change_seconds",
    "rtpcluster_member_deferred_deletes",
    "rtpcluster_member_deferred_deletes_dropped_total",
    "rtpcluster_member_commands_total",
)
CLUSTER_METRICS = (
    "rtpcluster_commands_total",
    "rtpcluster_command_duration_seconds_bucket",
    "rtpcluster_command_duration_seconds_count",
    "rtpcluster_command_duration_seconds_sum",
    "rtpcluster_new_calls_total",
    "rtpcluster_broadcast_lookups_total",
    "rtpcluster_retransmits_total",
    "rtpcluster_reply_cache_entries",
    "rtpcluster_calls_tracked",
)


class FakeSource:
    """A StatusSource over FakeControl's clusters, with counters a test can set."""

    def __init__(self, control: FakeControl | None = None) -> None:
        self.control = control or FakeControl()
        self.stopping = False
        self.cluster_counters: dict[str, ClusterCounters] = {}
        self.member_counters: dict[tuple[str, str], MemberCounters] = {}
        self.store_counters = StoreCounters(store_up=1)

    def clusters(self) -> list[ClusterInfo]:
        return self.control.clusters()

    def cluster(self, name: str) -> ClusterInfo:
        return self.control.cluster(name)

    def session_store(self) -> StoreInfo:
        return self.control.session_store()

    def store_reading(self) -> StoreReading:
        return StoreReading(shared=False, pending=0, counters=self.store_counters)

    def readings(self) -> list[ClusterReading]:
        out = []
        for info in self.clusters():
            counters = self.cluster_counters.setdefault(info.name, ClusterCounters())
            members = [
                MemberReading(
                    info=dataclasses.replace(m, deferred_deletes=3, deferred_dropped=2),
                    counters=self.member_counters.setdefault((info.name, m.name), MemberCounters()),
                )
                for m in info.members
            ]
            out.append(
                ClusterReading(
                    info=info,
                    counters=counters,
                    members=members,
                    reply_cache_entries=5,
                    calls_tracked=9,
                )
            )
        return out


def request(
    path: str, method: str = "GET", headers: list[tuple[bytes, bytes]] | None = None
) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "headers": headers or []}


@pytest.fixture
def source() -> FakeSource:
    return FakeSource()


@pytest.fixture
def app(source: FakeSource) -> StatusApp:
    return StatusApp(source)


def body_json(response: Response) -> Any:
    assert response.content_type == "application/json"
    return json.loads(response.body)


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a text exposition, keyed by name and labels."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def labels(**pairs: str) -> frozenset[tuple[str, str]]:
    return frozenset(pairs.items())


# --- routes ----------------------------------------------------------------------


async def test_api_clusters_is_the_ls_json_document(app: StatusApp, source: FakeSource) -> None:
    response = app.respond(request("/api/v1/clusters"))
    assert response.status == 200
    reply = await run_command(source.control, "ls --json")
    assert body_json(response) == json.loads("\n".join(reply.lines))
    assert body_json(response)["clusters"][0]["members"][0]["name"] == "RTPPROXY1"


async def test_api_one_cluster_is_the_ls_cluster_json_document(
    app: StatusApp, source: FakeSource
) -> None:
    response = app.respond(request("/api/v1/clusters/Supercluster#1"))
    assert response.status == 200
    reply = await run_command(source.control, "ls Supercluster#1 --json")
    assert body_json(response) == json.loads("\n".join(reply.lines))


def test_api_unknown_cluster_is_404_with_the_reason(app: StatusApp) -> None:
    response = app.respond(request("/api/v1/clusters/nope"))
    assert response.status == 404
    assert body_json(response) == {"error": "nope: cluster not found"}


@pytest.mark.parametrize(
    "path",
    ["/nope", "/metrics/x", "/api/v1/clusters/a/b", "/api/v1", "/index.html", "/api/v1/cluster"],
)
def test_unknown_paths_are_404(app: StatusApp, path: str) -> None:
    assert app.respond(request(path)).status == 404


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"])
@pytest.mark.parametrize("path", ["/", "/metrics", "/api/v1/clusters", "/ready"])
def test_methods_other_than_get_and_head_are_405(app: StatusApp, method: str, path: str) -> None:
    response = app.respond(request(path, method))
    assert response.status == 405
    assert (b"allow", b"GET, HEAD") in response.extra_headers


def test_a_request_with_a_body_is_413(app: StatusApp) -> None:
    for header in ((b"content-length", b"10"), (b"transfer-encoding", b"chunked")):
        assert app.respond(request("/metrics", headers=[header])).status == 413
    assert app.respond(request("/metrics", headers=[(b"content-length", b"0")])).status == 200


def test_healthz(app: StatusApp) -> None:
    response = app.respond(request("/healthz"))
    assert (response.status, response.body) == (200, b"ok\n")


def test_status_page_is_self_contained_html(app: StatusApp) -> None:
    response = app.respond(request("/"))
    assert response.status == 200
    assert response.content_type.startswith("text/html")
    page = response.body.decode()
    assert "api/v1/clusters" in page
    # no CDN, no external script or style: nothing is fetched from elsewhere
    assert "http://" not in page and "https://" not in page
    assert "<script src" not in page and "<link" not in page
    assert any(name == b"content-security-policy" for name, _ in response.extra_headers)


async def test_head_sends_the_headers_of_get_without_a_body(app: StatusApp) -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        raise AssertionError("the app reads no request body")

    await app(request("/healthz", "HEAD"), receive, send)
    start, body = sent
    assert start["status"] == 200
    assert (b"content-length", b"3") in start["headers"]
    assert body == {"type": "http.response.body", "body": b""}


async def test_lifespan_is_answered() -> None:
    app = StatusApp(FakeSource())
    incoming = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent: list[str] = []

    async def receive() -> dict[str, Any]:
        return next(incoming)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message["type"])

    await app({"type": "lifespan"}, receive, send)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


# --- readiness ---------------------------------------------------------------------


def test_ready_names_the_cluster_without_a_member_taking_calls(
    app: StatusApp, source: FakeSource
) -> None:
    # FakeControl's cluster "empty" has no member at all
    response = app.respond(request("/ready"))
    assert response.status == 503
    assert response.body == b"no member taking new calls in cluster empty\n"
    source.control.infos = source.control.infos[:1]
    response = app.respond(request("/ready"))
    assert (response.status, response.body) == (200, b"ready: 1 cluster\n")
    source.stopping = True
    assert app.respond(request("/ready")).status == 503


member_states = st.lists(
    st.tuples(st.booleans(), st.sampled_from(["ACTIVE", "SUSPENDED", "DRAINING"])), max_size=4
)


@given(st.lists(member_states, max_size=4))
def test_ready_exactly_when_every_cluster_has_an_online_active_member(
    clusters: list[list[tuple[bool, str]]],
) -> None:
    infos = [
        ClusterInfo(
            index=i,
            name=f"c{i}",
            addresses=[],
            capacity_limit="soft",
            members=[
                member(f"m{j}", online=online, status=status)
                for j, (online, status) in enumerate(states)
            ],
        )
        for i, states in enumerate(clusters)
    ]
    ready, reason = readiness(infos, stopping=False)
    expected = all(any(o and s == "ACTIVE" for o, s in states) for states in clusters)
    assert ready is expected
    for i, states in enumerate(clusters):
        idle = not any(o and s == "ACTIVE" for o, s in states)
        assert (f"c{i}" in reason.split("cluster ", 1)[-1].split(", ")) is (idle and not ready)


# --- metrics -----------------------------------------------------------------------


def test_metrics_carry_every_named_family_with_cluster_and_member_labels(
    app: StatusApp,
) -> None:
    response = app.respond(request("/metrics"))
    assert response.status == 200
    assert response.content_type.startswith("text/plain")
    got = samples(response.body.decode())
    names = {name for name, _ in got}
    for name in (*MEMBER_METRICS, *CLUSTER_METRICS, "rtpcluster_build_info"):
        assert name in names, name
    for name, label_set in got:
        keys = {key for key, _ in label_set}
        if name in MEMBER_METRICS:
            assert {"cluster", "member"} <= keys, name
        elif name in CLUSTER_METRICS:
            assert "cluster" in keys and "member" not in keys, name


def test_member_gauges_follow_the_reported_state(app: StatusApp) -> None:
    got = samples(app.respond(request("/metrics")).body.decode())
    c = "Supercluster#1"
    assert got[("rtpcluster_member_up", labels(cluster=c, member="RTPPROXY1"))] == 1
    assert got[("rtpcluster_member_up", labels(cluster=c, member="RTPPROXY3"))] == 0
    for status in ("ACTIVE", "SUSPENDED", "DRAINING"):
        value = got[
            ("rtpcluster_member_status", labels(cluster=c, member="RTPPROXY2", status=status))
        ]
        assert value == (1 if status == "SUSPENDED" else 0)
    assert got[("rtpcluster_member_sessions", labels(cluster=c, member="RTPPROXY1"))] == 500
    assert got[("rtpcluster_member_utilisation", labels(cluster=c, member="RTPPROXY1"))] == 0.125
    assert got[("rtpcluster_member_rtt_seconds", labels(cluster=c, member="RTPPROXY1"))] == 0.000123
    # RTPPROXY2 has no RTT yet: no sample rather than a made-up value
    assert ("rtpcluster_member_rtt_seconds", labels(cluster=c, member="RTPPROXY2")) not in got
    assert got[("rtpcluster_member_deferred_deletes", labels(cluster=c, member="RTPPROXY1"))] == 3
    dropped = "rtpcluster_member_deferred_deletes_dropped_total"
    assert got[(dropped, labels(cluster=c, member="RTPPROXY1"))] == 2
    assert got[("rtpcluster_reply_cache_entries", labels(cluster=c))] == 5
    assert got[("rtpcluster_calls_tracked", labels(cluster=c))] == 9


def test_counters_are_read_at_scrape_time(app: StatusApp, source: FakeSource) -> None:
    app.respond(request("/metrics"))  # creates the counters
    c = "Supercluster#1"
    cluster = source.cluster_counters[c]
    cluster.commands["U"]["ok"] += 7
    cluster.new_calls_placed += 4
    cluster.new_calls_failover += 1
    cluster.broadcast_not_found += 2
    cluster.retransmits += 3
    for seconds in (0.00015, 0.00015, 0.004):
        cluster.latency.observe(seconds)
    member_counters = source.member_counters[(c, "RTPPROXY1")]
    member_counters.commands["timeout"] += 6
    member_counters.state_changed(True)
    got = samples(app.respond(request("/metrics")).body.decode())
    assert got[("rtpcluster_commands_total", labels(cluster=c, op="U", result="ok"))] == 7
    assert got[("rtpcluster_commands_total", labels(cluster=c, op="D", result="ok"))] == 0
    assert got[("rtpcluster_new_calls_total", labels(cluster=c, result="placed"))] == 4
    assert got[("rtpcluster_new_calls_total", labels(cluster=c, result="failover"))] == 1
    assert got[("rtpcluster_new_calls_total", labels(cluster=c, result="refused"))] == 0
    assert got[("rtpcluster_broadcast_lookups_total", labels(cluster=c, result="not_found"))] == 2
    assert got[("rtpcluster_retransmits_total", labels(cluster=c))] == 3
    bucket = "rtpcluster_command_duration_seconds_bucket"
    assert got[(bucket, labels(cluster=c, le="0.0001"))] == 0
    assert got[(bucket, labels(cluster=c, le="0.0002"))] == 2
    assert got[(bucket, labels(cluster=c, le="0.005"))] == 3
    assert got[(bucket, labels(cluster=c, le="+Inf"))] == 3
    assert got[("rtpcluster_command_duration_seconds_count", labels(cluster=c))] == 3
    key = labels(cluster=c, member="RTPPROXY1", result="timeout")
    assert got[("rtpcluster_member_commands_total", key)] == 6
    key = labels(cluster=c, member="RTPPROXY1")
    assert got[("rtpcluster_member_state_changes_total", key)] == 1
    assert got[("rtpcluster_member_last_change_seconds", key)] == member_counters.last_change


def test_no_label_carries_a_value_from_outside_the_fixed_sets(app: StatusApp) -> None:
    """Label names are fixed; values are names from the config or fixed words."""
    got = samples(app.respond(request("/metrics")).body.decode())
    allowed = {"cluster", "member", "op", "result", "status", "le", "version"}
    for name, label_set in got:
        if name.startswith("rtpcluster_"):
            assert {key for key, _ in label_set} <= allowed, name


def openmetrics_body(app: StatusApp) -> tuple[str, str]:
    accept = b"application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    response = app.respond(request("/metrics", headers=[(b"accept", accept)]))
    return response.content_type, response.body.decode()


def test_openmetrics_when_the_scraper_asks_for_it(app: StatusApp) -> None:
    content_type, text = openmetrics_body(app)
    assert content_type.startswith("application/openmetrics-text")
    assert text.endswith("# EOF\n")
    names: Iterator[str] = (f.name for f in openmetrics_families(text))
    assert "rtpcluster_member_up" in set(names)


def test_session_store_families_are_read_at_scrape_time(app: StatusApp, source: FakeSource) -> None:
    got = samples(app.respond(request("/metrics")).body.decode())
    assert got[("rtpcluster_session_store_up", labels())] == 1
    assert got[("rtpcluster_session_store_shared", labels())] == 0
    counters = source.store_counters
    counters.store_up = 0
    counters.writes_queued, counters.writes_dropped, counters.writes_written = 9, 2, 6
    counters.reads_hit, counters.reads_miss, counters.reads_error = 4, 3, 1
    counters.outages = 1
    for seconds in (0.0005, 0.003, 0.003, 7.0):
        counters.record_bind_delay(seconds)
    got = samples(app.respond(request("/metrics")).body.decode())
    assert got[("rtpcluster_session_store_up", labels())] == 0
    writes = "rtpcluster_session_store_writes_total"
    assert got[(writes, labels(result="queued"))] == 9
    assert got[(writes, labels(result="dropped"))] == 2
    assert got[(writes, labels(result="written"))] == 6
    assert got[(writes, labels(result="coalesced"))] == 0
    reads = "rtpcluster_session_store_reads_total"
    assert [got[(reads, labels(result=r))] for r in ("hit", "miss", "error")] == [4, 3, 1]
    assert got[("rtpcluster_session_store_outages_total", labels())] == 1
    delay = "rtpcluster_session_store_bind_delay_seconds"
    assert got[(delay + "_bucket", labels(le="0.001"))] == 1
    assert got[(delay + "_bucket", labels(le="0.005"))] == 3
    assert got[(delay + "_bucket", labels(le="5.0"))] == 3
    assert got[(delay + "_bucket", labels(le="+Inf"))] == 4
    assert got[(delay + "_count", labels())] == 4
    assert got[(delay + "_sum", labels())] == pytest.approx(7.0065)
