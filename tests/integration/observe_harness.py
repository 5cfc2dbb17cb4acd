"""``rtpcluster serve`` as its own process with ``--http``, and the external programs the
observability tests drive (a Prometheus server, headless Chromium).

The programs come from Debian (``.ci/install-observe-deps``). Where one is missing the
test skips saying which, unless RTPCLUSTER_OBSERVE_REQUIRED=1 is set (CI): then it fails.
Readiness of rtpcluster is its own systemd notification: the harness passes a
``$NOTIFY_SOCKET`` it listens on and waits for ``READY=1``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from testsupport import RtpProxy, free_port

REQUIRED = "RTPCLUSTER_OBSERVE_REQUIRED"


def require_program(program: str, package: str) -> str:
    """The path of ``program``, or skip (fail under CI) naming its Debian package."""
    path = shutil.which(program)
    if path is not None:
        return path
    missing(f"{program} (Debian package {package})")
    raise AssertionError("unreachable")


def missing(what: str) -> None:
    message = f"{what} is missing; run .ci/install-observe-deps as root"
    if os.environ.get(REQUIRED) == "1":
        pytest.fail(f"{message} ({REQUIRED}=1 is set)", pytrace=False)
    pytest.skip(message)


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Poll another process until ``condition()`` is truthy (bounded); return that value.

    Used only for other processes (Prometheus, a browser), where there is no event to
    await."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def config_xml(
    control_port: int, members: list[tuple[str, RtpProxy]], http: str | None = None
) -> str:
    blocks = "".join(
        f"""
    <rtpproxy>
      <name>{name}</name>
      <protocol>{proxy.kind}</protocol>
      <address>{proxy.address}</address>
      <capacity>50</capacity>
    </rtpproxy>"""
        for name, proxy in members
    )
    http_element = f"\n  <http>{http}</http>" if http else ""
    return f"""<?xml version="1.0"?>
<rtp_cluster_config>{http_element}
  <rtp_cluster>
    <name>c1</name>
    <protocol>udp</protocol>
    <address>127.0.0.1:{control_port}</address>
    <heartbeat_interval>0.2</heartbeat_interval>
    <offline_probe_interval>0.2</offline_probe_interval>{blocks}
  </rtp_cluster>
</rtp_cluster_config>
"""


class NotifyListener:
    """systemd's side of $NOTIFY_SOCKET, blocking with a timeout."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(30)

    def message(self) -> dict[str, str]:
        data = self.sock.recv(4096).decode()
        return dict(line.split("=", 1) for line in data.split("\n"))

    def until(
        self, predicate: Callable[[dict[str, str]], bool], timeout: float = 30.0
    ) -> dict[str, str]:
        """The first notification ``predicate`` accepts, skipping others (bounded)."""
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            fields = self.message()
            if predicate(fields):
                return fields
            seen.append(fields)
        raise AssertionError(f"no such notification; the last ones: {seen[-5:]}")

    def close(self) -> None:
        self.sock.close()


class Rtpcluster:
    """One ``rtpcluster serve --foreground`` process with the HTTP endpoint on."""

    def __init__(
        self, workdir: Path, members: list[tuple[str, RtpProxy]], http_in_xml: int | None = None
    ) -> None:
        self.workdir = workdir
        self.members = dict(members)
        self.control_port = free_port()
        self.http_port = free_port(socket.SOCK_STREAM)
        self.admin = workdir / "admin.sock"
        self.config = workdir / "rtp_cluster.xml"
        http = None if http_in_xml is None else f"127.0.0.1:{http_in_xml}"
        self.config.write_text(config_xml(self.control_port, members, http))
        self.stderr = workdir / "rtpcluster.stderr"
        self.notify = NotifyListener(workdir / "notify.sock")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(
        self, *extra: str, env: dict[str, str] | None = None, http_flag: bool = True
    ) -> dict[str, str]:
        """Start it (``--http`` on ``http_port`` unless told not to); its READY=1."""
        args = [sys.executable, "-m", "rtpcluster", "serve", "--foreground"]
        args += ["-c", str(self.config), "-s", str(self.admin), *extra]
        if http_flag:
            args += ["--http", f"127.0.0.1:{self.http_port}"]
        environment = {**os.environ, "NOTIFY_SOCKET": str(self.notify.path), **(env or {})}
        with open(self.stderr, "wb") as stderr:
            self.process = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr, env=environment
            )
        return self.notify.until(lambda fields: fields.get("READY") == "1")

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

    def signal(self, signum: int) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signum)

    def exit_code(self) -> int:
        """Wait for the process to end by itself (after a signal already sent)."""
        process, self.process = self.process, None
        assert process is not None
        return process.wait(timeout=20)

    def stop(self) -> int:
        """SIGTERM and wait; the exit code."""
        process, self.process = self.process, None
        if process is None:
            return 0
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
        try:
            return process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
            raise

    def new_calls(self, count: int, prefix: str = "call") -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(5)
            for i in range(count):
                client.sendto(
                    f"k{i} U {prefix}{i}@test 127.0.0.1 4000 f{i}".encode(),
                    ("127.0.0.1", self.control_port),
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
) -> Iterator[Rtpcluster]:
    with short_dir() as workdir:
        cluster = Rtpcluster(workdir, members, http_in_xml)
        try:
            yield cluster
        finally:
            cluster.stop()
            cluster.notify.close()
