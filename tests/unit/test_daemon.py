"""Daemon helpers: pidfile handling, detaching, startup report, log reopening.

The detaching tests run a small program in a child process that daemonises with
:class:`rtpcluster.daemon.Daemon` and serves SIGUSR1/SIGTERM itself, so they do not
depend on the service. The whole ``rtpcluster serve`` daemon is tested in
``tests/integration/test_daemon_serve.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rtpcluster.daemon import (
    Daemon,
    DaemonError,
    read_pid,
    remove_pidfile,
    running_pid,
    write_pidfile,
)
from testsupport import gone, wait_until

DAEMON_PROGRAM = """
import signal, sys, trio
from rtpcluster.daemon import Daemon

daemon = Daemon(pidfile=sys.argv[1], logfile=sys.argv[2])
daemon.check_startable()
daemon.detach()
if sys.argv[3] == "fail":
    daemon.fail("cannot bind: address in use")
    sys.exit(1)

async def main():
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGUSR1) as signals:
        print("started", flush=True)
        daemon.ready()
        async for signum in signals:
            if signum == signal.SIGUSR1:
                daemon.reopen_log()
                print("after reopen", flush=True)
            else:
                return

import logging
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
try:
    trio.run(main)
finally:
    daemon.cleanup()
"""


@pytest.fixture
def paths(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    pidfile, logfile = tmp_path / "d.pid", tmp_path / "d.log"
    yield pidfile, logfile
    pid = read_pid(str(pidfile))
    if pid is not None and not gone(pid):  # a failed test leaves no daemon behind
        os.kill(pid, signal.SIGKILL)


def start_daemon(
    pidfile: Path, logfile: Path, mode: str = "run"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", DAEMON_PROGRAM, str(pidfile), str(logfile), mode],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_detach_pidfile_reopen_and_stop(paths: tuple[Path, Path], tmp_path: Path) -> None:
    pidfile, logfile = paths
    started = start_daemon(pidfile, logfile)
    # the starter returns only once the daemon said it is ready
    assert started.returncode == 0, started.stderr
    assert started.stdout == "" and started.stderr == ""
    pid = read_pid(str(pidfile))
    assert pid is not None and not gone(pid)
    assert os.getsid(pid) != os.getsid(0)  # a session of its own
    assert os.readlink(f"/proc/{pid}/cwd") == "/"
    assert "started" in logfile.read_text()

    rotated = tmp_path / "d.log.1"
    logfile.rename(rotated)
    os.kill(pid, signal.SIGUSR1)
    wait_until(lambda: logfile.exists() and "after reopen" in logfile.read_text(), "a new log")
    assert "after reopen" not in rotated.read_text()
    assert f"log file {logfile} reopened" in logfile.read_text()

    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not pidfile.exists(), "the pidfile to be removed")
    wait_until(lambda: gone(pid), "the daemon to exit")


def test_startup_failure_reaches_the_starter(paths: tuple[Path, Path]) -> None:
    pidfile, logfile = paths
    started = start_daemon(pidfile, logfile, mode="fail")
    assert started.returncode == 1
    assert started.stderr == "rtpcluster: cannot bind: address in use\n"


def test_refuses_when_the_pidfile_names_a_live_process(paths: tuple[Path, Path]) -> None:
    pidfile, logfile = paths
    with subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    ) as other:
        try:
            pidfile.write_text(f"{other.pid}\n")
            with pytest.raises(DaemonError, match=f"already running as pid {other.pid}"):
                Daemon(str(pidfile), str(logfile)).check_startable()
        finally:
            assert other.stdin is not None
            other.stdin.close()


def test_stale_pidfile_does_not_block(paths: tuple[Path, Path]) -> None:
    pidfile, logfile = paths
    with subprocess.Popen([sys.executable, "-c", "pass"]) as finished:
        finished.wait()
    pidfile.write_text(f"{finished.pid}\n")
    assert running_pid(str(pidfile)) is None
    Daemon(str(pidfile), str(logfile)).check_startable()
    assert logfile.exists()


def test_unwritable_log_is_refused_before_detaching(tmp_path: Path) -> None:
    daemon = Daemon(str(tmp_path / "d.pid"), str(tmp_path / "no-dir" / "d.log"))
    with pytest.raises(DaemonError, match=r"log file .*no-dir/d\.log: No such file"):
        daemon.check_startable()


def test_pidfile_helpers(tmp_path: Path) -> None:
    path = str(tmp_path / "p.pid")
    assert read_pid(path) is None
    write_pidfile(path, 4242)
    assert Path(path).read_text() == "4242\n"
    assert read_pid(path) == 4242
    remove_pidfile(path, 999)  # not ours: left alone
    assert read_pid(path) == 4242
    remove_pidfile(path, 4242)
    assert not Path(path).exists()
    Path(path).write_text("garbage")
    assert read_pid(path) is None
    assert running_pid(path) is None


def test_own_pid_in_the_pidfile_is_not_another_instance(tmp_path: Path) -> None:
    path = tmp_path / "p.pid"
    path.write_text(f"{os.getpid()}\n")
    assert running_pid(str(path)) is None
