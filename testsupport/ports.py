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

# Listener ports come from 10000 .. 19999: below the RTP blocks and below Linux's
# ephemeral range (32768 .. 60999 by default). A port the kernel handed out as "free"
# from the ephemeral range can be taken a moment later as the local port of any outgoing
# connection on the machine (a CI run saw `tcp:127.0.0.1:50180: Address already in use`
# that way); ports below it are only ever taken by someone binding them on purpose.
LISTEN_BASE = 10000
LISTEN_SIZE = 10000

_range_counter = itertools.count()
# Where the walk over LISTEN_BASE.. goes on: a PID-dependent start, so that two test runs
# on one machine rarely probe the same ports first.
_listen_next = [(os.getpid() * 7919) % LISTEN_SIZE]


def _binds(family: int, kind: int, host: str, port: int) -> bool:
    with socket.socket(family, kind) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
        return True


def free_port_block(size: int, align: int = 1, family: int = socket.AF_INET) -> int:
    """The first of ``size`` consecutive loopback ports, free for UDP and TCP alike.

    The first port is a multiple of ``align`` (sipp's media port must be even: RTP on
    it, RTCP on the next). Successive calls in one process never return overlapping
    ports: the walk moves on past each block it hands out, so two listeners of one test
    do not collide before either is bound.
    """
    host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    for _ in range(LISTEN_SIZE):
        offset = _listen_next[0] % LISTEN_SIZE
        first = LISTEN_BASE + offset
        first += -first % align
        if first + size > LISTEN_BASE + LISTEN_SIZE:  # would run past the end: wrap
            _listen_next[0] = 0
            continue
        _listen_next[0] = first + size - LISTEN_BASE
        ports = range(first, first + size)
        kinds = (socket.SOCK_DGRAM, socket.SOCK_STREAM)
        if all(_binds(family, kind, host, port) for port in ports for kind in kinds):
            return first
    raise RuntimeError(f"no free port on {host} in {LISTEN_BASE}..{LISTEN_BASE + LISTEN_SIZE - 1}")


def free_port(kind: int = socket.SOCK_DGRAM, family: int = socket.AF_INET) -> int:
    """A loopback port that nobody binds right now, for UDP and TCP alike.

    ``kind`` is kept for readability at the call sites: every port returned is free for
    both kinds, so a listener spec may use it as ``udp:`` or ``tcp:``.
    """
    del kind
    return free_port_block(1, family=family)


def next_port_range() -> tuple[int, int]:
    """The next RTP port block: (lowest, highest) port, both included."""
    slot = (next(_range_counter) + os.getpid()) % RANGE_SLOTS
    low = RANGE_BASE + slot * RANGE_SIZE
    return low, low + RANGE_SIZE - 1
