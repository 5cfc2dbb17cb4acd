"""Where the admin ``save`` command may write, and writing there safely.

``save`` runs with the service's privileges on request of whoever reaches the admin
socket, so it must not become "write this text over any file": without a path it
writes the configuration file; with one, only a regular file (or a new one) inside a
directory the operator allowed at start (``--save-dir``, default the configuration
file's directory). Never over a symlink, socket, device or directory, never over a
socket of this process. The new file is written under a temporary name created with
``O_CREAT | O_EXCL | O_NOFOLLOW`` in the same directory, synced, then renamed over the
target: a reader sees the old file or the new one, and a symlink planted as the target
or the temporary name is replaced or refused, never followed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Sequence

from rtpcluster.admin.registry import CommandError
from rtpcluster.transport.unixsock import is_own_socket

NEW_FILE_MODE = 0o644  # a configuration holds no secrets; the old file's mode is kept


class SaveRefused(CommandError):
    """``save`` to this path is not allowed; the message names the path and why."""


def allowed_directories(config_path: str, save_dirs: Sequence[str]) -> tuple[str, ...]:
    """The real paths ``save PATH`` may write into (the config file's directory by default)."""
    given = save_dirs or [os.path.dirname(os.path.abspath(config_path))]
    return tuple(os.path.realpath(directory) for directory in given)


def check_save_dirs(save_dirs: Sequence[str]) -> None:
    """Refuse a ``--save-dir`` that is not an existing directory (ValueError says which)."""
    for directory in save_dirs:
        if not os.path.isdir(directory):
            raise ValueError(f"--save-dir {directory}: not an existing directory")


def save_target(path: str | None, config_path: str, allowed: Sequence[str]) -> str:
    """The file ``save [path]`` writes; :class:`SaveRefused` if it may not be written.

    A relative path is taken relative to the first allowed directory; ``..`` and
    symlinked directories are resolved before the check, so neither leads outside.
    """
    if path is None:
        # The file the operator started the service with (through a symlink to it, if
        # that is how it is installed).
        target = os.path.realpath(config_path)
        _check_file(target, config_path)
        return target
    joined = os.path.join(allowed[0], path)
    directory, name = os.path.split(joined)
    if name in ("", ".", ".."):
        raise SaveRefused(f"cannot save to {path}: not a file name")
    real_directory = os.path.realpath(directory)
    if not any(_inside(real_directory, root) for root in allowed):
        raise SaveRefused(
            f"cannot save to {path}: not inside an allowed directory "
            f"({', '.join(allowed)}; see serve --save-dir)"
        )
    target = os.path.join(real_directory, name)
    _check_file(target, path)
    return target


def write_file(target: str, data: bytes) -> None:
    """Replace ``target`` atomically with ``data``; :class:`SaveRefused` on failure."""
    directory, name = os.path.split(target)
    try:
        old = os.lstat(target)
    except FileNotFoundError:
        old = None
    temporary = os.path.join(directory, f".{name}.{secrets.token_hex(6)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(temporary, flags, 0o600)
    except OSError as err:
        raise SaveRefused(f"cannot save to {target}: {err.strerror or err}") from None
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, NEW_FILE_MODE if old is None else stat.S_IMODE(old.st_mode))
            if old is not None:
                with contextlib.suppress(PermissionError):  # keep the owner where we may
                    os.fchown(fd, old.st_uid, old.st_gid)
            os.fsync(fd)
        finally:
            os.close(fd)
        _check_file(target, target)  # once more, just before the rename
        os.rename(temporary, target)
    except SaveRefused:
        _remove(temporary)
        raise
    except OSError as err:
        _remove(temporary)
        raise SaveRefused(f"cannot save to {target}: {err.strerror or err}") from None
    with contextlib.suppress(OSError):  # the rename itself survives a crash
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _check_file(target: str, given: str) -> None:
    """Refuse anything at ``target`` but a regular file (nothing there is fine)."""
    try:
        mode = os.lstat(target).st_mode
    except FileNotFoundError:
        return
    except OSError as err:
        raise SaveRefused(f"cannot save to {given}: {err.strerror or err}") from None
    if stat.S_ISREG(mode):
        return
    if stat.S_ISLNK(mode):
        why = "is a symlink"
    elif is_own_socket(target):
        why = "is a socket of this service"
    elif stat.S_ISSOCK(mode):
        why = "is a socket"
    elif stat.S_ISDIR(mode):
        why = "is a directory"
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        why = "is a device"
    else:
        why = "is not a regular file"
    raise SaveRefused(f"cannot save to {given}: {why}")


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _inside(path: str, root: str) -> bool:
    return path == root or os.path.commonpath([path, root]) == root
