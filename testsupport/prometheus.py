"""A real Prometheus server (Debian package ``prometheus``) scraping targets on loopback.

For the observability tests and the benchmark row that measures rtpcluster while it is
scraped. It runs in its own directory (configuration and TSDB), listens on a free
loopback port, and is stopped by its PID.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testsupport.ports import free_port
from testsupport.processes import stop_process
from testsupport.wait import wait_until

START_TIMEOUT = 60.0  # seconds until /-/ready; about 1 s on an idle machine
STOP_GRACE = 20.0  # seconds from SIGTERM to SIGKILL; it writes its TSDB head first

CONFIG = """global:
  scrape_interval: {interval}s
  scrape_timeout: {interval}s
  evaluation_interval: {interval}s
rule_files: {rules}
scrape_configs:
  - job_name: {job}
    static_configs:
      - targets: {targets}
"""


def find_prometheus() -> str | None:
    """The ``prometheus`` program, or None (Debian installs it in /usr/bin)."""
    return shutil.which("prometheus")


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """Status and body of a GET; an HTTP error status is returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return int(reply.status), reply.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@dataclass
class PrometheusServer:
    """Prometheus scraping ``targets`` (``host:port`` each) every ``interval`` seconds.

    ``rule_files``: alerting/recording rules to load. The log goes to
    ``<workdir>/prometheus.log``.
    """

    binary: str
    workdir: Path
    targets: Sequence[str]
    interval: float = 1.0
    rule_files: Sequence[Path] = ()
    job: str = "rtpcluster"
    port: int = field(default_factory=lambda: free_port(socket.SOCK_STREAM))
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "prometheus.log"

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start it; returns once it says it is ready (``/-/ready``)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        config.write_text(
            CONFIG.format(
                interval=f"{self.interval:g}",
                rules=json.dumps([str(path) for path in self.rule_files]),
                job=self.job,
                targets=json.dumps(list(self.targets)),
            )
        )
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        try:
            wait_until(self.ready, self._not_ready, timeout=timeout, interval=0.1)
        except BaseException:  # not ready in time, or it exited: stopped, by its PID
            self.stop()
            raise

    def _not_ready(self) -> str:
        tail = self.log_path.read_text(errors="replace")[-400:] if self.log_path.exists() else ""
        return f"Prometheus on port {self.port} to be ready: {tail}"

    def ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"Prometheus exited with {self.process.returncode}")
        try:
            return http_get(self.url + "/-/ready", timeout=1)[0] == 200
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        """The ``data`` of ``/api/v1/<path>``; an error status or answer is an AssertionError."""
        url = f"{self.url}/api/v1/{path}?" + urllib.parse.urlencode(params)
        status, body = http_get(url)
        assert status == 200, body
        document = json.loads(body)
        assert document["status"] == "success", document
        return document["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The result vector of an instant query."""
        result: list[dict[str, Any]] = self.api("query", query=expr)["result"]
        return result

    def scraping(self) -> bool:
        """True once it has scraped every target successfully (its service discovery
        hands the targets to the scraper about 5 s after the start)."""
        targets = self.api("targets")["activeTargets"]
        return len(targets) == len(self.targets) and all(t["health"] == "up" for t in targets)

    def stop(self) -> None:
        """Stop it by its PID (SIGTERM, SIGKILL after STOP_GRACE)."""
        process, self.process = self.process, None
        if process is not None:
            stop_process(process, grace=STOP_GRACE)
