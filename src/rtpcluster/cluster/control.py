"""What the admin plane may ask of the running service, and what it gets back.

The service implements :class:`ServiceControl`; the admin command registry only ever
talks to this protocol, so admin code never reaches into cluster internals.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from rtpcluster.config.models import ClusterConfig, Config, MemberChanges, MemberConfig


class ControlError(Exception):
    """A refused admin request; ``str(err)`` is the text after ``ERROR: ``."""


@dataclass(slots=True)
class MemberInfo:
    name: str
    protocol: str  # as in the config: udp, udp6, unix, cunix, tcp, tcp6, embedded
    address: str  # host:port, [v6]:port or a path; never a repr
    weight: int
    capacity: int
    status: str  # ACTIVE, SUSPENDED or DRAINING
    online: bool
    active_sessions: int  # last reported by the member plus placed since
    utilisation: float  # 0.0 .. (may exceed 1.0 under a soft limit)
    rtt: float | None  # smoothed round-trip time in seconds, None until measured
    tracked_calls: int  # call-ids the cluster has bound to this member
    wan_address: str | None = None
    lan_address: str | None = None
    cmd_out_address: str | None = None
    drain_deadline: float | None = None  # seconds left until a forced removal
    deferred_deletes: int = 0  # deletes kept for delivery when it answers again
    deferred_dropped: int = 0  # deletes not kept because its queue was full
    backup: bool = False  # takes new calls only when no other member can
    # While it ramps up after coming online (slow start): the weight in effect now and
    # the seconds until it has its full weight; None when it has its full weight.
    effective_weight: float | None = None
    slow_start_left: float | None = None
    # Taken out for flapping: seconds until it may come back (after rise good answers);
    # None when it is not held down.
    held_down_left: float | None = None
    # Its state, and its counters (cluster.counters.MemberCounters); None only where a
    # ServiceControl does not count (a test's fake).
    state: str | None = None  # probing, online, offline, draining, removed
    commands: dict[str, int] | None = None  # commands sent to it, by result: ok/error/timeout
    state_changes: int | None = None  # online/offline changes since it was added
    last_change_age: float | None = None  # seconds since the last of them (or since added)
    downtime: float | None = None  # seconds offline since it was added


@dataclass(slots=True)
class ClusterInfo:
    index: int
    name: str
    addresses: list[str]  # str(Endpoint) of every listener
    capacity_limit: str  # soft or hard
    members: list[MemberInfo] = field(default_factory=list)


@dataclass(slots=True)
class StoreInfo:
    """The session store as ``ls`` shows it: one per service."""

    url: str  # memory, or the Redis URL with its password masked
    shared: bool  # False for the memory store
    up: bool  # the last exchange with the store succeeded (always True for memory)
    pending: int  # writes queued or in flight
    writes_dropped: int  # pushed out of the full queue
    outages: int  # times it became unreachable
    reads_hit: int
    reads_miss: int
    reads_error: int  # unreachable, deadline passed, or a value that is no member name
    bind_delay_count: int  # binds acknowledged by the store ...
    bind_delay_sum: float  # ... seconds from bind to acknowledgement, summed
    bind_delay_max: float  # ... and the longest


def cluster_document(info: ClusterInfo) -> dict[str, Any]:
    """One cluster as JSON data: ``ls <cluster> --json`` and ``/api/v1/clusters/<name>``."""
    return dataclasses.asdict(info)


def clusters_document(infos: list[ClusterInfo], store: StoreInfo | None = None) -> dict[str, Any]:
    """Every cluster, and the session store, as JSON data: ``ls --json`` and
    ``/api/v1/clusters``."""
    document: dict[str, Any] = {"clusters": [cluster_document(info) for info in infos]}
    if store is not None:
        document["session_store"] = dataclasses.asdict(store)
    return document


@dataclass(slots=True)
class ReloadPlan:
    """What a reload does (or would do, with --dry-run): one line per change."""

    changes: list[str]
    clusters: int  # clusters in the new config
    members: int  # members in the new config
    warnings: list[str] = field(default_factory=list)  # config_warnings of the new config


class ServiceControl(Protocol):
    def clusters(self) -> list[ClusterInfo]: ...

    def cluster(self, name: str) -> ClusterInfo:
        """Raise ControlError('<name>: cluster not found')."""
        ...

    async def add_member(self, cluster: str, member: MemberConfig) -> None:
        """Raise ControlError('<name>: RTPproxy already exists') on a duplicate."""
        ...

    async def remove_member(self, cluster: str, member: str, timeout: float | None) -> None:
        """Drain then remove; ``timeout`` seconds after which it is removed anyway."""
        ...

    async def suspend_member(self, cluster: str, member: str) -> None: ...

    async def resume_member(self, cluster: str, member: str) -> None: ...

    async def set_member(self, cluster: str, member: str, changes: MemberChanges) -> None:
        """Change weight, capacity or backup of a running member, at once.

        Its connection, health state, ramp and calls stay as they are; the next new call
        is placed by the new values, and ``running_config`` (so ``save``) holds them.
        Raise ControlError('<cluster>: cluster not found') or ControlError('<member>:
        RTPproxy not found'); ``changes`` was validated when it was built.
        """
        ...

    async def create_cluster(self, cluster: ClusterConfig) -> None: ...

    async def destroy_cluster(self, name: str) -> None:
        """Drain every member, then stop the cluster's listeners and nursery."""
        ...

    async def reload(self, dry_run: bool = False) -> ReloadPlan:
        """Re-read the config file; raise ControlError (changing nothing) if it is bad."""
        ...

    def running_config(self) -> Config:
        """The configuration as running now, runtime changes included."""
        ...

    def session_store(self) -> StoreInfo:
        """The session store the service runs with, and its state."""
        ...

    @property
    def config_path(self) -> str: ...
