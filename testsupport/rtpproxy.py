"""A real RTPproxy (rtp-io) in a subprocess, for tests, the end-to-end rig and benchmarks.

A process of its own so that a test can kill it (SIGKILL) or hang it (SIGSTOP) like a
real member. Each one is given its own RTP port range, so the port in a reply tells
which member served a command.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from testsupport.control import ControlSocket, ask
from testsupport.processes import stop_process

CHILD = Path(__file__).with_name("rtpproxy_child.py")
START_TIMEOUT = 15.0  # seconds for rtp-io to load and bind; about 0.2 s on an idle machine
STOP_GRACE = 3.0  # seconds from SIGTERM to SIGKILL


@dataclass
class RtpProxy:
    """One RTPproxy. ``control`` is its control socket as our config writes it.

    ``more_controls``: further control sockets (``-s`` each); ``extra``: further
    RTPproxy options (``-n``, ``-T`` ...). With a ``workdir`` the process runs there
    and its log goes to ``<workdir>/<name>.log``; without one its log is dropped.
    """

    control: str
    port_min: int
    port_max: int
    extra: list[str] = field(default_factory=list)
    name: str = "rtpproxy"
    workdir: Path | None = None
    more_controls: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    nofile: int = 0  # its open-files limit, as the child reported it

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def kind(self) -> str:
        return self.control.split(":", 1)[0]

    @property
    def address(self) -> str:
        """The member's ``<address>`` in our config (without the kind)."""
        return self.control.split(":", 1)[1]

    @property
    def port(self) -> int:
        """The port of ``control`` (for udp and tcp kinds)."""
        return ControlSocket.parse(self.control).port

    @property
    def rtpproxy_spec(self) -> str:
        """The ``-s`` argument: RTPproxy takes IPv6 unbracketed, port after the last colon."""
        return _spec(self.control)

    @property
    def log_path(self) -> Path | None:
        return None if self.workdir is None else self.workdir / f"{self.name}.log"

    def control_of(self, kind: str) -> str | None:
        """Its first control socket of ``kind`` (``udp``, ``unix`` ...), if it has one."""
        for control in (self.control, *self.more_controls):
            if control.split(":", 1)[0] == kind:
                return control
        return None

    def owns_port(self, port: int) -> bool:
        return self.port_min <= port <= self.port_max

    def arguments(self) -> list[str]:
        """RTPproxy's command line: its sockets, loopback only, foreground, its ports."""
        args: list[str] = []
        for control in (self.control, *self.more_controls):
            args += ["-s", _spec(control)]
        args += ["-l", "127.0.0.1", "-F", "-d", "err"]
        args += ["-m", str(self.port_min), "-M", str(self.port_max)]
        return [*args, *self.extra]

    def start(self, workdir: Path | None = None, timeout: float = START_TIMEOUT) -> None:
        """Start it (again, after :meth:`kill` or :meth:`stop`); returns once it runs."""
        if workdir is not None:
            self.workdir = workdir
        for control in (self.control, *self.more_controls):
            kind, _, path = control.partition(":")
            if kind in ("unix", "cunix"):  # left behind by a killed predecessor
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        log = subprocess.DEVNULL
        if self.workdir is not None:
            self.workdir.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as files:
            if self.log_path is not None:
                log = files.enter_context(self.log_path.open("ab")).fileno()
            self.process = subprocess.Popen(
                [sys.executable, "-P", str(CHILD), *self.arguments()],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=self.workdir,
                start_new_session=True,  # a Ctrl-C reaches it only through its parent
            )
        line = self._ready_line(timeout)
        if not line.startswith("READY"):
            self.stop()
            raise RuntimeError(
                f"RTPproxy {self.name} on {self.control} did not start{self._log_tail()}"
            )
        self.nofile = int(line.split("nofile=")[1])

    def _ready_line(self, timeout: float) -> str:
        """The child's first line: READY, or nothing when it died or took too long."""
        assert self.process is not None and self.process.stdout is not None
        readable, _, _ = select.select([self.process.stdout], [], [], timeout)
        return self.process.stdout.readline().decode() if readable else ""

    def _log_tail(self) -> str:
        """The end of its log (why it did not start), if it has one."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return ": " + self.log_path.read_text(errors="replace")[-400:].strip()

    def ask(self, command: str, timeout: float = 1.0) -> str | None:
        """A command straight to this RTPproxy over ``control`` (see ``control.ask``)."""
        return ask(self.control, command, timeout)

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig``; for SIGSTOP, return once the kernel has stopped it.

        kill(2) returns before the signal is acted on: on another core the member may
        still answer a few commands sent right after. waitid(WSTOPPED) blocks until the
        child is stopped; WNOWAIT leaves that state for nobody else to reap.
        """
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, sig)
            if sig == signal.SIGSTOP:
                os.waitid(os.P_PID, self.process.pid, os.WSTOPPED | os.WNOWAIT)

    def hang(self) -> None:
        self.signal(signal.SIGSTOP)

    def unhang(self) -> None:
        self.signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL, like a crashed RTPproxy; reaped at once."""
        process, self.process = self.process, None
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
            _close_pipes(process)

    def stop(self) -> None:
        """Stop it for good (also when hung): its stdin closes, then SIGTERM, SIGKILL."""
        process, self.process = self.process, None
        if process is not None:
            if process.stdin is not None:
                with contextlib.suppress(OSError):
                    process.stdin.close()
            stop_process(process, grace=STOP_GRACE)
            _close_pipes(process)


def _spec(control: str) -> str:
    return control.replace("[", "").replace("]", "")


def _close_pipes(process: subprocess.Popen[bytes]) -> None:
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
