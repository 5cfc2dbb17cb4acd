"""A real Prometheus server (Debian package ``prometheus``) scraping rtpcluster.

What it proves: Prometheus accepts our exposition (it negotiates OpenMetrics), the
target is healthy, ``rtpcluster_member_up`` as Prometheus stores it follows a member
that is killed, the shipped alert rules load and the member-down alert goes pending,
and every query of the shipped Grafana dashboard is valid PromQL over our metrics.
"""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MemberFactory
from tests.integration.observe_harness import get, require_program, rtpcluster_process
from testsupport import free_port, stop_process, wait_until

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "config" / "rtpcluster-alerts.yml"
DASHBOARD = REPO / "config" / "grafana-dashboard.json"

PROMETHEUS_CONFIG = """global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files: ["{alerts}"]
scrape_configs:
  - job_name: rtpcluster
    static_configs:
      - targets: ["127.0.0.1:{port}"]
"""


class Prometheus:
    def __init__(self, binary: str, workdir: Path, target_port: int) -> None:
        self.port = free_port(socket.SOCK_STREAM)
        config = workdir / "prometheus.yml"
        config.write_text(PROMETHEUS_CONFIG.format(port=target_port, alerts=ALERTS))
        self.log = workdir / "prometheus.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?" + urllib.parse.urlencode(params)
        status, body = get(url)
        assert status == 200, body
        document = json.loads(body)
        assert document["status"] == "success"
        return document["data"]

    def member_up(self) -> dict[str, str]:
        """member -> the value of rtpcluster_member_up as Prometheus has it now."""
        result = self.api("query", query='rtpcluster_member_up{cluster="c1"}')["result"]
        return {series["metric"]["member"]: series["value"][1] for series in result}

    def rules(self) -> list[dict[str, Any]]:
        groups = self.api("rules")["groups"]
        return [rule for group in groups for rule in group["rules"]]

    def alerts(self, name: str) -> list[dict[str, Any]]:
        return [a for a in self.api("alerts")["alerts"] if a["labels"]["alertname"] == name]

    def ready(self) -> bool:
        try:
            return get(f"http://127.0.0.1:{self.port}/-/ready", timeout=1)[0] == 200
        except OSError:
            return False

    def stop(self) -> None:
        stop_process(self.process, grace=20)


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
        prometheus = Prometheus(prometheus_binary, tmp_path, cluster.http_port)
        try:
            wait_until(prometheus.ready, "Prometheus to be ready")
            up = wait_until(
                lambda: (got := prometheus.member_up()) == {"m0": "1", "m1": "1"} and got,
                "Prometheus to store rtpcluster_member_up of both members",
            )
            assert up == {"m0": "1", "m1": "1"}
            [target] = prometheus.api("targets")["activeTargets"]
            assert target["health"] == "up" and target["lastError"] == ""

            rules = wait_until(
                lambda: (
                    (got := prometheus.rules()) and all(r["health"] == "ok" for r in got) and got
                ),
                "the alert rules to be evaluated",
            )
            assert len(rules) == 7
            assert prometheus.alerts("RtpclusterMemberDown") == []

            proxies[0].kill()
            wait_until(
                lambda: prometheus.member_up() == {"m0": "0", "m1": "1"},
                "Prometheus to see m0 down",
            )
            [alert] = wait_until(
                lambda: prometheus.alerts("RtpclusterMemberDown"), "the member-down alert"
            )
            assert alert["labels"]["member"] == "m0" and alert["state"] in ("pending", "firing")
            assert prometheus.alerts("RtpclusterNoMemberTakingCalls") == []  # m1 still takes them
            for expr in dashboard_queries():
                assert isinstance(prometheus.api("query", query=expr)["result"], list), expr
            build = prometheus.api("query", query="rtpcluster_build_info")["result"]
            assert build and build[0]["value"][1] == "1"
        finally:
            prometheus.stop()
        assert cluster.stop() == 0


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
