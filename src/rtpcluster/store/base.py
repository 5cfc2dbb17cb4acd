"""The session store interface and its counters.

A session store keeps call affinity (call-id -> member name) where several rtpcluster
processes can share it. The in-process SessionTable stays the hot read path; the store
is told of every change through plain, non-blocking method calls and writes them in
the background (its :meth:`SessionStore.run` task). It is read only on a local miss,
with a short deadline.
"""

from __future__ import annotations

import bisect
from abc import ABC, abstractmethod

import trio

# Upper bounds (seconds) of the bind -> stored delay buckets; the last one is open.
# 50 ms is the figure the design promises under normal load, so it is a bound.
DELAY_BOUNDS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class StoreCounters:
    """Plain numbers, read by metrics and ``ls`` at any time; no lock, no allocation.

    Every write accepted into the queue ends in exactly one of written, rejected,
    dropped or coalesced, or is still queued/in flight:
    ``writes_queued == writes_written + writes_rejected + writes_dropped
    + writes_coalesced + <pending>``.
    """

    __slots__ = (
        "batches_written",
        "bind_delay_buckets",
        "bind_delay_count",
        "bind_delay_max",
        "bind_delay_sum",
        "outages",
        "reads_error",
        "reads_hit",
        "reads_miss",
        "refreshes_limited",
        "store_up",
        "writes_coalesced",
        "writes_dropped",
        "writes_queued",
        "writes_rejected",
        "writes_written",
    )

    def __init__(self, store_up: int = 0) -> None:
        self.store_up = store_up  # 1 while the last exchange with the store succeeded
        self.outages = 0  # times the store became unreachable (one warning each)
        self.writes_queued = 0  # SET/DEL accepted into the write queue
        self.writes_coalesced = 0  # replaced by a later write of the same key before sending
        self.writes_dropped = 0  # pushed out of the full queue (oldest first)
        self.writes_written = 0  # acknowledged by the store
        self.writes_rejected = 0  # answered with an error by the store (e.g. OOM)
        self.batches_written = 0  # pipelines acknowledged
        self.refreshes_limited = 0  # refreshes skipped: the key was written this window
        self.reads_hit = 0
        self.reads_miss = 0
        self.reads_error = 0  # store unreachable, deadline passed, or a bad value
        self.bind_delay_count = 0  # binds acknowledged, with the delay since bind()
        self.bind_delay_sum = 0.0  # seconds
        self.bind_delay_max = 0.0  # seconds
        self.bind_delay_buckets = [0] * (len(DELAY_BOUNDS) + 1)  # per DELAY_BOUNDS, then +inf

    def record_bind_delay(self, seconds: float) -> None:
        self.bind_delay_count += 1
        self.bind_delay_sum += seconds
        if seconds > self.bind_delay_max:
            self.bind_delay_max = seconds
        self.bind_delay_buckets[bisect.bisect_left(DELAY_BOUNDS, seconds)] += 1

    def as_dict(self) -> dict[str, int | float | list[int]]:
        return {name: getattr(self, name) for name in self.__slots__}


class SessionStore(ABC):
    """Where call affinity is shared. One per service; every cluster uses it by name.

    The write side (:meth:`bind`, :meth:`refresh`, :meth:`unbind`) is called on the hot
    path: plain methods, O(1), never blocking, never raising for a full or absent store.
    """

    remote: bool
    """False for the memory store: a lookup can never find anything, skip it."""

    counters: StoreCounters

    @abstractmethod
    def configure(self, cluster: str, idle_timeout: float) -> None:
        """Set a cluster's idle timeout: the TTL of its keys, and 1/4 of it the refresh gap."""

    @abstractmethod
    def forget(self, cluster: str) -> None:
        """The cluster is gone: drop its refresh bookkeeping (its keys age out)."""

    @abstractmethod
    def bind(self, cluster: str, call_id: str, member: str) -> None:
        """A new call was placed on ``member`` (or found there by a broadcast)."""

    @abstractmethod
    def refresh(self, cluster: str, call_id: str, member: str) -> None:
        """Activity on a bound call; written at most once per quarter idle timeout."""

    @abstractmethod
    def unbind(self, cluster: str, call_id: str) -> None:
        """The call's ``D`` was answered: the binding is deleted from the store."""

    @abstractmethod
    async def lookup(self, cluster: str, call_id: str) -> str | None:
        """The member name the store holds for a call, or None on miss, error or deadline."""

    @abstractmethod
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The writer task: started once per service in its nursery; returns or runs forever."""

    @abstractmethod
    async def flushed(self) -> None:
        """Wait until every queued write is acknowledged (bound it with a cancel scope)."""

    @abstractmethod
    async def wait_until_up(self, up: bool = True) -> None:
        """Wait until the store is reachable (``up``) or unreachable (``not up``)."""

    @abstractmethod
    def pending(self) -> int:
        """Writes queued or in flight, not yet acknowledged by the store."""

    @abstractmethod
    def describe(self) -> str:
        """One line for ``ls``: which store and in what state."""
