"""Running in the background: pidfile, detaching, the log file and its reopening.

The process that the operator (or an init script) starts stays until the detached
service reports that it is up, or why it is not, and exits with that outcome: a service
that cannot bind its sockets fails the start visibly instead of dying in the log.

Output of the detached process (logging included, which writes to ``sys.stderr``) goes
to the log file through file descriptors 1 and 2, so reopening the log after a rotation
is one ``dup2`` of a freshly opened file over both, and nothing that holds ``sys.stderr``
needs to know.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import resource
import select
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime

log = logging.getLogger(__name__)

DEFAULT_PIDFILE = "/var/run/rtp_cluster.pid"
DEFAULT_LOGFILE = "/var/log/rtp_cluster.log"
LOG_MODE = 0o640
STARTUP_TIMEOUT = 60.0

_READY = b"ready\n"

PLAIN_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Attributes a log call may pass as ``extra=`` to say which cluster, member or call a
# line is about; the JSON format gives them their own keys.
LOG_CONTEXT = ("cluster", "member", "call_id")


class DaemonError(Exception):
    """The daemon cannot start; the message says why."""


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the context given.

    ``time`` is UTC ISO 8601 with milliseconds; an exception's traceback goes into
    ``exception`` as one string, so a record never spans lines.
    """

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in LOG_CONTEXT:
            value = record.__dict__.get(key)
            if value is not None:
                document[key] = value if isinstance(value, int | float | bool) else str(value)
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            document["exception"] = record.exc_text
        return json.dumps(document, ensure_ascii=False)


def configure_logging(level: str, log_format: str = "plain") -> None:
    """Send log records to stderr (the log file in daemon mode) in ``plain`` or ``json``."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonLogFormatter())
    else:
        handler.setFormatter(logging.Formatter(PLAIN_LOG_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def read_pid(path: str) -> int | None:
    """The pid in ``path``, or None when there is no such file or no number in it."""
    try:
        with open(path, encoding="ascii", errors="replace") as file:
            text = file.read().strip()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise DaemonError(f"pidfile {path}: {err.strerror}") from None
    return int(text) if text.isdigit() and int(text) > 0 else None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process, but alive
    return True


def running_pid(path: str) -> int | None:
    """The live process the pidfile names, or None when it is absent or stale."""
    pid = read_pid(path)
    if pid is None or pid == os.getpid() or not pid_alive(pid):
        return None
    return pid


def write_pidfile(path: str, pid: int) -> None:
    """Write ``pid`` atomically (a reader never sees an empty file)."""
    temporary = f"{path}.{pid}.tmp"
    try:
        with open(temporary, "w", encoding="ascii") as file:
            file.write(f"{pid}\n")
        os.replace(temporary, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise DaemonError(f"pidfile {path}: {err.strerror}") from None


def remove_pidfile(path: str, pid: int) -> None:
    """Remove the pidfile if it still names ``pid`` (a successor may have replaced it)."""
    with contextlib.suppress(OSError, DaemonError):
        if read_pid(path) == pid:
            os.unlink(path)


def raise_descriptor_limit() -> int:
    """Raise the soft limit on open files to the hard one; the limit now in force.

    Every control and admin connection holds a descriptor. The usual soft limit of
    1,024 is a default for interactive shells; the hard one is what the administrator
    (``LimitNOFILE=`` in the systemd unit) granted the service.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        log.debug("open file limit: %d (the hard limit)", soft)
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError) as err:  # an infinite hard limit above the kernel's cap
        log.debug("open file limit stays %d: cannot raise it to %s: %s", soft, hard, err)
        return soft
    log.debug("open file limit raised from %d to %d", soft, hard)
    return int(hard)


def open_log(path: str) -> int:
    """Open the log file for appending, creating it; returns the descriptor."""
    try:
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, LOG_MODE)
    except OSError as err:
        raise DaemonError(f"log file {path}: {err.strerror}") from None


def redirect_output(path: str) -> None:
    """Point stdout and stderr (descriptors 1 and 2) at the log file ``path``."""
    fd = open_log(path)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


@dataclass
class Daemon:
    """One daemonised run: check, detach, report readiness, reopen the log, clean up."""

    pidfile: str
    logfile: str
    _report_fd: int | None = field(default=None, repr=False)
    _pid: int | None = field(default=None, repr=False)

    def check_startable(self) -> None:
        """Refuse when the pidfile names a live process or the log cannot be written."""
        pid = running_pid(self.pidfile)
        if pid is not None:
            raise DaemonError(f"already running as pid {pid} (pidfile {self.pidfile})")
        os.close(open_log(self.logfile))

    def detach(self) -> None:
        """Become a daemon. Only the detached process returns from this.

        The calling process waits for :meth:`ready` or :meth:`fail` from the detached
        one and exits 0 or 1 accordingly (printing the failure on its stderr).
        """
        read_end, write_end = os.pipe()
        if os.fork() > 0:
            os.close(write_end)
            os._exit(_await_report(read_end, self.logfile))
        os.close(read_end)
        os.setsid()
        if os.fork() > 0:
            os._exit(0)  # the session leader goes; its child can never regain a tty
        os.chdir("/")
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        redirect_output(self.logfile)
        self._report_fd = write_end
        self._pid = os.getpid()
        try:
            write_pidfile(self.pidfile, self._pid)
        except DaemonError as err:
            self.fail(str(err))
            raise

    def reopen_log(self) -> None:
        """Reopen the log file (after logrotate renamed it): new lines go to a new file."""
        try:
            redirect_output(self.logfile)
        except DaemonError as err:  # keep writing to the old file rather than stop
            log.error("cannot reopen the log: %s", err)
            return
        log.info("log file %s reopened", self.logfile)

    def ready(self) -> None:
        """Tell the waiting starter that the service is up."""
        self._report(_READY)

    def fail(self, message: str) -> None:
        """Tell the waiting starter why the service did not come up."""
        self._report(message.encode("utf-8", errors="replace") + b"\n")

    def _report(self, data: bytes) -> None:
        if self._report_fd is None:
            return
        with contextlib.suppress(OSError):
            os.write(self._report_fd, data)
        with contextlib.suppress(OSError):
            os.close(self._report_fd)
        self._report_fd = None

    def cleanup(self) -> None:
        """Remove our pidfile; called on the way out of the detached process."""
        if self._pid is not None and self._pid == os.getpid():
            remove_pidfile(self.pidfile, self._pid)


def _await_report(read_end: int, logfile: str) -> int:
    """In the starting process: wait for the detached one's verdict; the exit code."""
    chunks: list[bytes] = []
    with os.fdopen(read_end, "rb", buffering=0) as pipe:
        while True:
            readable, _, _ = select.select([pipe], [], [], STARTUP_TIMEOUT)
            if not readable:
                sys.stderr.write(
                    f"rtpcluster: no word from the daemon within {STARTUP_TIMEOUT:g} s; "
                    f"see {logfile}\n"
                )
                return 1
            data = pipe.read(4096)
            if not data:
                break
            chunks.append(data)
    report = b"".join(chunks)
    if report == _READY:
        return 0
    message = report.decode("utf-8", errors="replace").strip()
    sys.stderr.write(
        f"rtpcluster: {message or f'the daemon exited during startup; see {logfile}'}\n"
    )
    return 1
