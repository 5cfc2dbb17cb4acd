"""A real Prometheus server (Debian package ``prometheus``) scraping rtpcluster.

What it proves: Prometheus accepts our exposition (it negotiates OpenMetrics), the
target is healthy, ``rtpcluster_member_up`` as Prometheus stores it follows a member
that is killed, the shipped alert rules load and the member-down alert goes pending,
and every query of the shipped Grafana dashboard is valid PromQL over our metrics.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MemberFactory
from tests.integration.observe_harness import require_program, rtpcluster_process
from testsupport import wait_until
from testsupport.prometheus import PrometheusServer

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "config" / "rtpcluster-alerts.yml"
DASHBOARD = REPO / "config" / "grafana-dashboard.json"
MONITORING = REPO / "docs" / "monitoring.md"


def member_up(prometheus: PrometheusServer) -> dict[str, str]:
    """member -> the value of rtpcluster_member_up as Prometheus has it now."""
    result = prometheus.query('rtpcluster_member_up{cluster="c1"}')
    return {series["metric"]["member"]: series["value"][1] for series in result}


def rules(prometheus: PrometheusServer) -> list[dict[str, Any]]:
    groups = prometheus.api("rules")["groups"]
    return [rule for group in groups for rule in group["rules"]]


def alerts(prometheus: PrometheusServer, name: str) -> list[dict[str, Any]]:
    return [a for a in prometheus.api("alerts")["alerts"] if a["labels"]["alertname"] == name]


@pytest.fixture
def prometheus_binary() -> str:
    return require_program("prometheus", "prometheus")


def test_prometheus_scrapes_member_up_and_sees_a_killed_member(
    prometheus_binary: str, rtpproxy: MemberFactory, tmp_path: Path
) -> None:
    proxies = [rtpproxy(), rtpproxy()]
    with rtpcluster_process([("m0", proxies[0]), ("m1", proxies[1])]) as cluster:
        cluster.start()
        cluster.wait_online()
        prometheus = PrometheusServer(
            prometheus_binary, tmp_path, [f"127.0.0.1:{cluster.http_port}"], rule_files=[ALERTS]
        )
        prometheus.start()
        try:
            up = wait_until(
                lambda: (got := member_up(prometheus)) == {"m0": "1", "m1": "1"} and got,
                "Prometheus to store rtpcluster_member_up of both members",
            )
            assert up == {"m0": "1", "m1": "1"}
            [target] = prometheus.api("targets")["activeTargets"]
            assert target["health"] == "up" and target["lastError"] == ""

            evaluated = wait_until(
                lambda: (
                    (got := rules(prometheus)) and all(r["health"] == "ok" for r in got) and got
                ),
                "the alert rules to be evaluated",
            )
            assert len(evaluated) == 7
            assert alerts(prometheus, "RtpclusterMemberDown") == []

            proxies[0].kill()
            wait_until(
                lambda: member_up(prometheus) == {"m0": "0", "m1": "1"},
                "Prometheus to see m0 down",
            )
            [alert] = wait_until(
                lambda: alerts(prometheus, "RtpclusterMemberDown"), "the member-down alert"
            )
            assert alert["labels"]["member"] == "m0" and alert["state"] in ("pending", "firing")
            assert alerts(prometheus, "RtpclusterNoMemberTakingCalls") == []  # m1 still takes them
            for expr in [*dashboard_queries(), *documented_queries()]:
                assert isinstance(prometheus.query(expr), list), expr
            build = prometheus.query("rtpcluster_build_info")
            assert build and build[0]["value"][1] == "1"
        finally:
            prometheus.stop()
        assert cluster.stop() == 0


def documented_queries() -> list[str]:
    """The PromQL of the "Useful queries" block in docs/monitoring.md."""
    text = MONITORING.read_text()
    block = text.split("Useful queries:\n\n```\n", 1)[1].split("```", 1)[0]
    queries = [line for line in block.splitlines() if line and not line.startswith("#")]
    assert len(queries) >= 3
    return queries


def dashboard_queries() -> list[str]:
    """Every panel query of the Grafana dashboard, its variables filled in."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$cluster", ".*").replace("$__rate_interval", "1m")
            queries.append(expr)
    assert len(queries) >= 10
    return queries
