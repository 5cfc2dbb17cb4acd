"""MemberSupervisor: the members of one cluster, each in a nursery of its own.

::

    supervisor nursery
    ├── member nursery per member (cancelled when it is removed)
    │   ├── embedded RTPproxy     protocol embedded only: started first, stopped explicitly
    │   └── connection nursery    restarted after a failure, offline_probe_interval later
    │       ├── client            the socket to the member (see transport.member_client)
    │       └── health            version check, capability check, heartbeats
    └── drain deadline per draining member with a timeout

It starts, restarts and replaces members, makes their clients (UDP ones read through the
cluster's :class:`~rtpcluster.transport.pump.DatagramPump`) and drains them. A member's
moves are its own (:mod:`rtpcluster.cluster.member`); the supervisor hears of each
through the hook it gives every member, and acts on the ones that concern it: a removed
member's calls are forgotten in the same step (the session table never binds a call to
a member that is gone), its nursery is cancelled, and whoever waits for the cluster to
empty is woken.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import trio

from rtpcluster.cluster import health
from rtpcluster.cluster.control import ControlError
from rtpcluster.cluster.member import (
    DRAINING,
    PLACEMENT_FIELDS,
    REMOVED,
    Member,
    MemberPolicy,
    MemberState,
)
from rtpcluster.cluster.sessions import SessionTable
from rtpcluster.config.models import MemberChanges, MemberConfig, MemberStatus
from rtpcluster.failures import describe_failure
from rtpcluster.transport.member_client import MemberClient, make_client
from rtpcluster.transport.pump import DatagramPump

if TYPE_CHECKING:
    from rtpcluster.config.models import ClusterConfig

log = logging.getLogger(__name__)


class _Tasks:
    """What the supervisor holds of one member's tasks."""

    __slots__ = ("configured_drain", "deadline", "scope")

    def __init__(self, configured_drain: bool) -> None:
        self.scope = trio.CancelScope()  # the member's nursery
        self.deadline: trio.CancelScope | None = None  # its drain deadline, while it drains
        # Configured DRAINING: drained once its first probe has answered or failed.
        self.configured_drain = configured_drain


