"""The service: builds the nursery tree from a Config and applies runtime changes.

::

    root nursery
    ├── admin server
    ├── signal watcher      SIGTERM/SIGINT stop, SIGHUP reload, SIGUSR1 reopen the log
    ├── http server         optional (--http / <http>): metrics, JSON API, status page
    ├── systemd notifier    READY/STATUS/WATCHDOG when run by systemd ($NOTIFY_SOCKET)
    └── cluster nursery per <rtp_cluster> (cancellable on its own)

It is also the :class:`~rtpcluster.cluster.control.ServiceControl` the admin plane
talks to.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import trio
from pydantic import BaseModel

from rtpcluster.cluster.cluster import Cluster
from rtpcluster.cluster.control import ClusterInfo, ControlError, ReloadPlan
from rtpcluster.config import ClusterConfig, Config, ConfigError, MemberConfig, load_config
from rtpcluster.config.models import MemberStatus
from rtpcluster.sdnotify import Notifier, status_text
from rtpcluster.transport.endpoint import Endpoint

log = logging.getLogger(__name__)

DEFAULT_ADMIN_SOCKET = "/var/run/rtp_cluster.sock"


@dataclass
class ServeOptions:
    config_path: str
    admin_socket: str | None = DEFAULT_ADMIN_SOCKET  # None: no admin socket (tests)
    admin_owner: str | None = None
    reopen_log: Callable[[], None] | None = None
    stop_grace: float = 2.0
    http: Endpoint | None = None  # where the HTTP endpoint listens; None: off
    notifier: Notifier = field(default_factory=lambda: Notifier(None))


class Service:
    """Owns the clusters; every change made at run time goes through here."""

    def __init__(self, config: Config, options: ServeOptions) -> None:
        self._config = config
        self.options = options
        self.running: dict[str, Cluster] = {}
        self._nursery: trio.Nursery | None = None
        self._next_index = 0
        self.stopped = trio.Event()
        self._reload_lock = trio.Lock()
        self._leaving: set[str] = set()  # clusters being destroyed

    # --- the tree -----------------------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[Service] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for cluster_config in self._config.clusters:
                await self._start_cluster(cluster_config)
            if self.options.admin_socket is not None:
                from rtpcluster.admin.server import serve_admin

                await nursery.start(
                    serve_admin, self, self.options.admin_socket, self.options.admin_owner
                )
            nursery.start_soon(self._watch_signals)
            if self.options.http is not None:
                from rtpcluster.http.readings import ServiceStatus
                from rtpcluster.http.server import serve_http

                status = ServiceStatus(self)
                await nursery.start(serve_http, status, self.options.http, self.stopped.wait)
            await nursery.start(self.options.notifier.run, self.status_text)
            task_status.started(self)
            await self.stopped.wait()
            self.options.notifier.stopping()
            await self._stop_clusters()
            nursery.cancel_scope.cancel()

    def stop(self) -> None:
        self.stopped.set()

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

    async def _start_cluster(self, config: ClusterConfig) -> Cluster:
        assert self._nursery is not None
        cluster = Cluster(self._next_index, config)
        self._next_index += 1
        self.running[config.name] = cluster
        try:
            await self._nursery.start(self._run_cluster, cluster)
        except BaseException:
            self.running.pop(config.name, None)
            raise
        return cluster

    async def _run_cluster(
        self, cluster: Cluster, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            await cluster.run(task_status=task_status)
        finally:
            if self.running.get(cluster.name) is cluster:
                del self.running[cluster.name]

    def _cluster(self, name: str) -> Cluster:
        cluster = self.running.get(name)
        if cluster is None:
            raise ControlError(f"{name}: cluster not found")
        return cluster

    # --- ServiceControl ---------------------------------------------------------------------

    @property
    def config_path(self) -> str:
        return self.options.config_path

    def clusters(self) -> list[ClusterInfo]:
        return [c.info() for c in self.running.values()]

    def status_text(self) -> str:
        return status_text(self.clusters())

    def cluster(self, name: str) -> ClusterInfo:
        return self._cluster(name).info()

    async def add_member(self, cluster: str, member: MemberConfig) -> None:
        await self._cluster(cluster).add_member(member)
        log.info("%s: added member %s", cluster, member.name)

    async def remove_member(self, cluster: str, member: str, timeout: float | None) -> None:
        self._cluster(cluster).remove_member(member, timeout)
        log.info("%s: draining member %s", cluster, member)

    async def suspend_member(self, cluster: str, member: str) -> None:
        self._cluster(cluster).set_status(member, MemberStatus.SUSPENDED)

    async def resume_member(self, cluster: str, member: str) -> None:
        self._cluster(cluster).set_status(member, MemberStatus.ACTIVE)

    async def create_cluster(self, cluster: ClusterConfig) -> None:
        if cluster.name in self.running:
            raise ControlError(f"{cluster.name}: cluster already exists")
        in_use = {str(ep) for c in self.running.values() for ep in c.config.listen}
        clash = [str(ep) for ep in cluster.listen if str(ep) in in_use]
        if clash:
            raise ControlError(f"{cluster.name}: address {clash[0]} is in use by another cluster")
        try:
            await self._start_cluster(cluster)
        except Exception as exc:
            raise ControlError(f"{cluster.name}: {exc}") from None
        log.info("created cluster %s", cluster.name)

    async def destroy_cluster(self, name: str) -> None:
        cluster = self._cluster(name)
        self._leaving.add(name)
        for member in list(cluster.members):
            cluster.remove_member(member, None)
        if self._nursery is not None:
            self._nursery.start_soon(self._finish_destroy, cluster)

    async def _finish_destroy(self, cluster: Cluster) -> None:
        """Wait for the drain of every member, then stop the cluster."""
        while cluster.members:
            await trio.sleep(0.5)
        await cluster.stop(self.options.stop_grace)
        self._leaving.discard(cluster.name)
        log.info("destroyed cluster %s", cluster.name)

    def running_config(self) -> Config:
        """What runs now and stays: draining members and clusters being destroyed left out."""
        return Config(
            clusters=[
                c.lasting_config() for c in self.running.values() if c.name not in self._leaving
            ],
            http=self._config.http,
        )

    async def reload(self, dry_run: bool = False) -> ReloadPlan:
        try:
            new = load_config(self.options.config_path)
        except ConfigError as exc:
            raise ControlError(f"reload failed, nothing changed: {exc}") from None
        async with self._reload_lock:
            plan = plan_reload(self.running_config(), new)
            if not dry_run:
                self.options.notifier.reloading()
                try:
                    await self._apply(new)
                finally:
                    self.options.notifier.ready(self.status_text())
        return plan

    async def _apply(self, new: Config) -> None:
        wanted = {c.name: c for c in new.clusters}
        for name in [n for n in self.running if n not in wanted]:
            await self.destroy_cluster(name)
        for name, config in wanted.items():
            cluster = self.running.get(name)
            if cluster is None:
                await self.create_cluster(config)
                continue
            if [str(e) for e in cluster.config.listen] != [str(e) for e in config.listen]:
                # listeners moved: restart the cluster (its calls stay on the members)
                await cluster.stop(self.options.stop_grace)
                while self.running.get(name) is cluster:
                    await trio.sleep(0.01)
                await self.create_cluster(config)
                continue
            cluster.update_settings(config)
            members = {m.name: m for m in config.members}
            for old_name in [n for n in cluster.members if n not in members]:
                cluster.remove_member(old_name, None)
            for member_config in members.values():
                current = cluster.members.get(member_config.name)
                if current is None:
                    await cluster.add_member(member_config)
                elif current.config != member_config:
                    await cluster.replace_member(member_config)


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    """Describe, one line per change, what applying ``new`` over ``old`` does."""
    changes: list[str] = []
    old_clusters = {c.name: c for c in old.clusters}
    for name in old_clusters.keys() - {c.name for c in new.clusters}:
        changes.append(f"cluster {name}: remove (drain)")
    for config in new.clusters:
        name = config.name
        before = old_clusters.get(name)
        if before is None:
            changes.append(f"cluster {name}: add with {len(config.members)} members")
            continue
        if [str(e) for e in before.listen] != [str(e) for e in config.listen]:
            changes.append(f"cluster {name}: listen on {', '.join(map(str, config.listen))}")
        changes += _field_changes(f"cluster {name}", before, config, skip={"members", "listen"})
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
    return ReloadPlan(changes=sorted(changes), clusters=len(new.clusters), members=members)


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
