"""The service: builds the nursery tree from a Config and applies runtime changes.

::

    root nursery
    ├── admin server
    ├── signal watcher      SIGTERM/SIGINT stop, SIGHUP reload, SIGUSR1 reopen the log
    ├── http server         optional (--http / <http>): metrics, JSON API, status page
    ├── systemd notifier    READY/STATUS/WATCHDOG when run by systemd ($NOTIFY_SOCKET)
    ├── session store       its writer task (Redis/Valkey); ends at once for the memory store
    └── cluster nursery per <rtp_cluster> (cancellable on its own)

It is also the :class:`~rtpcluster.cluster.control.ServiceControl` the admin plane
talks to.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial

import trio
from pydantic import BaseModel

from rtpcluster.admin.address import DEFAULT_ADMIN_SOCKET
from rtpcluster.cluster.cluster import Cluster
from rtpcluster.cluster.control import ClusterInfo, ControlError, ReloadPlan, StoreInfo
from rtpcluster.config import (
    ClusterConfig,
    Config,
    ConfigError,
    MemberChanges,
    MemberConfig,
    config_warnings,
    load_config,
)
from rtpcluster.config.models import DisconnectNotify, MemberStatus, address_text, same_socket
from rtpcluster.endpoint import Endpoint
from rtpcluster.failures import describe_failure
from rtpcluster.sdnotify import Notifier, status_text
from rtpcluster.store import (
    SessionStore,
    StateFileError,
    StoreUrl,
    open_store,
    parse_store_url,
    read_state_file,
    write_state_file,
)
from rtpcluster.transport.listeners import (
    BoundSockets,
    ListenerError,
    bind_endpoint,
    reopen_endpoint,
)
from rtpcluster.transport.resolve import ResolveError, SocketIdentity, socket_identity

log = logging.getLogger(__name__)

# How long the member addresses of one change may take to resolve, all together: a
# change waits for them, and so do the admin commands behind it.
RESOLVE_TIMEOUT = 5.0


@dataclass
class ServeOptions:
    config_path: str
    admin_socket: str | None = DEFAULT_ADMIN_SOCKET  # None: no admin socket (tests)
    admin_owner: str | None = None
    admin_token_file: str | None = None  # every admin connection must authenticate
    save_dirs: tuple[str, ...] = ()  # where admin `save PATH` may write; () the config's dir
    reopen_log: Callable[[], None] | None = None
    stop_grace: float = 2.0
    http: Endpoint | None = None  # where the HTTP endpoint listens; None: off
    notifier: Notifier = field(default_factory=lambda: Notifier(None))
    session_store: str | None = None  # --session-store: wins over <session_store>
    state_file: str | None = None  # --state-file: the session table written at stop, read at start


@dataclass
class _Prepared:
    """A change made ready, by cluster name: the control sockets it adds, bound, and the
    sockets of kept endpoints whose ``<listen>`` attributes change, shared for their
    successors (see :func:`~rtpcluster.transport.listeners.reopen_endpoint`).

    Whatever is not taken by a cluster is closed with :meth:`close`.
    """

    bound: dict[str, list[BoundSockets]] = field(default_factory=dict)

    def take(self, cluster: str) -> list[BoundSockets]:
        return self.bound.pop(cluster, [])

    def close(self) -> None:
        for sockets in self.bound.values():
            for one in sockets:
                one.close()
        self.bound.clear()


class Service:
    """Owns the clusters; every change made at run time goes through here.

    A change (reload, ``create``, ``modify add``) is made in two steps: first everything
    that can fail is done without touching what runs (new control sockets bound, a new
    mode or owner of a socket file tried, member addresses resolved and compared), then
    it is applied by steps that cannot fail. A refused change leaves the service as it was.
    """

    def __init__(self, config: Config, options: ServeOptions) -> None:
        """Raises StoreUrlError or StoreUnavailable for a session store it cannot use."""
        self._config = config
        self.options = options
        self.store_url: StoreUrl = parse_store_url(options.session_store or config.session_store)
        self.store: SessionStore = open_store(self.store_url)
        self._restored: dict[str, dict[str, tuple[str, float]]] = {}  # from --state-file
        self.running: dict[str, Cluster] = {}
        self._nursery: trio.Nursery | None = None
        self._next_index = 0
        self.stopped = trio.Event()
        self._changing = trio.Lock()  # one change at a time, from its checks to its end
        self._leaving: set[str] = set()  # clusters being destroyed
        self._ended: dict[Cluster, trio.Event] = {}

    # --- the tree -----------------------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[Service] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Bind every control socket first, so a busy one stops the start before anything runs."""
        prepared = await self._prepare(self._config, strict=False)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(self.store.run)  # at once: it connects in the background
                if self.options.state_file is not None:
                    await self._read_state(self.options.state_file)
                await self._start_clusters(self._config.clusters, prepared)
                self._restored.clear()
                if self.options.admin_socket is not None:
                    from rtpcluster.admin.server import serve_admin

                    await nursery.start(
                        partial(
                            serve_admin,
                            token_file=self.options.admin_token_file,
                            save_dirs=self.options.save_dirs,
                        ),
                        self,
                        self.options.admin_socket,
                        self.options.admin_owner,
                    )
                nursery.start_soon(self._watch_signals)
                if self.options.http is not None:
                    from rtpcluster.http.readings import ServiceStatus
                    from rtpcluster.http.server import serve_http

                    status = ServiceStatus(self)
                    await nursery.start(serve_http, status, self.options.http, self.stopped.wait)
                # Last: READY=1 goes out once every socket above is bound.
                await nursery.start(self.options.notifier.run, self.status_text)
                task_status.started(self)
                await self.stopped.wait()
                self.options.notifier.stopping()
                clusters = list(self.running.values())
                await self._stop_clusters()
                with trio.move_on_after(self.options.stop_grace):
                    await self.store.flushed()  # the bindings of the last calls, too
                if self.store.pending():
                    log.warning(
                        "session store %s: %d changes not written at stop",
                        self.store_url,
                        self.store.pending(),
                    )
                if self.options.state_file is not None:
                    await self._write_state(self.options.state_file, clusters)
                nursery.cancel_scope.cancel()
        finally:
            prepared.close()

    def stop(self) -> None:
        self.stopped.set()

    async def _read_state(self, path: str) -> None:
        """Take the bindings of a state file for the clusters about to start."""
        idle = {c.name: c.session_idle_timeout for c in self._config.clusters}
        try:
            state = await trio.to_thread.run_sync(read_state_file, path, idle)
        except StateFileError as exc:
            log.error("state file %s; starting with an empty session table", exc)
            return
        self._restored = state.tables
        log.info(
            "state file %s: %d bindings read (%d older than the idle timeout, %d of clusters"
            " not configured, dropped)",
            path,
            state.loaded,
            state.expired,
            state.unknown_cluster,
        )

    async def _write_state(self, path: str, clusters: Sequence[Cluster]) -> None:
        """Write the session tables of the stopped ``clusters``; a failure is logged."""
        snapshot = {cluster.name: list(cluster.bindings()) for cluster in clusters}
        try:
            written = await trio.to_thread.run_sync(write_state_file, path, snapshot)
        except StateFileError as exc:
            log.error("state file %s", exc)
            return
        log.info("state file %s: %d bindings written", path, written)

    async def _stop_clusters(self) -> None:
        async with trio.open_nursery() as nursery:
            for cluster in list(self.running.values()):
                nursery.start_soon(cluster.stop, self.options.stop_grace)

    async def _watch_signals(self) -> None:
        wanted = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1}
        with trio.open_signal_receiver(*wanted) as signals:
            async for signum in signals:
                if signum in (signal.SIGTERM, signal.SIGINT):
                    log.info("signal %s: stopping", signal.Signals(signum).name)
                    self.stop()
                elif signum == signal.SIGHUP:
                    try:
                        plan = await self.reload()
                    except ControlError as exc:
                        log.error("reload on SIGHUP failed: %s", exc)
                    else:
                        log.info("reload on SIGHUP: %s", "; ".join(plan.changes) or "no changes")
                elif signum == signal.SIGUSR1 and self.options.reopen_log is not None:
                    self.options.reopen_log()

    async def _start_clusters(self, configs: Sequence[ClusterConfig], prepared: _Prepared) -> None:
        """Start new clusters on their bound sockets: all of them, or none (ControlError)."""
        started: list[Cluster] = []
        for config in configs:
            try:
                started.append(await self._start_cluster(config, prepared.take(config.name)))
            except Exception as exc:
                for cluster in reversed(started):
                    await self._stop_now(cluster)
                raise ControlError(f"{config.name}: {describe_failure(exc)}") from None

    async def _start_cluster(self, config: ClusterConfig, bound: list[BoundSockets]) -> Cluster:
        assert self._nursery is not None
        self.store.configure(config.name, config.session_idle_timeout)
        cluster = Cluster(self._next_index, config, self.store)
        restored = self._restored.pop(config.name, None)
        if restored:
            taken, dropped = cluster.restore(restored)
            log.info(
                "%s: %d calls bound from the state file (%d of members not configured)",
                config.name,
                taken,
                dropped,
            )
        self._next_index += 1
        self.running[config.name] = cluster
        self._ended[cluster] = trio.Event()
        try:
            await self._nursery.start(self._run_cluster, cluster, bound)
        except BaseException:
            self.running.pop(config.name, None)
            self._next_index = cluster.index  # a refused change leaves the numbering alone
            raise
        return cluster

    async def _run_cluster(
        self,
        cluster: Cluster,
        bound: list[BoundSockets],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            await cluster.run(bound, task_status=task_status)
        finally:
            for sockets in bound:  # any its listeners did not take over
                sockets.close()
            if self.running.get(cluster.name) is cluster:
                del self.running[cluster.name]
            if cluster.name not in self.running:  # none of that name started since
                self.store.forget(cluster.name)
            self._ended.pop(cluster).set()

    async def _stop_now(self, cluster: Cluster) -> None:
        """Stop a cluster just started by a change that is being refused, and wait for it."""
        ended = self._ended[cluster]
        self.running.pop(cluster.name, None)
        self._next_index = min(self._next_index, cluster.index)
        await cluster.stop(0.0)
        await ended.wait()

    def _cluster(self, name: str) -> Cluster:
        cluster = self.running.get(name)
        if cluster is None:
            raise ControlError(f"{name}: cluster not found")
        return cluster

    # --- checks made before a change --------------------------------------------------------

    async def _prepare(self, new: Config, strict: bool = True) -> _Prepared:
        """Check ``new`` against what runs; bind the control sockets it adds or reopens.

        ``strict`` (a change at run time): new and changed members must resolve. At start
        a member that does not resolve yet only starts offline, and says why in the log.
        Raises ControlError, having closed whatever it bound.
        """
        prepared = _Prepared()
        try:
            for config in new.clusters:
                await self._prepare_cluster(config, prepared, strict)
        except BaseException:
            prepared.close()
            raise
        return prepared

    async def _prepare_cluster(
        self, config: ClusterConfig, prepared: _Prepared, strict: bool
    ) -> None:
        name = config.name
        running = self.running.get(name)
        if name in self._leaving:
            raise ControlError(f"{name}: the cluster is being destroyed; change it once it is gone")
        serving = {} if running is None else {str(li.endpoint): li for li in running.listeners}
        for endpoint in config.listen:
            options = config.listen_options.get(str(endpoint))
            current = serving.get(str(endpoint))
            try:
                if current is None:
                    self._check_not_served(name, endpoint)
                    sockets = await bind_endpoint(endpoint, options)
                elif current.bound.options != options:
                    # Other <listen> attributes: a successor serves the same sockets.
                    sockets = reopen_endpoint(current.bound, options)
                else:
                    continue  # keeps running as it is
            except ListenerError as exc:
                raise ControlError(f"{name}: {exc}") from None
            prepared.bound.setdefault(name, []).append(sockets)
        if running is None and config.disconnect_notify is not None:
            await _check_relay_address(name, config.disconnect_notify)
        before = {} if running is None else {m.name: m for m in running.config.members}
        changed = {
            m.name
            for m in config.members
            if m.name not in before
            or (before[m.name].protocol, before[m.name].address) != (m.protocol, m.address)
        }
        await _check_member_addresses(name, config.members, changed if strict else set())

    def _check_not_served(self, name: str, endpoint: Endpoint) -> None:
        """Refuse a socket that a listener of this service holds (binding it would fail)."""
        for cluster in self.running.values():
            for held in cluster.config.listen:
                if same_socket(held, endpoint):
                    by = "" if str(held) == str(endpoint) else f"{held} of "
                    raise ControlError(
                        f"{name}: {endpoint} is in use by {by}cluster {cluster.name!r}"
                    )

    # --- ServiceControl ---------------------------------------------------------------------

    @property
    def config_path(self) -> str:
        return self.options.config_path

    def clusters(self) -> list[ClusterInfo]:
        return [c.info() for c in self.running.values()]

    def status_text(self) -> str:
        return status_text(self.clusters())

    def session_store(self) -> StoreInfo:
        store, counters = self.store, self.store.counters
        return StoreInfo(
            url=str(self.store_url),
            shared=store.remote,
            up=bool(counters.store_up),
            pending=store.pending(),
            writes_dropped=counters.writes_dropped,
            outages=counters.outages,
            reads_hit=counters.reads_hit,
            reads_miss=counters.reads_miss,
            reads_error=counters.reads_error,
            bind_delay_count=counters.bind_delay_count,
            bind_delay_sum=counters.bind_delay_sum,
            bind_delay_max=counters.bind_delay_max,
        )

    def cluster(self, name: str) -> ClusterInfo:
        return self._cluster(name).info()

    async def add_member(self, cluster: str, member: MemberConfig) -> None:
        async with self._changing:
            target = self._cluster(cluster)
            if member.name in target.members:
                raise ControlError(f"{member.name}: RTPproxy already exists")
            lasting = target.lasting_config().members
            await _check_member_addresses(target.name, [*lasting, member], {member.name})
            await target.add_member(member)
        log.info(
            "%s: added member %s",
            cluster,
            member.name,
            extra={"cluster": cluster, "member": member.name},
        )

    async def remove_member(self, cluster: str, member: str, timeout: float | None) -> None:
        async with self._changing:
            self._cluster(cluster).remove_member(member, timeout)  # the member logs its move

    async def suspend_member(self, cluster: str, member: str) -> None:
        async with self._changing:
            self._cluster(cluster).set_status(member, MemberStatus.SUSPENDED)

    async def resume_member(self, cluster: str, member: str) -> None:
        async with self._changing:
            self._cluster(cluster).set_status(member, MemberStatus.ACTIVE)

    async def set_member(self, cluster: str, member: str, changes: MemberChanges) -> None:
        """Weight, capacity, backup at once: no restart, calls and health stay (logged)."""
        async with self._changing:
            self._cluster(cluster).set_member(member, changes)

    async def create_cluster(self, cluster: ClusterConfig) -> None:
        async with self._changing:
            if cluster.name in self.running:
                raise ControlError(f"{cluster.name}: cluster already exists")
            prepared = _Prepared()
            try:
                await self._prepare_cluster(cluster, prepared, strict=True)
                await self._start_clusters([cluster], prepared)
            finally:
                prepared.close()
        log.info("created cluster %s", cluster.name, extra={"cluster": cluster.name})

    async def destroy_cluster(self, name: str) -> None:
        async with self._changing:
            self._destroy(name)

    def _destroy(self, name: str) -> None:
        cluster = self._cluster(name)
        self._leaving.add(name)
        for member in list(cluster.members):
            cluster.remove_member(member, None)
        if self._nursery is not None:
            self._nursery.start_soon(self._finish_destroy, cluster)

    async def _finish_destroy(self, cluster: Cluster) -> None:
        """Wait for the drain of every member, then stop the cluster."""
        await cluster.wait_until_empty()
        await cluster.stop(self.options.stop_grace)
        self._leaving.discard(cluster.name)
        log.info("destroyed cluster %s", cluster.name, extra={"cluster": cluster.name})

    def running_config(self) -> Config:
        """What runs now and stays: draining members and clusters being destroyed left out."""
        return Config(
            clusters=[
                c.lasting_config() for c in self.running.values() if c.name not in self._leaving
            ],
            http=self._config.http,
            session_store=self._config.session_store,
        )

    async def reload(self, dry_run: bool = False) -> ReloadPlan:
        """Apply the config file as a whole, or refuse it and change nothing.

        A dry run makes the same checks, binding each new control socket for a moment.
        A real one tells systemd RELOADING=1 when it starts and READY=1 when it ends,
        refused or not: the service runs on either way.
        """
        async with self._changing:
            if dry_run:
                return await self._reload(dry_run=True)
            self.options.notifier.reloading()
            try:
                return await self._reload(dry_run=False)
            finally:
                self.options.notifier.ready(self.status_text())

    async def _reload(self, dry_run: bool) -> ReloadPlan:
        """:meth:`reload` under the change lock."""
        try:
            new = load_config(self.options.config_path)
        except ConfigError as exc:
            raise ControlError(f"reload failed, nothing changed: {exc}") from None
        plan = plan_reload(self.running_config(), new, store_flag=self.options.session_store)
        try:
            prepared = await self._prepare(new)
            try:
                if not dry_run:
                    await self._apply(new, prepared)
                    for warning in plan.warnings:
                        log.warning("reload: %s", warning)
            finally:
                prepared.close()
        except ControlError as exc:
            raise ControlError(f"reload failed, nothing changed: {exc}") from None
        return plan

    async def _apply(self, new: Config, prepared: _Prepared) -> None:
        """New clusters first (the one step that may still fail), then the rest."""
        wanted = {c.name: c for c in new.clusters}
        added = [c for c in new.clusters if c.name not in self.running]
        await self._start_clusters(added, prepared)
        for name, config in wanted.items():
            if any(config.name == new_one.name for new_one in added):
                continue
            cluster = self.running[name]
            if _listeners_changed(cluster.config, config):
                await cluster.change_listeners(config, prepared.take(name), self.options.stop_grace)
            cluster.update_settings(config)
            self.store.configure(name, config.session_idle_timeout)
            members = {m.name: m for m in config.members}
            for old_name in [n for n in cluster.members if n not in members]:
                cluster.remove_member(old_name, None)
            for member_config in members.values():
                current = cluster.members.get(member_config.name)
                if current is None:
                    await cluster.add_member(member_config)
                elif current.config != member_config:
                    await cluster.replace_member(member_config)
        for name in [n for n in self.running if n not in wanted and n not in self._leaving]:
            self._destroy(name)


async def _check_relay_address(cluster: str, notify: DisconnectNotify) -> None:
    """Bind the relay's inbound address for a moment: the relay binds it itself later."""
    endpoint = notify.inbound_address
    host = None if endpoint.host in ("*", "") else endpoint.host
    try:
        listeners = await trio.open_tcp_listeners(endpoint.port, host=host)
    except OSError as exc:
        raise ControlError(
            f"{cluster}: disconnect_notify: cannot listen on {endpoint}: {exc.strerror or exc}"
        ) from None
    for listener in listeners:
        await listener.aclose()


async def _check_member_addresses(
    cluster: str, members: Iterable[MemberConfig], must_resolve: Collection[str]
) -> None:
    """Refuse two members on one socket, and a member in ``must_resolve`` that names none.

    The config already refuses two members with the same address as written; resolving
    finds two spellings of one socket. A member that does not resolve and need not is left
    out of the comparison.
    """
    members = list(members)
    identities: dict[str, SocketIdentity] = {}
    failures: dict[str, str] = {}

    async def resolve(member: MemberConfig) -> None:
        try:
            identities[member.name] = await socket_identity(member.address)
        except ResolveError as exc:
            failures[member.name] = str(exc)

    with trio.move_on_after(RESOLVE_TIMEOUT):
        async with trio.open_nursery() as nursery:
            for member in members:
                nursery.start_soon(resolve, member)
    owners: dict[SocketIdentity, MemberConfig] = {}
    for member in members:
        where = f"cluster {cluster!r}: rtpproxy {member.name!r}: <address>"
        identity = identities.get(member.name)
        if identity is None:
            if member.name in must_resolve:
                late = (
                    f"cannot resolve {address_text(member)!r}: no answer in {RESOLVE_TIMEOUT:g} s"
                )
                raise ControlError(f"{where}: {failures.get(member.name, late)}")
            continue
        first = owners.setdefault(identity, member)
        if first is not member:
            same = address_text(first) == address_text(member)
            what = "the address" if same else f"the socket ({address_text(first)})"
            raise ControlError(
                f"{where}: {address_text(member)!r} is already {what} of rtpproxy {first.name!r}"
            )


def plan_reload(old: Config, new: Config, store_flag: str | None = None) -> ReloadPlan:
    """Describe, one line per change, what applying ``new`` over ``old`` does.

    ``store_flag``: the ``--session-store`` the service runs with, if any.
    """
    changes: list[str] = []
    if old.session_store != new.session_store:
        # Shown masked: the URL may hold a password.
        old_url, new_url = parse_store_url(old.session_store), parse_store_url(new.session_store)
        why = "--session-store wins" if store_flag else "needs a restart"
        changes.append(f"session_store {old_url} -> {new_url}: not applied ({why})")
    old_clusters = {c.name: c for c in old.clusters}
    for name in old_clusters.keys() - {c.name for c in new.clusters}:
        changes.append(f"cluster {name}: remove (drain)")
    for config in new.clusters:
        name = config.name
        before = old_clusters.get(name)
        if before is None:
            changes.append(f"cluster {name}: add with {len(config.members)} members")
            continue
        if _listeners_changed(before, config):
            changes.append(f"cluster {name}: listen on {', '.join(map(str, config.listen))}")
        skip = {"members", "listen", "listen_options"}
        changes += _field_changes(f"cluster {name}", before, config, skip=skip)
        old_members = {m.name: m for m in before.members}
        for member in old_members.keys() - {m.name for m in config.members}:
            changes.append(f"cluster {name}: member {member}: remove (drain)")
        for member_config in config.members:
            where = f"cluster {name}: member {member_config.name}"
            was = old_members.get(member_config.name)
            if was is None:
                changes.append(f"{where}: add")
            else:
                changes += _field_changes(where, was, member_config)
    members = sum(len(c.members) for c in new.clusters)
    return ReloadPlan(
        changes=sorted(changes),
        clusters=len(new.clusters),
        members=members,
        warnings=config_warnings(new),
    )


def _listeners_changed(old: ClusterConfig, new: ClusterConfig) -> bool:
    """Whether the sockets must be reopened: other endpoints, or other attributes."""
    endpoints = [str(e) for e in old.listen] != [str(e) for e in new.listen]
    return endpoints or old.listen_options != new.listen_options


def _field_changes(
    where: str, old: BaseModel, new: BaseModel, skip: Collection[str] = ()
) -> list[str]:
    """``<where>: <field> <old> -> <new>`` for every field that differs."""
    return [
        f"{where}: {field} {getattr(old, field)} -> {getattr(new, field)}"
        for field in type(new).model_fields
        if field not in skip and getattr(old, field) != getattr(new, field)
    ]


async def run_service(
    config: Config,
    options: ServeOptions,
    *,
    task_status: trio.TaskStatus[Service] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run until SIGTERM/SIGINT (or ``Service.stop``); the entry point of ``serve``."""
    service = Service(config, options)
    await service.run(task_status=task_status)
