"""``--state-file PATH``: hand the session table over across a graceful restart.

At stop the service writes every binding (cluster, call-id, member name, seconds since
the call's last activity); at start it reads them back, dropping those whose age plus
the time the process was away reaches the cluster's idle timeout, and removes the file
(a state is handed over once; a later crash must not bring back stale bindings).

Format, UTF-8 text, one binding per line, tab-separated (call-ids, cluster and member
names never hold tabs or line breaks: the protocol splits on white space)::

    rtpcluster-sessions 1 <unix time written>
    <cluster>\t<call-id>\t<member>\t<age seconds>

Writing is atomic: a new file created next to the target with O_EXCL|O_NOFOLLOW (mode
0600), fsynced, then renamed over it, so a reader sees the old file or the new one and
a symlink planted at the temporary name is never followed. Reading refuses a symlink,
anything but a regular file (a FIFO would block the start), a file of another user
(but root), more than ``max_bytes`` and
lines longer than ``MAX_LINE``. Every problem is a :class:`StateFileError` with one line
naming the file (and the line); never a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import secrets
import stat
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO

MAGIC = "rtpcluster-sessions"
VERSION = "1"
MAX_LINE = 4096  # bytes; a call-id is at most a few hundred
DEFAULT_MAX_BYTES = 256 * 1024 * 1024  # ~2.5 million bindings of ~100 bytes


class StateFileError(Exception):
    """A state file that cannot be written or read; ``str(err)`` is one line."""


@dataclass
class LoadedState:
    """What a state file gave: ``tables[cluster][call_id] = (member, age seconds)``."""

    tables: dict[str, dict[str, tuple[str, float]]] = field(default_factory=dict)
    loaded: int = 0
    expired: int = 0  # older than their cluster's idle timeout
    unknown_cluster: int = 0  # for a cluster not configured now


# cluster -> (call-id, member name, seconds since the last activity)
Snapshot = Mapping[str, Iterable[tuple[str, str, float]]]


def write_state_file(
    path: str | os.PathLike[str], snapshot: Snapshot, *, now: Callable[[], float] = time.time
) -> int:
    """Write ``snapshot`` atomically to ``path``; returns the number of bindings written.

    Bindings that cannot be written as one line (a tab or line break in a field, an
    empty field, an age that is not a finite number >= 0) are left out.
    """
    target = os.fspath(path)
    directory = os.path.dirname(target) or "."
    name = os.path.basename(target)
    temporary = os.path.join(directory, f".{name}.{secrets.token_hex(6)}.tmp")
    lines = [f"{MAGIC} {VERSION} {now():.3f}\n"]
    for cluster, bindings in snapshot.items():
        if not _writable(cluster):
            continue
        for call_id, member, age in bindings:
            if _writable(call_id) and _writable(member) and math.isfinite(age) and age >= 0:
                lines.append(f"{cluster}\t{call_id}\t{member}\t{age:.3f}\n")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        descriptor = os.open(temporary, flags, 0o600)
    except OSError as exc:
        raise StateFileError(f"{target}: cannot write: {exc.strerror or exc}") from None
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="\n") as stream:
            stream.writelines(lines)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, target)
        _sync_directory(directory)
    except OSError as exc:
        _remove_quietly(temporary)
        raise StateFileError(f"{target}: cannot write: {exc.strerror or exc}") from None
    return len(lines) - 1


def read_state_file(
    path: str | os.PathLike[str],
    idle_timeouts: Mapping[str, float],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    now: Callable[[], float] = time.time,
    consume: bool = True,
) -> LoadedState:
    """The bindings of ``path`` still younger than their cluster's idle timeout.

    ``idle_timeouts`` maps each configured cluster to its idle timeout; bindings of
    other clusters are counted and dropped. A missing file is an empty state (a first
    start). With ``consume`` the file is removed after a successful read.
    """
    source = os.fspath(path)
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        descriptor = os.open(source, flags)
    except FileNotFoundError:
        return LoadedState()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StateFileError(f"{source}: is a symbolic link; refused") from None
        raise StateFileError(f"{source}: cannot read: {exc.strerror or exc}") from None
    try:
        _check_file(os.fstat(descriptor), source, max_bytes)
    except BaseException:
        os.close(descriptor)
        raise
    with os.fdopen(descriptor, "rb") as stream:
        try:
            state = _parse(stream, source, idle_timeouts, max_bytes, now())
        except OSError as exc:
            raise StateFileError(f"{source}: cannot read: {exc.strerror or exc}") from None
    if consume:
        _remove_quietly(source)
    return state


def _check_file(info: os.stat_result, source: str, max_bytes: int) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise StateFileError(f"{source}: not a regular file; refused")
    if info.st_uid not in (0, os.geteuid()):
        # Another user's file (say in a shared directory) must not steer our calls.
        raise StateFileError(f"{source}: owned by uid {info.st_uid}, not by us; refused")
    if info.st_size > max_bytes:
        raise StateFileError(
            f"{source}: {info.st_size} bytes, more than the {max_bytes} allowed; refused"
        )


def _parse(
    stream: BinaryIO,
    source: str,
    idle_timeouts: Mapping[str, float],
    max_bytes: int,
    now: float,
) -> LoadedState:
    total = 0
    state = LoadedState()
    elapsed = 0.0
    number = 0
    while True:
        raw = stream.readline(MAX_LINE + 1)
        if not raw:
            break
        number += 1
        total += len(raw)
        where = f"{source}:{number}"
        if total > max_bytes:  # it grew while being read
            raise StateFileError(f"{source}: more than the {max_bytes} bytes allowed; refused")
        if len(raw) > MAX_LINE:
            raise StateFileError(f"{where}: line longer than {MAX_LINE} bytes")
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise StateFileError(f"{where}: not UTF-8 text") from None
        if number == 1:
            elapsed = _header(line.removesuffix("\n"), source, now)
        if not line.endswith("\n"):
            raise StateFileError(f"{where}: incomplete last line (file cut short?)")
        if number == 1:
            continue
        line = line[:-1]
        fields = line.split("\t")
        if len(fields) != 4 or not all(fields[:3]):
            raise StateFileError(
                f"{where}: expected cluster, call-id, member, age separated by tabs"
            )
        cluster, call_id, member, age_text = fields
        age = _number(age_text)
        if age is None or age < 0:
            raise StateFileError(f"{where}: age must be a number of seconds >= 0, got {age_text!r}")
        idle = idle_timeouts.get(cluster)
        if idle is None:
            state.unknown_cluster += 1
            continue
        age += elapsed
        if age >= idle:
            state.expired += 1
            continue
        state.tables.setdefault(cluster, {})[call_id] = (member, age)
        state.loaded += 1
    if number == 0:
        raise StateFileError(f"{source}: empty, not a session state file")
    return state


def _header(line: str, source: str, now: float) -> float:
    """Seconds since the file was written (0 if the clock went back)."""
    parts = line.split(" ")
    if len(parts) != 3 or parts[0] != MAGIC:
        raise StateFileError(f"{source}: not a session state file (first line {line[:60]!r})")
    if parts[1] != VERSION:
        raise StateFileError(f"{source}: format version {parts[1][:20]!r}, expected {VERSION}")
    written = _number(parts[2])
    if written is None:
        raise StateFileError(f"{source}:1: bad time written {parts[2][:40]!r}")
    return max(0.0, now - written)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _writable(text: str) -> bool:
    return bool(text) and not any(char in text for char in "\t\n\r")


def _sync_directory(directory: str) -> None:
    try:
        descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return  # the rename is done; durability of the directory entry is best effort
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
