"""``rtpcluster serve`` as a daemon and in the foreground, with a real RTPproxy member."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from rtpcluster.admin.client import send_command
from rtpcluster.daemon import read_pid
from tests.conftest import MemberFactory
from testsupport import (
    FAST_PROBES,
    MemberEntry,
    cluster_xml,
    free_port,
    gone,
    run_rtpcluster,
    wait_until,
)


def config_xml(listen_port: int, members: list[tuple[str, str]]) -> str:
    entries = [MemberEntry(name, address) for name, address in members]
    return cluster_xml("c1", listen_port, entries, settings=FAST_PROBES)


class Files:
    def __init__(self, tmp_path: Path) -> None:
        self.config = tmp_path / "rtp_cluster.xml"
        self.socket = tmp_path / "admin.sock"
        self.pidfile = tmp_path / "rtp_cluster.pid"
        self.logfile = tmp_path / "rtp_cluster.log"

    def serve_args(self) -> list[str]:
        return [
            "serve",
            "-c",
            str(self.config),
            "-s",
            str(self.socket),
            "-P",
            str(self.pidfile),
            "-L",
            str(self.logfile),
        ]


@pytest.fixture
def files(tmp_path: Path) -> Iterator[Files]:
    files = Files(tmp_path)
    yield files
    pid = read_pid(str(files.pidfile))
    if pid is not None and not gone(pid):  # never leave a daemon behind
        os.kill(pid, signal.SIGKILL)


def ls(files: Files) -> str:
    lines, ok = send_command(str(files.socket), "ls", 10.0)
    assert ok, lines
    return "\n".join(lines)


def test_daemon_lifecycle(rtpproxy: MemberFactory, files: Files, tmp_path: Path) -> None:
    member, second = rtpproxy(), rtpproxy()
    address = member.control.removeprefix("udp:")
    port = free_port()
    files.config.write_text(config_xml(port, [("m0", address)]))

    started = run_rtpcluster(*files.serve_args())
    assert started.returncode == 0, started.stderr
    pid = read_pid(str(files.pidfile))
    assert pid is not None and not gone(pid)
    wait_until(lambda: "online members = 1 (1 active" in ls(files), "the member online")

    # a second start is refused while the first runs
    again = run_rtpcluster(*files.serve_args())
    assert again.returncode == 1
    assert f"already running as pid {pid}" in again.stderr

    # SIGHUP reloads the edited file
    files.config.write_text(config_xml(port, [("m0", address), ("m1", second.address)]))
    os.kill(pid, signal.SIGHUP)
    wait_until(lambda: "active members = 2" in ls(files), "the reload on SIGHUP")

    # SIGUSR1 reopens the log after a rotation
    rotated = tmp_path / "rtp_cluster.log.1"
    files.logfile.rename(rotated)
    os.kill(pid, signal.SIGUSR1)
    wait_until(files.logfile.exists, "a new log file")
    wait_until(lambda: "reopened" in files.logfile.read_text(), "a line in the new log")
    assert "started" in rotated.read_text()

    ctl = run_rtpcluster("ctl", "-s", str(files.socket), "ls", "c1")
    assert ctl.returncode == 0
    assert "        name = m1" in ctl.stdout

    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not files.pidfile.exists(), "the pidfile to be removed")
    wait_until(lambda: gone(pid), "the daemon to exit")
    assert not files.socket.exists()
    assert "rtpcluster stopped" in files.logfile.read_text()


def test_daemon_that_cannot_bind_fails_the_start(files: Files) -> None:
    files.config.write_text(config_xml(free_port(), []))
    blocker = files.socket  # a regular file where the admin socket should go
    blocker.write_text("not a socket")
    started = run_rtpcluster(*files.serve_args())
    assert started.returncode == 1
    assert started.stderr.strip().endswith("exists and is not a socket")
    wait_until(lambda: not files.pidfile.exists(), "the pidfile to be removed")


def test_foreground_socket_failure_is_one_line(files: Files) -> None:
    files.config.write_text(config_xml(free_port(), []))
    files.socket.write_text("not a socket")
    started = run_rtpcluster(*files.serve_args(), "--foreground")
    assert started.returncode == 1
    assert started.stderr.splitlines()[-1].endswith("exists and is not a socket")
    assert "Traceback" not in started.stderr


@pytest.mark.parametrize("foreground", [True, False])
def test_a_busy_control_port_fails_the_start_in_one_line(files: Files, foreground: bool) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        files.config.write_text(config_xml(port, []))
        started = run_rtpcluster(*files.serve_args(), *(["--foreground"] if foreground else []))
    assert started.returncode == 1
    reason = f"c1: cannot listen on udp:127.0.0.1:{port}: Address already in use"
    assert started.stderr.splitlines()[-1] == f"rtpcluster: {reason}"
    assert "Traceback" not in started.stderr
    assert "Exceptions from Trio nursery" not in started.stderr
    assert not files.socket.exists()  # nothing started: the admin socket comes after
    if not foreground:
        wait_until(lambda: not files.pidfile.exists(), "the pidfile to be removed")
        assert "Exceptions from Trio nursery" not in files.logfile.read_text()
