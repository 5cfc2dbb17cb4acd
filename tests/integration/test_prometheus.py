"""A real Prometheus server (Debian package ``prometheus``) scraping rtpcluster.

What it proves: Prometheus accepts our exposition (it negotiates OpenMetrics), the
target is healthy, and ``rtpcluster_member_up`` as Prometheus stores it follows a member
that is killed.
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
from tests.integration.observe_harness import (
    get,
    require_program,
    rtpcluster_process,
    wait_until,
)
from tests.rtpproxies import free_port

PROMETHEUS_CONFIG = """global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: rtpcluster
    static_configs:
      - targets: ["127.0.0.1:{port}"]
"""


class Prometheus:
    def __init__(self, binary: str, workdir: Path, target_port: int) -> None:
        self.port = free_port(socket.SOCK_STREAM)
        config = workdir / "prometheus.yml"
        config.write_text(PROMETHEUS_CONFIG.format(port=target_port))
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

    def ready(self) -> bool:
        try:
            return get(f"http://127.0.0.1:{self.port}/-/ready", timeout=1)[0] == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


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

            proxies[0].kill()
            wait_until(
                lambda: prometheus.member_up() == {"m0": "0", "m1": "1"},
                "Prometheus to see m0 down",
            )
            build = prometheus.api("query", query="rtpcluster_build_info")["result"]
            assert build and build[0]["value"][1] == "1"
        finally:
            prometheus.stop()
        assert cluster.stop() == 0
