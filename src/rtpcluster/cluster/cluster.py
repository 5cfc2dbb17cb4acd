"""Cluster: the running form of one ``<rtp_cluster>``, its own nursery of tasks.

::

    cluster nursery
    ├── listener per control endpoint
    ├── balancer task (session-table aging, reply-cache rotation, drain completion)
    ├── notify relay (optional)
    └── member nursery per member: transport client + health task
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import trio

from rtpcluster.cluster import health
from rtpcluster.cluster.control import ClusterInfo, ControlError, MemberInfo
from rtpcluster.cluster.member import Member
from rtpcluster.cluster.notify import NotifyRelay
from rtpcluster.cluster.reply_cache import MAX_BYTES, MAX_ENTRIES, ReplyCache
from rtpcluster.cluster.router import Router
from rtpcluster.cluster.sessions import SessionTable
from rtpcluster.config.models import ClusterConfig, MemberConfig, MemberStatus
from rtpcluster.failures import describe_failure
from rtpcluster.protocol import MAX_DATAGRAM_BYTES, ProtocolError, join_cookie, split_cookie
from rtpcluster.transport.listeners import BoundSockets, Listener, SendDatagram
from rtpcluster.transport.member_client import UdpMemberClient, make_client

log = logging.getLogger(__name__)

UPKEEP_INTERVAL = 1.0
SPIN = 0.00005  # seconds of polling for a member's reply before sleeping in epoll
REPLY_CACHE_LIFETIME = 30.0
REPLY_CACHE_ENTRIES = MAX_ENTRIES
REPLY_CACHE_BYTES = MAX_BYTES
# At most one warning a minute that the session table ages early (see upkeep).
TABLE_FULL_WARNING_INTERVAL = 60.0
# UDP commands in flight at once, all clients together: what they hold (closures, parsed
# command, the member client's pending entry) is bounded by these. A member that hangs
# keeps its commands for member_timeout (0.5 s) before it is taken offline: at 10,000
# commands/s over two members that is 2,500 in flight, which 4,096 covers. 8 MiB of
# datagrams: 1,000 commands at the 8 KiB limit, or all 4,096 at 2 KiB, ten times a long
# real command.
MAX_DATAGRAMS_IN_FLIGHT = 4096
MAX_BYTES_IN_FLIGHT = 8 * 1024 * 1024
STOP_GRACE = 2.0


class _MemberTasks:
    """The nursery of one member, cancellable on its own."""

    def __init__(self, member: Member) -> None:
        self.member = member
        self.scope = trio.CancelScope()
        self.embedded: Any = None


class Cluster:
    def __init__(self, index: int, config: ClusterConfig) -> None:
        self.index = index
        self.config = config
        self.members: dict[str, Member] = {}
        self._tasks: dict[str, _MemberTasks] = {}
        self.sessions: SessionTable[Member] = SessionTable(config.session_idle_timeout)
        # Datagrams answered by no command: without a cookie to answer to (blank, or one
        # over MAX_COOKIE_BYTES), or refused because MAX_DATAGRAMS_IN_FLIGHT were in flight.
        self.datagrams_ignored = 0
        self.datagrams_refused = 0
        self._inflight_bytes = 0  # command bytes of the datagrams in flight
        self.reply_cache = ReplyCache(REPLY_CACHE_LIFETIME, REPLY_CACHE_ENTRIES, REPLY_CACHE_BYTES)
        self.router = Router(config, self.member_list, self.sessions)
        self.listeners: list[Listener] = []
        self.notify_relay: NotifyRelay | None = None
        self._scope = trio.CancelScope()
        self._nursery: trio.Nursery | None = None
        self._stopping = False
        self._idle = trio.Event()
        self.inflight = 0  # commands received and not answered yet
        self._member_list: list[Member] = []

    @property
    def name(self) -> str:
        return self.config.name

    def member_list(self) -> list[Member]:
        return self._member_list

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
                self.router.nursery = nursery
                for member_config in self.config.members:
                    await self._start_member(member_config)
                await self._start_listeners(nursery, bound)
                nursery.start_soon(self._balancer_upkeep)
                if self.config.disconnect_notify is not None:
                    self.notify_relay = NotifyRelay(self.config.disconnect_notify, self.member_list)
                    await nursery.start(self.notify_relay.run)
                task_status.started()

    async def _start_listeners(self, nursery: trio.Nursery, bound: Sequence[BoundSockets]) -> None:
        for sockets in bound:
            listener = Listener(sockets, self.on_datagram, self.on_command)
            listener.after_batch = self._after_commands
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
        self.config = self.config.model_copy(
            update={"listen": list(config.listen), "listen_options": dict(config.listen_options)}
        )
        self.router.config = self.config

    def _drain_members(self, spin: float = 0.0) -> None:
        """Take the members' replies that are already in.

        Under load a reply is often waiting by the time a batch is done; reading it here
        saves the trio wake-up of the member's receive task. After a batch of commands
        (``spin``), while nothing has come yet, keep polling for up to SPIN seconds (about
        one RTPproxy round trip on loopback): a reply read while still on the CPU skips
        the scheduler's wake-up latency, which is most of what the cluster adds at low load.
        """
        if not self.inflight:
            return
        clients = [m.client for m in self._member_list if isinstance(m.client, UdpMemberClient)]
        deadline = time.perf_counter() + spin
        while True:
            got = 0
            for client in clients:
                got += client.drain()
            if got or time.perf_counter() >= deadline:
                return

    def _after_commands(self) -> None:
        self._drain_members(SPIN)

    def _drain_all(self) -> None:
        """After a batch of replies: take the commands and other replies already waiting."""
        for listener in self.listeners:
            listener.drain()
        self._drain_members()

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """Stop taking commands, give those in flight ``grace`` seconds, then stop all."""
        self._stopping = True
        for listener in self.listeners:
            listener.stop_accepting()
        if self.inflight:
            with trio.move_on_after(grace):
                await self._idle.wait()
        self._scope.cancel()

    def on_datagram(self, data: bytes, addr: Any, send: SendDatagram) -> None:
        """A UDP command: cookie, retransmit cache, then the Router; the reply goes to send.

        What a datagram may hold is bounded (protocol.cookie: the cookie, the datagram)
        and so is the work in flight for them all (MAX_DATAGRAMS_IN_FLIGHT commands,
        MAX_BYTES_IN_FLIGHT bytes): past that a datagram is dropped unanswered, as by a
        full socket buffer, and the client's retransmit comes back later.
        """
        try:
            cookie, body = split_cookie(data)
        except ProtocolError:
            self.datagrams_ignored += 1  # no cookie to answer with
            return
        if len(data) > MAX_DATAGRAM_BYTES:
            send(join_cookie(cookie, "E5"), addr)  # cut by the listener: never run a part
            return
        key = (cookie, addr)
        cache = self.reply_cache
        known = cache.begin(key)
        if known is not None:
            if known:
                send(known, addr)
            return  # else the first copy is still being worked on: its reply answers both
        size = len(data)
        if (
            self.inflight >= MAX_DATAGRAMS_IN_FLIGHT
            or self._inflight_bytes + size > MAX_BYTES_IN_FLIGHT
        ):
            cache.abandon(key)
            self.datagrams_refused += 1
            return
        self.inflight += 1
        self._inflight_bytes += size

        def respond(reply: str) -> None:
            out = join_cookie(cookie, reply)
            cache.finish(key, out)
            self._inflight_bytes -= size
            self._done_one()
            send(out, addr)

        def abandon() -> None:
            cache.abandon(key)  # a retransmit after a restart is worked on afresh
            self._inflight_bytes -= size
            self._done_one()

        self.router.dispatch(body, respond, abandon)

    async def on_command(self, data: bytes) -> str:
        """A command from a stream listener (no cookie, no cache)."""
        self.inflight += 1
        try:
            return await self.router.handle(data)
        finally:
            self._done_one()

    def _done_one(self) -> None:
        self.inflight -= 1
        if self.inflight == 0 and self._stopping:
            self._idle.set()

    async def _balancer_upkeep(self) -> None:
        """The cluster's balancer task: keeps the state placement decisions rest on.

        Placement itself happens inline on each new call (Router + Balancer); this task
        ages the session table, rotates the reply cache and removes drained members.
        """
        next_cache_rotation = trio.current_time() + REPLY_CACHE_LIFETIME
        next_session_rotation = trio.current_time() + self.config.session_idle_timeout / 2
        early_rotations = 0
        next_full_warning = trio.current_time()
        while True:
            await trio.sleep(UPKEEP_INTERVAL)
            now = trio.current_time()
            if now >= next_cache_rotation:
                self.reply_cache.rotate()
                next_cache_rotation = now + REPLY_CACHE_LIFETIME
            if now >= next_session_rotation:
                forgotten = self.sessions.rotate()
                if forgotten:
                    log.info("%s: forgot %d idle calls", self.name, forgotten)
                next_session_rotation = now + self.config.session_idle_timeout / 2
            self.sessions.compact()
            if self.sessions.early_rotations != early_rotations and now >= next_full_warning:
                log.warning(
                    "%s: session table full (%d calls): aged early %d times, the calls"
                    " idle longest were forgotten",
                    self.name,
                    self.sessions.max_entries,
                    self.sessions.early_rotations - early_rotations,
                )
                early_rotations = self.sessions.early_rotations
                next_full_warning = now + TABLE_FULL_WARNING_INTERVAL
            for member in list(self._member_list):
                if member.status is MemberStatus.DRAINING and self._drained(member, now):
                    log.info("%s: member %s drained, removing it", self.name, member.name)
                    self._remove_now(member.name)

    @staticmethod
    def _drained(member: Member, now: float) -> bool:
        if member.drain_deadline is not None and now >= member.drain_deadline:
            return True
        if not member.online:
            return True
        # two heartbeats in a row with no session: one is not enough (it may be stale)
        return member.zero_heartbeats >= 2 and member.placed_since_report == 0

    # --- members ---------------------------------------------------------------------------

    async def _start_member(self, config: MemberConfig) -> Member:
        if self._nursery is None:
            raise ControlError(f"{self.name}: cluster is not running")
        member = Member(config)
        self._hook(member.client)
        tasks = _MemberTasks(member)
        self.members[config.name] = member
        self._tasks[config.name] = tasks
        self._member_list = list(self.members.values())
        await self._nursery.start(self._run_member, tasks)
        return member

    async def _run_member(
        self, tasks: _MemberTasks, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Client and health task of one member; a failure here never reaches the cluster."""
        member = tasks.member
        client = member.client
        started = False
        reported: str | None = None  # the failure last logged: each one once, not per retry
        with tasks.scope:
            try:
                while True:
                    try:
                        if member.config.protocol == "embedded" and tasks.embedded is None:
                            tasks.embedded = await _start_embedded(member.config)
                        async with trio.open_nursery() as nursery:
                            await nursery.start(client.run)
                            reported = None
                            if not started:
                                started = True
                                task_status.started()
                            await health.watch(
                                member,
                                self.config.heartbeat_interval,
                                self.config.offline_probe_interval,
                                self.config.member_timeout,
                            )
                    except Exception as exc:
                        failure = describe_failure(exc)
                        if failure != reported:
                            reported = failure
                            log.warning(
                                "%s: member %s (%s) failed: %s",
                                self.name,
                                member.name,
                                member.config.address,
                                failure,
                            )
                        member.set_online(False)
                        client.close()
                        client = member.client = make_client(
                            member.config.address, member.config.cmd_out_address
                        )
                        self._hook(client)
                    if not started:
                        started = True
                        task_status.started()
                    await trio.sleep(self.config.offline_probe_interval)
            finally:
                client.close()
                tasks.embedded = None
        if not started:
            task_status.started()

    def _hook(self, client: object) -> None:
        if isinstance(client, UdpMemberClient):
            client.after_batch = self._drain_all

    def member(self, name: str) -> Member:
        member = self.members.get(name)
        if member is None:
            raise ControlError(f"{name}: RTPproxy not found")
        return member

    async def add_member(self, config: MemberConfig) -> None:
        if config.name in self.members:
            raise ControlError(f"{config.name}: RTPproxy already exists")
        await self._start_member(config)
        self.config = self.config.model_copy(update={"members": [*self.config.members, config]})
        self.router.config = self.config

    def _remove_now(self, name: str) -> None:
        member = self.members.pop(name, None)
        tasks = self._tasks.pop(name, None)
        if member is None:
            return
        member.removed = True
        member.set_online(False)
        self._member_list = list(self.members.values())
        self.sessions.drop_member(member)
        if tasks is not None:
            tasks.scope.cancel()
        members = [m for m in self.config.members if m.name != name]
        self.config = self.config.model_copy(update={"members": members})
        self.router.config = self.config

    def remove_member(self, name: str, timeout: float | None) -> None:
        """Drain: no new calls; removed when its calls have ended or at the deadline."""
        member = self.member(name)
        if not member.online:
            self._remove_now(name)
            return
        self._set_status(member, MemberStatus.DRAINING)
        member.leaving = True
        if timeout is not None:
            member.drain_deadline = trio.current_time() + timeout
        member.zero_heartbeats = 0

    def set_status(self, name: str, status: MemberStatus) -> None:
        member = self.member(name)
        member.drain_deadline = None
        member.leaving = False
        self._set_status(member, status)

    def _set_status(self, member: Member, status: MemberStatus) -> None:
        member.status = status
        member.config = member.config.model_copy(update={"status": status})
        members = [member.config if m.name == member.name else m for m in self.config.members]
        self.config = self.config.model_copy(update={"members": members})
        self.router.config = self.config

    async def replace_member(self, config: MemberConfig) -> None:
        """Apply a changed member config; an address change reconnects, calls stay bound."""
        member = self.member(config.name)
        old = member.config
        member.config = config
        member.status = config.status
        member.drain_deadline = None
        member.leaving = False
        members = [config if m.name == config.name else m for m in self.config.members]
        self.config = self.config.model_copy(update={"members": members})
        self.router.config = self.config
        if (
            old.address != config.address
            or old.protocol != config.protocol
            or old.cmd_out_address != config.cmd_out_address
        ):
            old_tasks = self._tasks.pop(config.name)
            old_tasks.scope.cancel()
            member.set_online(False)
            member.client = make_client(config.address, config.cmd_out_address)
            self._hook(member.client)
            tasks = _MemberTasks(member)
            self._tasks[config.name] = tasks
            assert self._nursery is not None
            await self._nursery.start(self._run_member, tasks)

    def update_settings(self, config: ClusterConfig) -> None:
        """Apply cluster-level settings that need no restart (timers, capacity limit)."""
        keep = {
            "members": self.config.members,
            "listen": self.config.listen,
            "listen_options": self.config.listen_options,  # see change_listeners
            # the running relay verifies tags with its own prefix and key: the router
            # must go on issuing them alike until the cluster is restarted
            "disconnect_notify": self.config.disconnect_notify,
        }
        self.config = config.model_copy(update=keep)
        self.router.config = self.config
        self.sessions.idle_timeout = self.config.session_idle_timeout

    def lasting_config(self) -> ClusterConfig:
        """The configuration without the members on their way out (what ``save`` writes)."""
        members = [m for m in self.config.members if not self.members[m.name].leaving]
        return self.config.model_copy(update={"members": members})

    # --- reporting -------------------------------------------------------------------------

    def info(self) -> ClusterInfo:
        """What ``ls`` shows; O(members), never a scan of the session table."""
        sessions = self.sessions
        now = trio.current_time()
        members = []
        for member in self._member_list:
            cfg = member.config
            left = None if member.drain_deadline is None else max(0.0, member.drain_deadline - now)
            members.append(
                MemberInfo(
                    name=cfg.name,
                    protocol=str(cfg.protocol),
                    address=cfg.address.address,
                    weight=cfg.weight,
                    capacity=cfg.capacity,
                    status=str(member.status),
                    online=member.online,
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
                )
            )
        return ClusterInfo(
            index=self.index,
            name=self.name,
            addresses=[str(ep) for ep in self.config.listen],
            capacity_limit=str(self.config.capacity_limit),
            members=members,
        )


async def _close_after(listener: Listener, grace: float) -> None:
    await trio.sleep(grace)
    listener.close()


async def _start_embedded(config: MemberConfig) -> Any:
    """Start an in-process RTPproxy (the optional rtp-io wheel) listening on the address."""
    try:
        import rtp.io
    except ImportError:
        raise ControlError(
            f"{config.name}: protocol embedded needs the rtp-io wheel"
            " (pip install 'rtpcluster[embedded]')"
        ) from None
    args = ["-s", str(config.address), "-F", "-d", "err"]
    host = config.address.host if not config.address.kind.is_path else "127.0.0.1"
    args += ["-l", host or "127.0.0.1"]
    if config.rtp_port_min is not None:
        args += ["-m", str(config.rtp_port_min)]
    if config.rtp_port_max is not None:
        args += ["-M", str(config.rtp_port_max)]
    return await trio.to_thread.run_sync(lambda: rtp.io.rtpproxy(extra_args=args, modules=[]))
