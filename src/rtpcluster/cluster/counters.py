"""Counters of what the cluster did, kept as plain integers for the hot path.

The front, the Outcomes and the Member bump them inline (``counters.retransmits += 1``,
one ``replied`` per reply); nothing here locks or formats per command. ``/metrics``
reads them at scrape time, on the same trio thread, so a reader never sees a half-done
update. Every label value is fixed in advance (the ops of the protocol, the result
words below): a call-id or anything a client sent never becomes a label.

Where each one is counted (once; a counter of an outcome is bumped by its method):

* every reply a client gets, in :class:`~rtpcluster.cluster.front.CommandFront` (the
  one place every reply passes, datagram or stream): ``ClusterCounters.replied``, which
  bumps ``commands[op][result]`` by the reply's result (``ok``; ``timeout`` for E997;
  ``error`` for any other ``E`` reply, parse errors included, op ``-`` when the op is
  unknown) and observes the seconds from arrival to reply. A ``D`` answered ``0`` after
  its member timed out (the delete is deferred) is ``ok`` here. A datagram dropped
  unanswered (over the in-flight bounds, or absorbed while its first copy is in flight)
  counts nothing;
* a UDP retransmit answered from the reply cache, in the front too: ``retransmits``, and
  ``replied`` with result ``cached`` (the body is not parsed again for its op). So the
  histogram's count is the sum of ``commands``;
* every command sent to a member, in the :class:`~rtpcluster.cluster.outcomes.Outcomes`
  method of its outcome: ``MemberCounters.commands[result]`` of that member: ``ok`` (a
  reply), ``error`` (an ``E`` reply), ``timeout`` (no reply in time, or the member could
  not be reached). A new call that failed over counts on each member tried; a broadcast
  on each member asked. Heartbeats and deferred deletes (health) are not counted;
* a new call (a ``U`` the Router places), in ``Outcomes.call_placed`` and
  ``call_refused``: ``new_calls_placed`` when the first member picked took it,
  ``new_calls_failover`` when a later one did after the first stayed silent,
  ``new_calls_refused`` when none did (E998, E999, E997 with every member tried silent,
  or the member's own ``E`` reply);
* a command for a call no member is known to hold, asked of every online member, in
  ``Outcomes.learned``: ``broadcast_found`` when exactly one had it,
  ``broadcast_not_found`` otherwise;
* a member going online or offline (``Member.online`` changing: probing and offline
  are offline, online and draining online), in ``Member._change``:
  ``MemberCounters.state_changed(online)``.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from typing import Final

from rtpcluster.protocol import E_MEMBER_TIMEOUT, error_code

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


def reply_result(reply: str) -> str:
    """The result label of a reply a client gets: ``ok``, ``timeout`` (E997), ``error``."""
    if reply[:1] != "E":  # nearly every reply: one slice and one comparison
        return "ok"
    code = error_code(reply)
    if code is None:
        return "ok"
    return "timeout" if code == E_MEMBER_TIMEOUT else "error"


def member_result(reply: str) -> str:
    """The result label of a member's reply: ``error`` for an ``E`` reply, else ``ok``."""
    if reply[:1] != "E" or error_code(reply) is None:
        return "ok"
    return "error"


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
        # commands[op][result]. Every pair is there from the start, so a rate() has a zero
        # to start from and an increment has no missing-key branch. Two lookups by str
        # (their hashes are cached) take 49 ns; one by an (op, result) tuple, hashed anew
        # each time, 89 ns.
        self.commands: dict[str, dict[str, int]] = {
            op: dict.fromkeys(COMMAND_RESULTS, 0) for op in COMMAND_OPS
        }
        self.latency = LatencyHistogram()
        self.new_calls_placed = 0
        self.new_calls_failover = 0
        self.new_calls_refused = 0
        self.broadcast_found = 0
        self.broadcast_not_found = 0
        self.retransmits = 0

    def replied(self, op: str, reply: str, seconds: float) -> None:
        """A client got ``reply`` to a command of ``op``, ``seconds`` after it arrived.

        Once per command: ``latency.observe`` is written out here, saving a call.
        """
        self.commands[op]["ok" if reply[:1] != "E" else reply_result(reply)] += 1
        latency = self.latency
        latency.counts[bisect_left(latency.bounds, seconds)] += 1
        latency.total_seconds += seconds

    def replied_from_cache(self, op: str, seconds: float) -> None:
        """A retransmit of a command of ``op`` got the reply cached for its first copy."""
        self.retransmits += 1
        self.commands[op]["cached"] += 1
        self.latency.observe(seconds)


class MemberCounters:
    """What one member did, and when its online state last changed.

    ``last_change`` is wall-clock time (what ``rtpcluster_member_last_change_seconds``
    exports, for ``time() - ...`` in PromQL); downtime is measured on the monotonic clock
    so a clock step does not bend it. A member starts offline (probing) at creation.
    """

    __slots__ = (
        "_changed_at",
        "_offline_since",
        "commands",
        "downtime_before",
        "last_change",
        "state_changes",
    )

    def __init__(self) -> None:
        self.commands: dict[str, int] = dict.fromkeys(MEMBER_RESULTS, 0)
        self.state_changes = 0
        self.last_change = time.time()
        self._changed_at = time.monotonic()  # the same moment, for last_change_age
        self.downtime_before = 0.0  # seconds offline in periods that have ended
        self._offline_since: float | None = self._changed_at

    def state_changed(self, online: bool) -> None:
        """The member went online (True) or offline (False)."""
        now = time.monotonic()
        self.state_changes += 1
        self.last_change = time.time()
        self._changed_at = now
        if online and self._offline_since is not None:
            self.downtime_before += now - self._offline_since
            self._offline_since = None
        elif not online and self._offline_since is None:
            self._offline_since = now

    def last_change_age(self) -> float:
        """Seconds since the last online/offline change (or the member's creation)."""
        return time.monotonic() - self._changed_at

    def downtime(self) -> float:
        """Seconds offline since the member was created, the current period included."""
        if self._offline_since is None:
            return self.downtime_before
        return self.downtime_before + time.monotonic() - self._offline_since
