"""``rtpcluster serve`` as its own process with ``--http``, and the external programs the
observability tests drive (a Prometheus server, headless Chromium).

The programs come from Debian (``.ci/install-observe-deps``). Where one is missing the
test skips saying which, unless RTPCLUSTER_OBSERVE_REQUIRED=1 is set (CI): then it fails.
Readiness of rtpcluster is its own systemd notification: testsupport's
:class:`~testsupport.RtpclusterProcess` passes a ``$NOTIFY_SOCKET`` it listens on and
waits for ``READY=1``.
"""

from __future__ import annotations

import json
import socket
import tempfile
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from testsupport import (
    FAST_PROBES,
    MemberEntry,
    RtpclusterProcess,
    RtpProxy,
    cluster_xml,
    free_port,
    programs,
    wait_until,
)

REQUIRED = "RTPCLUSTER_OBSERVE_REQUIRED"


def require_program(program: str, package: str) -> str:
    """The path of ``program``, or skip (fail under CI) naming its Debian package."""
    path = programs.find_program(program)
    if path is None:
        missing(f"{program} (Debian package {package})")
    return path


def missing(what: str) -> NoReturn:
    """Skip (fail under CI): ``what`` is not installed here."""
    programs.missing(f"{what} is missing; run .ci/install-observe-deps as root", REQUIRED)


def get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@dataclass
class ObservedCluster(RtpclusterProcess):
    """``rtpcluster serve --foreground`` with the HTTP endpoint on ``http_port``."""

    members: dict[str, RtpProxy] = field(default_factory=dict)
    http_port: int = field(default_factory=lambda: free_port(socket.SOCK_STREAM))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(
        self,
        *args: str,
        config: str | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 20.0,
        http_flag: bool = True,
    ) -> dict[str, str]:
        """Start it (``--http`` on ``http_port`` unless told not to); its READY=1."""
        http = ["--http", f"127.0.0.1:{self.http_port}"] if http_flag else []
        return super().start(*args, *http, config=config, env=env, timeout=timeout)

    def clusters(self) -> dict[str, Any]:
        status, body = get(self.url + "/api/v1/clusters")
        assert status == 200
        document: dict[str, Any] = json.loads(body)
        return document

    def member_online(self, name: str) -> bool:
        [cluster] = self.clusters()["clusters"]
        return any(m["name"] == name and m["online"] for m in cluster["members"])

    def wait_online(self) -> None:
        for name in self.members:
            wait_until(lambda name=name: self.member_online(name), f"member {name} online")

    def new_calls(self, count: int, prefix: str = "call") -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(5)
            for i in range(count):
                client.sendto(
                    f"k{i} U {prefix}{i}@test 127.0.0.1 4000 f{i}".encode(),
                    ("127.0.0.1", self.udp_port),
                )
                reply = client.recv(1000).decode()
                assert reply.split()[1][0] != "E", reply


@contextmanager
def short_dir() -> Iterator[Path]:
    """A short temporary directory: unix socket paths hold only 107 bytes."""
    with tempfile.TemporaryDirectory(prefix="rtpc-obs-") as name:
        yield Path(name)


@contextmanager
def rtpcluster_process(
    members: list[tuple[str, RtpProxy]], http_in_xml: int | None = None
) -> Iterator[ObservedCluster]:
    """The cluster ``c1`` of ``members``, not started yet; stopped by its PID at the end."""
    with short_dir() as workdir:
        cluster = ObservedCluster(workdir, free_port(), members=dict(members))
        http = None if http_in_xml is None else f"127.0.0.1:{http_in_xml}"
        entries = [MemberEntry.of(name, proxy, capacity=50) for name, proxy in members]
        config = cluster_xml("c1", cluster.udp_port, entries, settings=FAST_PROBES, http=http)
        cluster.config_path.write_text(config)
        try:
            yield cluster
        finally:
            cluster.stop()
