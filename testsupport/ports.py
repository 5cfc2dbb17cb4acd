"""Ports on loopback for the programs a test starts."""

from __future__ import annotations

import itertools
import os
import socket

# RTP port ranges for RTPproxies: RANGE_SLOTS blocks of RANGE_SIZE ports from RANGE_BASE
# (20000 .. 59999). Each proxy gets its own block, so the port in a reply tells which
# member served a command; the first slot depends on the PID, so that two test runs on
# one machine rarely start on the same block.
RANGE_SIZE = 2000
RANGE_BASE = 20000
RANGE_SLOTS = 20

_range_counter = itertools.count()


def free_port(kind: int = socket.SOCK_DGRAM, family: int = socket.AF_INET) -> int:
    """A port nobody on loopback uses right now (for a UDP or TCP listener)."""
    host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    with socket.socket(family, kind) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def next_port_range() -> tuple[int, int]:
    """The next RTP port block: (lowest, highest) port, both included."""
    slot = (next(_range_counter) + os.getpid()) % RANGE_SLOTS
    low = RANGE_BASE + slot * RANGE_SIZE
    return low, low + RANGE_SIZE - 1
