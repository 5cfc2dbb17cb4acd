"""A real redis-server for tests, started on a unix socket in a short temporary directory.

No persistence (``--save '' --appendonly no``), no TCP port (``--port 0``). Readiness is
the server's own "ready to accept connections" log line, read from its stdout by a
thread that keeps draining it (so a chatty server never blocks on a full pipe). Every
process is stopped by its PID.

``.ci/install-redis`` installs the Debian package. Where redis-server is missing the
tests that need it skip with a message, unless RTPCLUSTER_REDIS_REQUIRED=1 is set (CI).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from testsupport.programs import missing

REQUIRED_ENV = "RTPCLUSTER_REDIS_REQUIRED"
START_TIMEOUT = 10.0  # seconds for the ready line; a loaded 2-core machine takes < 1


def redis_server_binary() -> str:
    """The redis-server program, or a skip (a failure where CI requires it)."""
    found = shutil.which(os.environ.get("RTPCLUSTER_REDIS_SERVER", "redis-server"))
    if found is None:
        missing(
            "redis-server not found (Debian package redis-server; run .ci/install-redis)",
            REQUIRED_ENV,
        )
    return found


@dataclass(frozen=True)
class RedisTls:
    """A TLS port for the server: its certificate and key, and the CAs it takes client
    certificates from (``clients_need_certs``: Redis' ``tls-auth-clients yes``)."""

    port: int
    cert_file: Path
    key_file: Path
    ca_file: Path
    clients_need_certs: bool = False

    def args(self) -> list[str]:
        return [
            *("--tls-port", str(self.port)),
            *("--tls-cert-file", str(self.cert_file)),
            *("--tls-key-file", str(self.key_file)),
            *("--tls-ca-cert-file", str(self.ca_file)),
            *("--tls-auth-clients", "yes" if self.clients_need_certs else "no"),
        ]


class RedisServer:
    """One redis-server on ``socket``; start/stop/pause/resume it like an outage would.

    With ``tls`` it also listens for TLS on 127.0.0.1 at ``tls.port``.
    """

    def __init__(self, binary: str, directory: Path, tls: RedisTls | None = None) -> None:
        self.binary = binary
        self.directory = directory
        self.tls = tls
        self.socket = directory / "redis.sock"
        self.process: subprocess.Popen[str] | None = None
        self.log: list[str] = []
        self._drain: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}?db=0"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        assert self.process is None, "already running"
        args = [self.binary, "--port", "0", "--unixsocket", str(self.socket)]
        args += ["--unixsocketperm", "700", "--save", "", "--appendonly", "no"]
        args += ["--dir", str(self.directory), "--loglevel", "notice", "--logfile", ""]
        if self.tls is not None:
            args += ["--bind", "127.0.0.1", *self.tls.args()]
        process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.process = process
        ready = threading.Event()

        def drain() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                self.log.append(line.rstrip("\n"))
                if "ready to accept connections" in line:
                    ready.set()
            ready.set()  # it exited: stop waiting

        self._drain = threading.Thread(target=drain, daemon=True)
        self._drain.start()
        if not ready.wait(START_TIMEOUT) or process.poll() is not None:
            self.stop()
            raise RuntimeError("redis-server did not start: " + " | ".join(self.log[-5:]))

    def stop(self) -> None:
        """Stop it for good (SIGKILL also works on a paused server)."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        if self._drain is not None:
            self._drain.join(timeout=10)  # the pipe ends with the process
            self._drain = None
        if process.stdout is not None:
            process.stdout.close()
        self.socket.unlink(missing_ok=True)

    def cli(self, *args: str, timeout: float = 10.0) -> str:
        """One ``redis-cli`` command on the server's socket (Debian's redis-tools, which
        redis-server depends on); its raw output, newline removed."""
        program = shutil.which("redis-cli", path=os.path.dirname(self.binary)) or shutil.which(
            "redis-cli"
        )
        if program is None:
            raise RuntimeError("redis-cli not found (Debian package redis-tools)")
        done = subprocess.run(
            [program, "-s", str(self.socket), "--raw", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout.rstrip("\n")

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)
