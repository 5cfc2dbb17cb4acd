"""When a cluster reads the shared session store for an offer of a call it does not know.

With a shared store (Redis/Valkey), a command for a call the local table does not know is
read from the store before anything else, so that a call made through another rtpcluster
is continued on its member without a broadcast lookup. For every command but an offer
(``U`` without to-tag) that read is always made: without it the command would cost a
broadcast, and one read is far cheaper.

An offer of a call-id this process does not know is nearly always a new call. Reading
each one would cost every new call a read: about 0.12 ms of this process's CPU through
coredis on the 2-core test machine (benchmarks/session_store.py), before the offer can be
sent, which is more than the cluster's whole work on a command. But an offer can also be
one of a call made before: sent again after a restart of this process, or through the
other process of a pair while the call rings. Placed anew, such a call ends up on two
members. So an offer is read from the store only while this cluster's table may be
missing calls made elsewhere:

- for one idle timeout after the cluster's first offer: a restarted process, or the
  standby of a keepalived pair whose first commands come when the floating address moves
  to it (calls made before are only in the store; the local table would have known them
  for one idle timeout);
- for one idle timeout after a read of this cluster last named the member of a call the
  local table did not know (Outcomes tells :meth:`OfferReads.found_elsewhere`): calls
  are coming from another front end (a failover, or an active/active pair whose dialogs
  cross). Each cluster keeps its own window: a cluster whose calls all come through this
  process reads no offer after its first idle timeout, whatever the others see.

Otherwise the offer is placed at once, as with the memory store.
"""

from __future__ import annotations

from collections.abc import Callable

import trio


class OfferReads:
    """Whether an offer of an unknown call is read from the store now; O(1), no I/O."""

    __slots__ = ("_clock", "_idle_timeout", "_open_until")

    def __init__(
        self, idle_timeout: Callable[[], float], clock: Callable[[], float] = trio.current_time
    ) -> None:
        """``idle_timeout``: the cluster's setting as it is now (a reload may change it)."""
        self._idle_timeout = idle_timeout
        self._clock = clock
        self._open_until: float | None = None  # set at the first offer

    def wanted(self) -> bool:
        """Called for each offer of a call the local table does not know."""
        now = self._clock()
        if self._open_until is None:
            self._open_until = now + self._idle_timeout()
        return now < self._open_until

    def found_elsewhere(self) -> None:
        """A read named the member of a call this cluster did not know: open the window."""
        self._open_until = self._clock() + self._idle_timeout()

    def open_for(self) -> float | None:
        """Seconds the window stays open (None before the first offer), for ``ls``."""
        if self._open_until is None:
            return None
        return max(0.0, self._open_until - self._clock())
