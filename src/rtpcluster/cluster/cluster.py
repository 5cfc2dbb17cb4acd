"""Cluster: the running form of one ``<rtp_cluster>``, its own nursery of tasks.

::

    cluster nursery
    ├── task executor         commands that need a task (broadcasts, stream members)
    ├── member supervisor     a member nursery per member (see cluster.supervisor)
    ├── listener per control endpoint
    ├── upkeep                session-table aging, reply-cache rotation
    └── notify relay          optional

It puts the pieces together and holds what the admin plane reads: the front takes the
commands (cluster.front), the Router decides (cluster.router), the executors carry the
decisions out (cluster.executors), the supervisor runs the members, and the pump reads
the UDP sockets of listeners and members together (transport.pump).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from functools import partial

import trio

from rtpcluster.cluster.control import ClusterInfo, ControlError, MemberInfo
from rtpcluster.cluster.counters import ClusterCounters
from rtpcluster.cluster.executors import InlineExecutor, TaskExecutor
from rtpcluster.cluster.front import REPLY_CACHE_LIFETIME, CommandFront
from rtpcluster.cluster.member import DRAINING, Member
from rtpcluster.cluster.notify import NotifyRelay
from rtpcluster.cluster.outcomes import Outcomes
from rtpcluster.cluster.router import Router
from rtpcluster.cluster.sessions import SessionTable
from rtpcluster.cluster.store_reads import OfferReads
from rtpcluster.cluster.supervisor import MemberSupervisor
from rtpcluster.config.models import ClusterConfig, MemberChanges, MemberConfig, MemberStatus
from rtpcluster.store import MemoryStore, SessionStore
from rtpcluster.transport.listeners import BoundSockets, Listener
from rtpcluster.transport.pump import DatagramPump

log = logging.getLogger(__name__)

UPKEEP_INTERVAL = 1.0
# At most one warning a minute that the session table ages early (see upkeep).
TABLE_FULL_WARNING_INTERVAL = 60.0
STOP_GRACE = 2.0


class Cluster:
    def __init__(
        self, index: int, config: ClusterConfig, store: SessionStore | None = None
    ) -> None:
        """``store``: the service's session store (the memory store: nothing shared)."""
        self.index = index
        # The cluster's own settings; its members are the supervisor's (see config).
        self._settings = config.model_copy(update={"members": []})
        self.sessions: SessionTable[Member] = SessionTable(config.session_idle_timeout)
        self._rotated_at = trio.current_time()  # the session table's last ageing
        self.pump = DatagramPump()  # the UDP sockets of listeners and members, read together
        self.supervisor = MemberSupervisor(
            config.name, self._current_settings, self.sessions, self.pump, config.members
        )
        store = store or MemoryStore()
        self.offer_reads = OfferReads(self._idle_timeout) if store.remote else None
        self.router = Router(
            self._settings,
            self.supervisor.member_list,
            self.sessions,
            store_reads=self.offer_reads,
        )
        self.counters = ClusterCounters()  # what /metrics reads; bumped by outcomes and front
        outcomes = Outcomes(
            self.sessions,
            counters=self.counters,
            store=store,
            cluster=config.name,
            offer_reads=self.offer_reads,
        )
        self.tasks = TaskExecutor(self.router, outcomes, partial(store.lookup, config.name))
        self.inline = InlineExecutor(self.router, outcomes, self.tasks)
        self.front = CommandFront(self.inline.dispatch, self.tasks.handle, self.counters)
        self.listeners: list[Listener] = []
        self.notify_relay: NotifyRelay | None = None
        self._scope = trio.CancelScope()
        self._nursery: trio.Nursery | None = None

    @property
    def name(self) -> str:
        return self._settings.name

    @property
    def config(self) -> ClusterConfig:
        """The configuration as it runs: the settings and every member, draining ones too."""
        members = [m.config for m in self.supervisor.member_list()]
        return self._settings.model_copy(update={"members": members})

    def _current_settings(self) -> ClusterConfig:
        return self._settings

    def _idle_timeout(self) -> float:
        return self._settings.session_idle_timeout

    def member_list(self) -> list[Member]:
        return self.supervisor.member_list()

    # --- running ---------------------------------------------------------------------------

    async def run(
        self,
        bound: Sequence[BoundSockets],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve the control sockets ``bound`` beforehand (the caller closes any left over)."""
        with self._scope:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(self.tasks.run)
                await nursery.start(self.supervisor.run)
                await self._start_listeners(nursery, bound)
                nursery.start_soon(self._upkeep)
                relay = self._settings.disconnect_notify
                if relay is not None:
                    self.notify_relay = NotifyRelay(relay, self.member_list)
                    await nursery.start(self.notify_relay.run)
                task_status.started()

    async def _start_listeners(self, nursery: trio.Nursery, bound: Sequence[BoundSockets]) -> None:
        front = self.front
        for sockets in bound:
            listener = Listener(sockets, front.on_datagram, front.on_command, self.pump)
            self.listeners.append(listener)
            await nursery.start(listener.run)

    async def change_listeners(
        self, config: ClusterConfig, bound: Sequence[BoundSockets], grace: float
    ) -> None:
        """Serve ``bound`` too; stop the listeners it replaces and those ``config`` drops.

        ``bound`` holds the sockets of the new endpoints and, for an endpoint kept with
        other ``<listen>`` attributes, the running listener's own sockets (see
        :func:`~rtpcluster.transport.listeners.reopen_endpoint`): its successor serves
        them with the new limits, and the old one stops. Everything that can fail was
        done beforehand, so this cannot fail half way. A listener that goes takes no new
        commands at once and is closed ``grace`` seconds later.
        """
        if self._nursery is None:
            raise ControlError(f"{self.name}: cluster is not running")
        before = list(self.listeners)
        await self._start_listeners(self._nursery, bound)
        wanted = {str(endpoint) for endpoint in config.listen}
        reopened = {str(sockets.endpoint) for sockets in bound}
        for listener in before:
            spec = str(listener.endpoint)
            if spec in wanted and spec not in reopened:
                continue  # kept as it is
            self.listeners.remove(listener)
            listener.stop_accepting()
            self._nursery.start_soon(_close_after, listener, grace)
        self._settings = self._settings.model_copy(
            update={"listen": list(config.listen), "listen_options": dict(config.listen_options)}
        )

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """Stop taking commands, give those in flight ``grace`` seconds, then stop all."""
        for listener in self.listeners:
            listener.stop_accepting()
        with trio.move_on_after(grace):
            await self.front.wait_idle()
        self._scope.cancel()

    async def _upkeep(self) -> None:
        """Keeps the tables the hot path reads within their bounds and lifetimes.

        Placement happens inline on each new call (Router + Balancer), and a drain ends
        by the member's own move (cluster.member); this task ages the session table and
        rotates the reply cache.
        """
        next_cache_rotation = trio.current_time() + REPLY_CACHE_LIFETIME
        next_session_rotation = trio.current_time() + self._settings.session_idle_timeout / 2
        early_rotations = 0
        next_full_warning = trio.current_time()
        while True:
            await trio.sleep(UPKEEP_INTERVAL)
            now = trio.current_time()
            if now >= next_cache_rotation:
                self.front.reply_cache.rotate()
                next_cache_rotation = now + REPLY_CACHE_LIFETIME
            if now >= next_session_rotation:
                forgotten = self.sessions.rotate()
                self._rotated_at = now
                if forgotten:
                    log.info(
                        "%s: forgot %d idle calls",
                        self.name,
                        forgotten,
                        extra={"cluster": self.name},
                    )
                next_session_rotation = now + self._settings.session_idle_timeout / 2
            self.sessions.compact()
            if self.sessions.early_rotations != early_rotations and now >= next_full_warning:
                log.warning(
                    "%s: session table full (%d calls): aged early %d times, the calls"
                    " idle longest were forgotten",
                    self.name,
                    self.sessions.max_entries,
                    self.sessions.early_rotations - early_rotations,
                    extra={"cluster": self.name},
                )
                early_rotations = self.sessions.early_rotations
                next_full_warning = now + TABLE_FULL_WARNING_INTERVAL

    # --- members ---------------------------------------------------------------------------

    @property
    def members(self) -> dict[str, Member]:
        return self.supervisor.members

    def member(self, name: str) -> Member:
        return self.supervisor.member(name)

    async def add_member(self, config: MemberConfig) -> None:
        if config.name in self.members:
            raise ControlError(f"{config.name}: RTPproxy already exists")
        await self.supervisor.start(config)

    def remove_member(self, name: str, timeout: float | None) -> None:
        """Drain: no new calls; removed when its calls have ended or at the deadline."""
        self.supervisor.drain(self.member(name), timeout)

    def set_status(self, name: str, status: MemberStatus) -> None:
        self.supervisor.set_status(self.member(name), status)

    def set_member(self, name: str, changes: MemberChanges) -> None:
        """Weight, capacity, backup of a member, at once; its calls and health stay."""
        self.supervisor.set_member(name, changes)

    async def replace_member(self, config: MemberConfig) -> None:
        """Apply a changed member config; an address change reconnects, calls stay bound."""
        await self.supervisor.replace(config)

    async def wait_until_empty(self) -> None:
        """Return once every member has been drained or removed."""
        await self.supervisor.wait_until_empty()

    def update_settings(self, config: ClusterConfig) -> None:
        """Apply cluster-level settings that need no restart (timers, capacity limit,
        damping, slow start)."""
        keep = {
            "members": [],
            "listen": self._settings.listen,
            "listen_options": self._settings.listen_options,  # see change_listeners
            # the running relay verifies tags with its own prefix and key: the router
            # must go on issuing them alike until the cluster is restarted
            "disconnect_notify": self._settings.disconnect_notify,
        }
        self._settings = config.model_copy(update=keep)
        self.router.apply_settings(self._settings)
        self.supervisor.apply_policy()
        self.sessions.idle_timeout = self._settings.session_idle_timeout

    def lasting_config(self) -> ClusterConfig:
        """The configuration without the members on their way out (what ``save`` writes)."""
        members = [m.config for m in self.supervisor.member_list() if m.state is not DRAINING]
        return self._settings.model_copy(update={"members": members})

    # --- handing the table over across a restart (--state-file) ----------------------------

    def bindings(self) -> Iterator[tuple[str, str, float]]:
        """Every call-id with its member's name and the most its age can be (seconds)."""
        since = max(0.0, trio.current_time() - self._rotated_at)
        for call_id, member, age in self.sessions.bindings(since):
            yield call_id, member.name, age

    def restore(self, bindings: Mapping[str, tuple[str, float]]) -> tuple[int, int]:
        """Bind the calls of a state file (call-id -> member name, age) before serving.

        Returns (bound, dropped): a binding names a member this cluster does not have, or
        one that is gone, is dropped (the call is found by a broadcast, as without it).
        """
        members = self.supervisor.members
        bound = 0
        for call_id, (name, age) in bindings.items():
            member = members.get(name)
            if member is not None:
                self.sessions.restore(call_id, member, age)
                bound += 1
        return bound, len(bindings) - bound

    # --- reporting -------------------------------------------------------------------------

    def info(self) -> ClusterInfo:
        """What ``ls`` shows; O(members), never a scan of the session table."""
        sessions = self.sessions
        now = trio.current_time()
        members = []
        for member in self.supervisor.member_list():
            cfg = member.config
            counters = member.counters
            left = None if member.drain_deadline is None else max(0.0, member.drain_deadline - now)
            ramp_left = member.slow_start_left()  # None once it has its full weight
            members.append(
                MemberInfo(
                    name=cfg.name,
                    protocol=str(cfg.protocol),
                    address=cfg.address.address,
                    weight=cfg.weight,
                    capacity=cfg.capacity,
                    status=str(member.status),
                    online=member.online,
                    state=str(member.state),
                    active_sessions=member.load,
                    utilisation=member.utilisation,
                    rtt=member.client.rtt,
                    tracked_calls=sessions.count(member),
                    wan_address=cfg.wan_address,
                    lan_address=cfg.lan_address,
                    cmd_out_address=cfg.cmd_out_address,
                    drain_deadline=left,
                    deferred_deletes=len(member.deferred),
                    deferred_dropped=member.deferred.dropped,
                    backup=cfg.backup,
                    effective_weight=None if ramp_left is None else member.effective_weight,
                    slow_start_left=ramp_left,
                    held_down_left=member.held_down_left(),
                    commands=dict(counters.commands),
                    state_changes=counters.state_changes,
                    last_change_age=counters.last_change_age(),
                    downtime=counters.downtime(),
                )
            )
        return ClusterInfo(
            index=self.index,
            name=self.name,
            addresses=[str(ep) for ep in self._settings.listen],
            capacity_limit=str(self._settings.capacity_limit),
            members=members,
        )


async def _close_after(listener: Listener, grace: float) -> None:
    await trio.sleep(grace)
    listener.close()
