"""The write queue of a remote session store: pure bookkeeping, no I/O, no trio.

Every write is keyed by its store key ``<prefix>:<cluster>:<call-id>``. The queue is an
OrderedDict from key to the latest write for it, oldest first:

- a write for a key already queued replaces it in place (coalesced): the store only
  ever needs the latest SET or DEL of a key, so an outage of any length costs at most
  one entry per call, and the final state is the one a sequential application of every
  write gives;
- the queue is bounded: when it is full the oldest entry is dropped and counted
  (``popitem(last=False)`` is O(1); a plain dict's first item is not, after many
  deletions);
- the writer takes a batch from the front; while it is in flight it stays readable
  (for lookups); if it fails it goes back to the front, except for keys written again
  meanwhile (the newer write wins).

Refreshes are limited per cluster with one dict per window of a quarter idle timeout:
``fresh`` maps the call-ids written in the current window to the member written. A
refresh of a fresh call with the same member is skipped; at the first write after the
window ends, the dict is replaced by an empty one. So an active call is written at most
once per window, and its key is rewritten before its TTL (the idle timeout) can run out
while it is active: two writes are never more than two windows (half the TTL) apart.
The cost is one clock read, one dict lookup and, in a new window, one dict store.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from rtpcluster.store.base import StoreCounters

# key -> (member or None for DEL, ttl seconds, first queued at, includes a bind)
Entry = tuple[str | None, int, float, bool]
Batch = list[tuple[str, Entry]]

DEFAULT_IDLE_TIMEOUT = 3600.0  # a cluster never configured gets SessionTable's default
MAX_FRESH = 1_000_000  # call-ids remembered per cluster and window; beyond: a new window


class ClusterKeys:
    """One cluster's key prefix, TTL and refresh window."""

    __slots__ = ("fresh", "key_prefix", "quarter", "ttl", "window_end")

    def __init__(self, store_prefix: str, cluster: str, idle_timeout: float) -> None:
        # ':' separates the parts of a key; escape it (and '%') in the cluster name so
        # cluster "a" + call "b:c" and cluster "a:b" + call "c" are different keys.
        escaped = cluster.replace("%", "%25").replace(":", "%3A")
        self.key_prefix = f"{store_prefix}:{escaped}:"
        self.ttl = 1
        self.quarter = 0.0
        self.set_idle_timeout(idle_timeout)
        self.fresh: dict[str, str] = {}
        self.window_end = -math.inf

    def set_idle_timeout(self, idle_timeout: float) -> None:
        self.ttl = max(1, math.ceil(idle_timeout))  # EX takes whole seconds
        self.quarter = idle_timeout / 4


