"""Processes the benchmark starts: RTPproxy members and the cluster, each its own PID.

Every process is started here, remembered, and stopped by its PID (never by name):
:class:`Procs` is a context manager whose exit stops whatever is still running, also
after an error or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from xml.sax.saxutils import escape

from benchmarks.loadgen import MemberRange

ROOT = Path(__file__).resolve().parent.parent


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ask(target: str, command: str, timeout: float = 0.5) -> str | None:
    """One command to a control socket (udp: with a cookie, unix: one per connection)."""
    kind, _, rest = target.partition(":")
    try:
        if kind == "unix":
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(timeout)
                s.connect(rest)
                s.sendall(command.encode())
                chunks = []
                while chunk := s.recv(4096):
                    chunks.append(chunk)
                return b"".join(chunks).decode().strip()
        host, _, port = rest.rpartition(":")
        family = socket.AF_INET6 if kind == "udp6" else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.connect((host.strip("[]"), int(port)))
            cookie = f"probe{os.getpid()}_{time.monotonic_ns()}"
            s.send(f"{cookie} {command}".encode())
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                got_cookie, _, reply = s.recv(4096).decode().partition(" ")
                if got_cookie == cookie:
                    return reply.strip()
    except OSError:
        return None
    return None


def wait_answers(target: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> bool:
    """Poll ``V`` until the control socket answers ``20040107`` (or ``timeout`` passes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        if ask(target, "V", 0.3) == "20040107":
            return True
        time.sleep(0.05)
    return False


def cpu_seconds(pid: int | None) -> float:
    """CPU time (user + system) a process has used so far; 0.0 if it is gone."""
    import psutil  # type: ignore[import-untyped,unused-ignore]  # only the run needs it

    if pid is None:
        return 0.0
    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return float(t.user + t.system)


def _stop_pid(proc: subprocess.Popen[bytes]) -> None:
    """Stop a child we started, by its PID: SIGCONT (if stopped), SIGTERM, then SIGKILL."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGCONT)
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(3.0)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(3.0)


class _ControlSockets:
    """Control addresses and pid of a process on a UDP port (and maybe a unix path)."""

    port: int
    unix_path: Path | None
    proc: subprocess.Popen[bytes] | None

    @property
    def udp(self) -> str:
        return f"udp:127.0.0.1:{self.port}"

    @property
    def unix(self) -> str | None:
        return f"unix:{self.unix_path}" if self.unix_path else None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None


@dataclass
class RtpproxyProcess(_ControlSockets):
    """A real RTPproxy from rtp-io in its own subprocess (``python -m benchmarks.member``)."""

    name: str
    port: int  # udp control port on 127.0.0.1
    rtp: MemberRange
    workdir: Path
    unix_path: Path | None = None
    ttl: int = 600
    proc: subprocess.Popen[bytes] | None = None
    nofile: int = 0

    def start(self, timeout: float = 15.0) -> None:
        if self.unix_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.unix_path.unlink()
        argv = [sys.executable, "-m", "benchmarks.member", "--control", self.udp]
        if self.unix is not None:
            argv += ["--control", self.unix]
        argv += ["--port-min", str(self.rtp.lo), "--port-max", str(self.rtp.hi)]
        argv += ["--ttl", str(self.ttl)]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(self.workdir / f"{self.name}.log", "ab"),  # noqa: SIM115
            cwd=self.workdir,
            env=env,
            start_new_session=True,  # a Ctrl-C of the run reaches it only through us
        )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline().decode() if ready else ""
        if not line.startswith("READY") or not wait_answers(self.udp, timeout, self.proc):
            self.stop()
            raise RuntimeError(f"RTPproxy {self.name} did not start: {self.log_tail()}")
        self.nofile = int(line.split("nofile=")[1]) if "nofile=" in line else 0

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            text = (self.workdir / f"{self.name}.log").read_text(errors="replace")
            return text[-400:].replace(str(self.workdir), "<tmp>")
        return ""

    def signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL, like a crashed RTPproxy; reaped at once."""
        if self.proc is not None:
            self.signal(signal.SIGKILL)
            self.proc.wait(5.0)

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.stdin is not None:
                with contextlib.suppress(OSError):
                    self.proc.stdin.close()
            _stop_pid(self.proc)
            if self.proc.stdout is not None:
                self.proc.stdout.close()


def cluster_config(
    port: int, members: list[RtpproxyProcess], extra_listen: list[str], name: str = "bench"
) -> str:
    """The XML config: a udp control socket (plus ``<listen>`` endpoints), the members."""
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        "<rtp_cluster_config>",
        "  <rtp_cluster>",
        f"    <name>{escape(name)}</name>",
        "    <protocol>udp</protocol>",
        f"    <address>127.0.0.1:{port}</address>",
    ]
    out += [f"    <listen>{escape(spec)}</listen>" for spec in extra_listen]
    for m in members:
        out += [
            "    <rtpproxy>",
            f"      <name>{escape(m.name)}</name>",
            "      <protocol>udp</protocol>",
            f"      <address>127.0.0.1:{m.port}</address>",
            "      <weight>100</weight>",
            "      <capacity>100000</capacity>",
            "      <status>active</status>",
            "    </rtpproxy>",
        ]
    out += ["  </rtp_cluster>", "</rtp_cluster_config>"]
    return "\n".join(out) + "\n"


@dataclass
class ClusterProcess(_ControlSockets):
    """``python -m rtpcluster serve --foreground`` with a config written to ``workdir``."""

    workdir: Path
    members: list[RtpproxyProcess]
    port: int
    unix_path: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        extra = [self.unix] if self.unix is not None else []
        cfg = self.workdir / "cluster.xml"
        cfg.write_text(cluster_config(self.port, self.members, extra))
        log = open(self.workdir / "cluster.log", "ab")  # noqa: SIM115
        argv = [sys.executable, "-m", "rtpcluster", "serve", "--foreground"]
        argv += ["-c", str(cfg), "-s", str(self.workdir / "admin.sock")]
        argv += ["--log-level", "warning"]
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.workdir
        )
        ok = wait_answers(self.udp, timeout, self.proc)
        if ok and self.unix is not None:
            ok = wait_answers(self.unix, 5.0, self.proc)
        if not ok:
            self.stop()
            raise RuntimeError(f"cluster did not answer V: {self.log_tail()}")

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            text = (self.workdir / "cluster.log").read_text(errors="replace")
            lines = [ln for ln in text.strip().splitlines() if ln.strip()][-3:]
            return " | ".join(lines)[-400:].replace(str(self.workdir), "<tmp>")
        return ""

    def stop(self) -> None:
        if self.proc is not None:
            _stop_pid(self.proc)


class Procs:
    """Owns every process of a run; stops all of them on exit."""

    def __init__(self) -> None:
        self.members: list[RtpproxyProcess] = []
        self.clusters: list[ClusterProcess] = []

    def __enter__(self) -> Procs:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for c in self.clusters:
            with contextlib.suppress(Exception):
                c.stop()
        for m in self.members:
            with contextlib.suppress(Exception):
                m.stop()
