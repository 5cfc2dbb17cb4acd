"""Counters of what the cluster did, kept as plain integers for the hot path.

The executors increment them inline (``counters.retransmits += 1``); nothing here locks,
allocates or formats per command. ``/metrics`` reads them at scrape time, on the same
trio thread, so a reader never sees a half-done update. Every label value is fixed in
advance (the ops of the protocol, the result words below): a call-id or anything a
client sent never becomes a label.

Which outcome bumps which counter (each once, where the executor finishes a command):

* every command answered: ``ClusterCounters.commands[(op, result)]`` with the result the
  client got (``ok``; ``timeout`` for E997; ``error`` for any other ``E`` reply, parse
  errors included, op ``-`` when the op is unknown), and ``latency.observe(seconds)``
  from arrival to reply. A ``D`` answered ``0`` after its member timed out (the delete
  is deferred) is ``ok`` here;
* every command sent to a member: ``MemberCounters.commands[result]`` of that member:
  ``ok`` (a reply), ``error`` (an ``E`` reply), ``timeout`` (none in time). A new call
  that failed over counts on each member tried; a broadcast on each member asked;
* a new call (``U`` without to-tag, for a call-id nobody holds): ``new_calls_placed``
  when the first member picked took it, ``new_calls_failover`` when a later one did after
  the first stayed silent, ``new_calls_refused`` when none did (E998, E999, or E997 with
  every member tried silent);
* a command for a call no member is known to hold, asked of every online member
  (``_find_owner``): ``broadcast_found`` when exactly one had it, ``broadcast_not_found``
  otherwise;
* a UDP retransmit answered from the reply cache: ``retransmits`` and
  ``commands[(op_label(body), "cached")]`` (the body is not parsed again for it); one
  absorbed while the first copy is in flight counts nothing;
* a member going online or offline: ``MemberCounters.state_changed(online)``.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from typing import Final

COMMAND_OPS: Final = (*"ULDPSRCQNXIGV", "-")
"""Op labels: the protocol's command letters; ``-`` for a command that is not one."""

_OP_OF_BYTE: Final = {ord(op): op for op in COMMAND_OPS[:-1]} | {
    ord(op.lower()): op for op in COMMAND_OPS[:-1]
}

COMMAND_RESULTS: Final = ("ok", "error", "timeout", "cached")
"""``ok``: a reply that is not an error; ``timeout``: E997, no member answered in time;
``error``: any other ``E`` reply; ``cached``: answered from the reply cache."""

MEMBER_RESULTS: Final = ("ok", "error", "timeout")

# Upper bounds (seconds) of the latency buckets: 0.1 ms to 1 s in 1-2-5 steps. A command
# on loopback takes 0.05-0.3 ms, one to a remote member a few ms; a member_timeout is at
# most about a second. Anything slower lands in +Inf.
LATENCY_BOUNDS: Final = (
    0.0001,
    0.0002,
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.5,
    1.0,
)


def op_label(body: bytes) -> str:
    """The op label of a command body from its first byte, without parsing it."""
    return _OP_OF_BYTE.get(body[0], "-") if body else "-"


class LatencyHistogram:
    """Fixed-bucket histogram: ``counts[i]`` observations with ``bounds[i-1] < s <= bounds[i]``.

    The last count is the +Inf bucket. One observation is one bisect over 13 bounds and
    two additions; the cumulative form Prometheus wants is built only at scrape time.
    """

    __slots__ = ("bounds", "counts", "total_seconds")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BOUNDS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total_seconds = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total_seconds += seconds

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, observations <= bound)`` per bucket, +Inf last."""
        out: list[tuple[float, int]] = []
        running = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


class ClusterCounters:
    """What one cluster did since it started."""

    __slots__ = (
        "broadcast_found",
        "broadcast_not_found",
        "commands",
        "latency",
        "new_calls_failover",
        "new_calls_placed",
        "new_calls_refused",
        "retransmits",
    )

    def __init__(self) -> None:
        # Every (op, result) is there from the start, so a rate() has a zero to start from
        # and an increment is a plain dict update with no missing-key branch.
        self.commands: dict[tuple[str, str], int] = {
            (op, result): 0 for op in COMMAND_OPS for result in COMMAND_RESULTS
        }
        self.latency = LatencyHistogram()
        self.new_calls_placed = 0
        self.new_calls_failover = 0
        self.new_calls_refused = 0
        self.broadcast_found = 0
        self.broadcast_not_found = 0
        self.retransmits = 0


class MemberCounters:
    """What one member did, and when its online state last changed.

    ``last_change`` is wall-clock time (what ``rtpcluster_member_last_change_seconds``
    exports, for ``time() - ...`` in PromQL); downtime is measured on the monotonic clock
    so a clock step does not bend it. A member starts offline (probing) at creation.
    """

    __slots__ = ("_offline_since", "commands", "downtime_before", "last_change", "state_changes")

    def __init__(self) -> None:
        self.commands: dict[str, int] = dict.fromkeys(MEMBER_RESULTS, 0)
        self.state_changes = 0
        self.last_change = time.time()
        self.downtime_before = 0.0  # seconds offline in periods that have ended
        self._offline_since: float | None = time.monotonic()

    def state_changed(self, online: bool) -> None:
        """The member went online (True) or offline (False)."""
        now = time.monotonic()
        self.state_changes += 1
        self.last_change = time.time()
        if online and self._offline_since is not None:
            self.downtime_before += now - self._offline_since
            self._offline_since = None
        elif not online and self._offline_since is None:
            self._offline_since = now

    def downtime(self) -> float:
        """Seconds offline since the member was created, the current period included."""
        if self._offline_since is None:
            return self.downtime_before
        return self.downtime_before + time.monotonic() - self._offline_since