class MemberSupervisor:
    def __init__(
        self,
        cluster: str,
        settings: Callable[[], ClusterConfig],
        sessions: SessionTable[Member],
        pump: DatagramPump,
        configs: Iterable[MemberConfig] = (),
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.cluster = cluster
        self._clock = clock  # the members' and the drain deadlines' time
        self._settings = settings
        self._sessions = sessions
        self._pump = pump
        self.members: dict[str, Member] = {}  # in configuration order
        self._tasks: dict[Member, _Tasks] = {}
        self._nursery: trio.Nursery | None = None
        self._membership = trio.Event()  # set (and replaced) when a member comes or goes
        for config in configs:  # probing until run() starts their nurseries
            self._add(config, joins_running=False)
        self._member_list = list(self.members.values())

    def member_list(self) -> list[Member]:
        """The members now, as a list the router may hold on to for one command."""
        return self._member_list

    def member(self, name: str) -> Member:
        member = self.members.get(name)
        if member is None:
            raise ControlError(f"{name}: RTPproxy not found")
        return member

    # --- running ---------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the configured members' nurseries, then supervise until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for member in list(self._member_list):
                await self._start_tasks(member, member.config.status is MemberStatus.DRAINING)
            task_status.started()
            await trio.sleep_forever()

    async def wait_until_empty(self) -> None:
        """Return once every member has left (drained or removed)."""
        while self.members:
            await self._membership.wait()

    def _client_for(self, config: MemberConfig) -> MemberClient:
        return make_client(config.address, config.cmd_out_address, self._pump)

    async def start(self, config: MemberConfig) -> Member:
        """Add a member and start its nursery; returns once its client runs (or failed)."""
        if self._nursery is None:
            raise ControlError(f"{self.cluster}: cluster is not running")
        member = self._add(config, joins_running=True)
        self._member_list = list(self.members.values())
        self._membership_changed()
        await self._start_tasks(member, config.status is MemberStatus.DRAINING)
        return member

    def _add(self, config: MemberConfig, joins_running: bool) -> Member:
        """A new member; one added to the running cluster is ramped when it comes online."""
        member = Member(
            config,
            self._client_for(config),
            cluster=self.cluster,
            on_change=self._moved,
            policy=MemberPolicy.of(self._settings()),
            ramp_first_online=joins_running,
            clock=self._clock,
        )
        self.members[config.name] = member
        return member

    async def _start_tasks(self, member: Member, configured_drain: bool) -> None:
        assert self._nursery is not None
        tasks = _Tasks(configured_drain)
        self._tasks[member] = tasks
        await self._nursery.start(self._run_member, member, tasks)

    async def _run_member(
        self,
        member: Member,
        tasks: _Tasks,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """The member's nursery; a failure in it never reaches the cluster."""
        started = False
        reported: str | None = None  # the failure last logged: each one once, not per retry
        client = member.client  # the one this task runs, and closes when it ends
        try:
            with tasks.scope:
                async with trio.open_nursery() as nursery:
                    embedded = member.config.protocol == "embedded"
                    while True:
                        try:
                            if embedded:
                                await nursery.start(run_embedded, member.config)
                                embedded = False  # it runs on until the member goes
                            async with trio.open_nursery() as connection:
                                await connection.start(client.run)
                                reported = None
                                if not started:
                                    started = True
                                    task_status.started()
                                await connection.start(health.watch, member, self._settings)
                                if tasks.configured_drain:
                                    tasks.configured_drain = False
                                    self.drain(member, None, "configured DRAINING")
                        except Exception as exc:
                            failure = describe_failure(exc)
                            if failure != reported:
                                reported = failure
                                log.warning(
                                    "%s (%s) failed: %s",
                                    member.label,
                                    member.config.address,
                                    failure,
                                    extra=member.log_context,
                                )
                            member.lost(f"connection failed: {failure}")
                            client.close()
                            client = self._client_for(member.config)
                            member.replace_client(client)
                        if not started:
                            started = True
                            task_status.started()
                        await trio.sleep(self._settings().offline_probe_interval)
        finally:
            client.close()
        if not started:
            task_status.started()

    # --- the members' moves ----------------------------------------------------------------

    def _moved(self, member: Member, before: MemberState, cause: str) -> None:
        """Every move of every member passes here (the hook given to each)."""
        del cause  # logged by the member
        tasks = self._tasks.get(member)
        if before is DRAINING and tasks is not None and tasks.deadline is not None:
            tasks.deadline.cancel()
            tasks.deadline = None
        if member.state is REMOVED:
            self._forget(member)
        elif member.state is DRAINING and member.drain_deadline is not None:
            self._watch_deadline(member)

    def _watch_deadline(self, member: Member) -> None:
        tasks = self._tasks.get(member)
        if tasks is None or self._nursery is None:
            return
        if tasks.deadline is not None:
            tasks.deadline.cancel()
        deadline = member.drain_deadline
        assert deadline is not None
        scope = tasks.deadline = trio.CancelScope()
        self._nursery.start_soon(_expire_drain, member, scope, deadline)

    def _forget(self, member: Member) -> None:
        """A member that is gone: its calls, its tasks, its place in the cluster."""
        if self.members.get(member.name) is member:
            del self.members[member.name]
            self._member_list = list(self.members.values())
        self._sessions.drop_member(member)
        tasks = self._tasks.pop(member, None)
        if tasks is not None:
            tasks.scope.cancel()
            if tasks.deadline is not None:
                tasks.deadline.cancel()
        self._membership_changed()

    def _membership_changed(self) -> None:
        event, self._membership = self._membership, trio.Event()
        event.set()

    # --- what the operator asks ------------------------------------------------------------

    def drain(self, member: Member, timeout: float | None, cause: str = "deleted by admin") -> None:
        """No new calls; removed once its calls have ended, or ``timeout`` seconds from now."""
        deadline = None if timeout is None else self._clock() + timeout
        was_draining = member.state is DRAINING
        member.drain(deadline, cause)
        if was_draining and member.state is DRAINING:
            if deadline is None:  # a new delete without timeout: no deadline any more
                tasks = self._tasks.get(member)
                if tasks is not None and tasks.deadline is not None:
                    tasks.deadline.cancel()
                    tasks.deadline = None
            else:
                self._watch_deadline(member)

    def set_status(self, member: Member, status: MemberStatus) -> None:
        if status is MemberStatus.SUSPENDED:
            member.suspend()
        elif status is MemberStatus.ACTIVE:
            member.resume()
        else:
            self.drain(member, None, "status set to DRAINING")

    def set_member(self, name: str, changes: MemberChanges) -> None:
        """``modify set``: weight, capacity, backup of a running member, at once."""
        member = self.member(name)
        member.adjust(changes.apply(member.config), "set by admin")

    def apply_policy(self) -> None:
        """Hand every member the damping and slow-start settings in effect now."""
        policy = MemberPolicy.of(self._settings())
        for member in self._member_list:
            member.apply_policy(policy)

    async def replace(self, config: MemberConfig) -> None:
        """Apply a changed member config; an address change reconnects, calls stay bound.

        A change of only weight, capacity or backup is applied at once, like ``modify
        set``: no move, nothing restarted.
        """
        member = self.member(config.name)
        old = member.config
        if old.model_copy(update={f: getattr(config, f) for f in PLACEMENT_FIELDS}) == config:
            member.adjust(config, "reloaded")
            return
        member.reconfigure(config)
        if (
            old.address != config.address
            or old.protocol != config.protocol
            or old.cmd_out_address != config.cmd_out_address
        ):
            tasks = self._tasks.pop(member)
            tasks.scope.cancel()
            if tasks.deadline is not None:
                tasks.deadline.cancel()
            member.restart("address changed")
            member.replace_client(self._client_for(config))
            await self._start_tasks(member, False)
        if config.status is MemberStatus.DRAINING:
            self.drain(member, None, "configured DRAINING")


async def _expire_drain(member: Member, scope: trio.CancelScope, deadline: float) -> None:
    with scope:
        await trio.sleep_until(deadline)
        member.drain_deadline_reached()


async def run_embedded(
    config: MemberConfig, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """An in-process RTPproxy (the optional rtp-io wheel) on the member's address.

    Runs until cancelled, then stops it: the RTPproxy stops when its object is freed,
    which waits about a second for its threads, so that happens in a worker thread,
    shielded from the cancellation that ends this task.
    """
    try:
        import rtp.io
    except ImportError:
        raise ControlError(
            f"{config.name}: protocol embedded needs the rtp-io wheel"
            " (pip install 'rtpcluster[embedded]')"
        ) from None
    args = embedded_args(config)
    held: list[Any] = [
        await trio.to_thread.run_sync(lambda: rtp.io.rtpproxy(extra_args=args, modules=[]))
    ]
    try:
        task_status.started()
        await trio.sleep_forever()
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(held.clear)


def embedded_args(config: MemberConfig) -> list[str]:
    """RTPproxy's arguments for an embedded member: its control socket, RTP on the host
    of that socket (loopback for a unix one), foreground, errors only, its port range."""
    address = config.address
    host = "127.0.0.1" if address.kind.is_path else (address.host or "127.0.0.1")
    args = ["-s", str(address), "-F", "-d", "err", "-l", host]
    if config.rtp_port_min is not None:
        args += ["-m", str(config.rtp_port_min)]
    if config.rtp_port_max is not None:
        args += ["-M", str(config.rtp_port_max)]
    return args
