"""What the HTTP endpoint reads from the running service, gathered in one place.

Everything here is read at request time on the trio thread that runs the clusters, so a
reading is consistent without a lock. This is the only module of the package that looks
at :class:`~rtpcluster.cluster.cluster.Cluster` and
:class:`~rtpcluster.cluster.member.Member` objects rather than at the
:class:`~rtpcluster.cluster.control.ClusterInfo` the admin plane also gets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from rtpcluster.cluster.control import ClusterInfo, MemberInfo, StoreInfo
from rtpcluster.cluster.counters import ClusterCounters, MemberCounters
from rtpcluster.store import StoreCounters

if TYPE_CHECKING:
    from rtpcluster.cluster.cluster import Cluster
    from rtpcluster.service import Service


@dataclass(slots=True)
class MemberReading:
    info: MemberInfo
    counters: MemberCounters


@dataclass(slots=True)
class ClusterReading:
    info: ClusterInfo
    counters: ClusterCounters
    members: list[MemberReading]
    reply_cache_entries: int
    calls_tracked: int


@dataclass(slots=True)
class StoreReading:
    """The session store's counters (the service has one store, whatever its clusters)."""

    shared: bool  # False for the memory store
    pending: int  # writes queued or in flight now
    counters: StoreCounters


class StatusSource(Protocol):
    """What the HTTP app asks; :class:`ServiceStatus` answers it for a running Service."""

    def clusters(self) -> list[ClusterInfo]: ...

    def cluster(self, name: str) -> ClusterInfo:
        """Raise ControlError('<name>: cluster not found')."""
        ...

    def readings(self) -> list[ClusterReading]: ...

    def session_store(self) -> StoreInfo:
        """What ``ls`` shows of the session store."""
        ...

    def store_reading(self) -> StoreReading: ...

    @property
    def stopping(self) -> bool: ...


class ServiceStatus:
    """A :class:`StatusSource` over a running :class:`~rtpcluster.service.Service`."""

    def __init__(self, service: Service) -> None:
        self._service = service

    def clusters(self) -> list[ClusterInfo]:
        return self._service.clusters()

    def cluster(self, name: str) -> ClusterInfo:
        return self._service.cluster(name)

    @property
    def stopping(self) -> bool:
        return self._service.stopped.is_set()

    def readings(self) -> list[ClusterReading]:
        return [read_cluster(cluster) for cluster in list(self._service.running.values())]

    def session_store(self) -> StoreInfo:
        return self._service.session_store()

    def store_reading(self) -> StoreReading:
        store = self._service.store
        return StoreReading(shared=store.remote, pending=store.pending(), counters=store.counters)


def read_cluster(cluster: Cluster) -> ClusterReading:
    info = cluster.info()
    members = []
    for member_info in info.members:
        member = cluster.members[member_info.name]  # info() reads the same dict
        members.append(MemberReading(info=member_info, counters=member.counters))
    return ClusterReading(
        info=info,
        counters=cluster.counters,
        members=members,
        reply_cache_entries=len(cluster.front.reply_cache),
        calls_tracked=len(cluster.sessions),
    )
