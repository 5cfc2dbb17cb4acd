"""Finding the external programs a test drives, or saying clearly why it cannot run."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from typing import NoReturn

import pytest


def find_program(name: str, *, override: str | None = None, dirs: Sequence[str] = ()) -> str | None:
    """The path of program ``name``, or None.

    ``override``: an environment variable that names the program explicitly (it must be
    executable); ``dirs``: searched after PATH (Debian puts daemons in /usr/sbin).
    """
    if override is not None and (explicit := os.environ.get(override)) is not None:
        return explicit if os.access(explicit, os.X_OK) else None
    path = os.pathsep.join([os.environ.get("PATH", ""), *dirs])
    return shutil.which(name, path=path)


def missing(message: str, required: str) -> NoReturn:
    """Skip the test saying what is missing; fail it instead where ``$required`` is 1 (CI)."""
    if os.environ.get(required) == "1":
        pytest.fail(f"{message} ({required}=1 is set)", pytrace=False)
    pytest.skip(message)