class WriteQueue:
    """Coalescing, bounded queue of SET/DEL writes, with the refresh limiter in front."""

    __slots__ = (
        "_clock",
        "_clusters",
        "_in_flight",
        "_on_ready",
        "_pending",
        "counters",
        "max_fresh",
        "max_pending",
        "prefix",
    )

    def __init__(
        self,
        counters: StoreCounters,
        *,
        prefix: str = "rtpcluster",
        max_pending: int = 100_000,
        max_fresh: int = MAX_FRESH,
        clock: Callable[[], float] = time.monotonic,
        on_ready: Callable[[], None] = lambda: None,
    ) -> None:
        """``on_ready`` is called when the queue turns non-empty (to wake the writer)."""
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {max_pending}")
        self.counters = counters
        self.prefix = prefix
        self.max_pending = max_pending
        self.max_fresh = max_fresh
        self._clock = clock
        self._on_ready = on_ready
        self._clusters: dict[str, ClusterKeys] = {}
        self._pending: OrderedDict[str, Entry] = OrderedDict()
        self._in_flight: dict[str, Entry] = {}

    # --- clusters ------------------------------------------------------------------------

    def configure(self, cluster: str, idle_timeout: float) -> None:
        keys = self._clusters.get(cluster)
        if keys is None:
            self._clusters[cluster] = ClusterKeys(self.prefix, cluster, idle_timeout)
        else:
            keys.set_idle_timeout(idle_timeout)

    def forget(self, cluster: str) -> None:
        self._clusters.pop(cluster, None)

    def _keys(self, cluster: str) -> ClusterKeys:
        keys = ClusterKeys(self.prefix, cluster, DEFAULT_IDLE_TIMEOUT)
        self._clusters[cluster] = keys
        return keys

    def key(self, cluster: str, call_id: str) -> str:
        keys = self._clusters.get(cluster) or self._keys(cluster)
        return keys.key_prefix + call_id

    # --- the hot path --------------------------------------------------------------------

    def bind(self, cluster: str, call_id: str, member: str) -> None:
        keys = self._clusters.get(cluster) or self._keys(cluster)
        now = self._clock()
        if now >= keys.window_end or len(keys.fresh) >= self.max_fresh:
            keys.fresh = {}
            keys.window_end = now + keys.quarter
        keys.fresh[call_id] = member
        self._put(keys.key_prefix + call_id, (member, keys.ttl, now, True))

    def refresh(self, cluster: str, call_id: str, member: str) -> None:
        keys = self._clusters.get(cluster) or self._keys(cluster)
        now = self._clock()
        if now >= keys.window_end or len(keys.fresh) >= self.max_fresh:
            keys.fresh = {}
            keys.window_end = now + keys.quarter
        elif keys.fresh.get(call_id) == member:
            self.counters.refreshes_limited += 1
            return
        keys.fresh[call_id] = member
        self._put(keys.key_prefix + call_id, (member, keys.ttl, now, False))

    def unbind(self, cluster: str, call_id: str) -> None:
        keys = self._clusters.get(cluster) or self._keys(cluster)
        keys.fresh.pop(call_id, None)
        self._put(keys.key_prefix + call_id, (None, 0, self._clock(), False))

    def _put(self, key: str, entry: Entry) -> None:
        counters = self.counters
        counters.writes_queued += 1
        pending = self._pending
        old = pending.get(key)
        if old is not None:
            # The latest write wins; it keeps the place and the age of the first one,
            # so the delay counts from the first unwritten change of the key.
            counters.writes_coalesced += 1
            pending[key] = (entry[0], entry[1], old[2], entry[3] or old[3])
            return
        if len(pending) >= self.max_pending:
            pending.popitem(last=False)
            counters.writes_dropped += 1
        pending[key] = entry
        if len(pending) == 1:
            self._on_ready()

    # --- the writer ----------------------------------------------------------------------

    def __len__(self) -> int:
        """Writes waiting to be sent (not counting the batch in flight)."""
        return len(self._pending)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def take(self, limit: int) -> Batch:
        """Up to ``limit`` writes from the front, now in flight until done or failed."""
        assert not self._in_flight, "one batch in flight at a time"
        pending = self._pending
        batch: Batch = [pending.popitem(last=False) for _ in range(min(limit, len(pending)))]
        self._in_flight = dict(batch)
        return batch

    def done(self, rejected: int = 0) -> None:
        """The batch in flight was acknowledged; ``rejected`` writes were refused by the store."""
        now = self._clock()
        counters = self.counters
        for _member, _ttl, queued_at, has_bind in self._in_flight.values():
            if has_bind:
                counters.record_bind_delay(now - queued_at)
        counters.writes_written += len(self._in_flight) - rejected
        counters.writes_rejected += rejected
        counters.batches_written += 1
        self._in_flight = {}

    def failed(self) -> None:
        """The batch in flight may not have landed: queue it again, in front, unless newer."""
        pending = self._pending
        counters = self.counters
        for key, entry in reversed(self._in_flight.items()):
            if key in pending:
                counters.writes_coalesced += 1  # the newer write of the key wins
                continue
            pending[key] = entry
            pending.move_to_end(key, last=False)
        self._in_flight = {}
        while len(pending) > self.max_pending:
            pending.popitem(last=False)
            counters.writes_dropped += 1

    def queued_keys(self) -> list[str]:
        """Keys with a write in flight or queued, in the order they go out (O(n): admin)."""
        return [*self._in_flight, *self._pending]

    def queued_member(self, key: str) -> tuple[bool, str | None]:
        """``(True, member)`` if a write of ``key`` is queued or in flight (None: a DEL)."""
        entry = self._pending.get(key) or self._in_flight.get(key)
        if entry is None:
            return False, None
        return True, entry[0]
