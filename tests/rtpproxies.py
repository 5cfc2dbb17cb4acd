"""Real RTPproxy members for tests: each one an rtp-io RTPproxy in its own process.

A process of its own so that a test can kill it (SIGKILL) or hang it (SIGSTOP) like a
real member. Each member gets its own RTP port range, so the port in a reply tells
which member served a command.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

# The child: start RTPproxy with the given arguments, say "ready", live until stdin closes.
_CHILD = """
import resource, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
import rtp.io
proxy = rtp.io.rtpproxy(extra_args=sys.argv[1:], modules=[])
sys.stdout.write("ready\\n")
sys.stdout.flush()
sys.stdin.read()
"""

_range_counter = itertools.count()
RANGE_SIZE = 2000
RANGE_BASE = 20000
RANGE_SLOTS = 20  # 20000 .. 60000


def free_port(kind: int = socket.SOCK_DGRAM, family: int = socket.AF_INET) -> int:
    """A port nobody on loopback uses right now (for a UDP or TCP listener)."""
    host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    with socket.socket(family, kind) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


@dataclass
class RtpProxy:
    """One running member. ``control`` is its endpoint as our config writes it."""

    control: str
    port_min: int
    port_max: int
    extra: list[str] = field(default_factory=list)
    process: subprocess.Popen[str] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def rtpproxy_spec(self) -> str:
        """The ``-s`` argument: RTPproxy takes IPv6 unbracketed, port after the last colon."""
        return self.control.replace("[", "").replace("]", "")

    @property
    def kind(self) -> str:
        return self.control.split(":", 1)[0]

    @property
    def address(self) -> str:
        """The member's ``<address>`` in our config (without the kind)."""
        return self.control.split(":", 1)[1]

    def owns_port(self, port: int) -> bool:
        return self.port_min <= port <= self.port_max

    def start(self, cwd: Path) -> None:
        args = ["-s", self.rtpproxy_spec, "-l", "127.0.0.1", "-F", "-d", "err"]
        args += ["-m", str(self.port_min), "-M", str(self.port_max), *self.extra]
        self.process = subprocess.Popen(
            [sys.executable, "-c", _CHILD, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=cwd,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if line.strip() != "ready":
            self.stop()
            raise RuntimeError(f"RTPproxy on {self.control} did not start")

    def stop(self) -> None:
        """Stop the member for good (also when it is hung)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                stream.close()

    def kill(self) -> None:
        self.stop()

    def hang(self) -> None:
        """SIGSTOP, and return once the kernel has stopped it.

        kill(2) returns before the signal is acted on: on another core the member may
        still answer a few commands sent right after. waitid(WSTOPPED) blocks until the
        child is stopped; WNOWAIT leaves that state for nobody else to reap.
        """
        os.kill(self.pid, signal.SIGSTOP)
        os.waitid(os.P_PID, self.pid, os.WSTOPPED | os.WNOWAIT)

    def unhang(self) -> None:
        os.kill(self.pid, signal.SIGCONT)


def next_port_range() -> tuple[int, int]:
    slot = (next(_range_counter) + os.getpid()) % RANGE_SLOTS
    low = RANGE_BASE + slot * RANGE_SIZE
    return low, low + RANGE_SIZE - 1
