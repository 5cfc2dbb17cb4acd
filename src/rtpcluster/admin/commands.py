"""The admin commands: ``ls``, ``modify``, ``create``, ``destroy``, ``reload``, ``save`` ...

Every command talks only to a :class:`~rtpcluster.cluster.control.ServiceControl`.
Plain-text replies keep the original RTP Cluster's wording so operators' scripts go on
working; ``--json`` is an addition.

In ``ls``, *active* members are the online ones and *inactive* the offline ones, as in
the original: the member lists of ``ls <cluster>`` are headed the same way. The newer
``online members = N (A active, S suspended, D draining)`` line splits the online ones
by status.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated

import pydantic
import trio

from rtpcluster.admin import saving
from rtpcluster.admin.registry import (
    FieldList,
    Flag,
    Option,
    Registry,
    Reply,
    Rest,
    unique_fields,
)
from rtpcluster.cluster.control import (
    ClusterInfo,
    ControlError,
    MemberInfo,
    ServiceControl,
    StoreInfo,
    cluster_document,
    clusters_document,
)
from rtpcluster.config import (
    ConfigError,
    cluster_from_fields,
    dump_config,
    member_changes_from_fields,
    member_from_fields,
)
from rtpcluster.config.models import drain_timeout


@dataclass(frozen=True, slots=True)
class AdminContext:
    """What a top-level command runs against."""

    control: ServiceControl
    save_dirs: tuple[str, ...] = ()  # where ``save PATH`` may write; () the config's dir


@dataclass(frozen=True, slots=True)
class ModifyContext:
    """What a ``modify <cluster> <action>`` runs against: the cluster is already named."""

    control: ServiceControl
    cluster: str


_REFUSALS: tuple[type[Exception], ...] = (ControlError, ConfigError)

ADMIN: Registry[AdminContext] = Registry(errors=_REFUSALS)
MODIFY: Registry[ModifyContext] = Registry(
    unknown=lambda word: f'unsupported action: "{word}"', errors=_REFUSALS
)


class _Args(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")


class NoArgs(_Args):
    pass


class LsArgs(_Args):
    cluster: str | None = None
    as_json: Annotated[bool, Flag("json")] = False


class ModifyArgs(_Args):
    cluster: str
    action: str
    args: Annotated[list[str], Rest()] = []


class MemberArgs(_Args):
    member: str


class RemoveArgs(_Args):
    member: str
    timeout: Annotated[float | None, Option(), pydantic.BeforeValidator(drain_timeout)] = None


class SetArgs(_Args):
    member: str
    fields: Annotated[list[tuple[str, str]], FieldList()]


class FieldsArgs(_Args):
    fields: Annotated[list[tuple[str, str]], FieldList()]


class CreateArgs(_Args):
    cluster: str
    fields: Annotated[list[tuple[str, str]], FieldList()]


class ClusterArgs(_Args):
    cluster: str


class ReloadArgs(_Args):
    dry_run: Annotated[bool, Flag()] = False


class SaveArgs(_Args):
    path: str | None = None


# --- ls ---------------------------------------------------------------------------


def cluster_summary(info: ClusterInfo) -> list[str]:
    """The ``ls`` block of one cluster."""
    online = [m for m in info.members if m.online]
    by_status = {s: sum(1 for m in online if m.status == s) for s in _STATUSES}
    offline = len(info.members) - len(online)
    return [
        f"Cluster: #{info.index}",
        f"    name = {info.name}",
        *(f"    address = {address}" for address in info.addresses),
        f"    active members = {len(online)}",
        f"    inactive members = {offline}",
        f"    online members = {len(online)} ({by_status['ACTIVE']} active, "
        f"{by_status['SUSPENDED']} suspended, {by_status['DRAINING']} draining)",
        f"    offline members = {offline}",
    ]


_STATUSES = ("ACTIVE", "SUSPENDED", "DRAINING")


def member_block(index: int, member: MemberInfo) -> list[str]:
    """The ``ls <cluster>`` block of one member."""
    lines = [
        f"    RTPproxy: #{index}",
        f"        name = {member.name}",
        f"        address = {member.address}",
        f"        protocol = {member.protocol}",
    ]
    for label, value in (
        ("wan_address", member.wan_address),
        ("lan_address", member.lan_address),
        ("cmd_out_address", member.cmd_out_address),
    ):
        if value:
            lines.append(f"        {label} = {value}")
    rtt = "n/a" if member.rtt is None else f"{member.rtt:.6f} sec"
    lines.append(f"        weight = {member.weight}")
    if member.effective_weight is not None:
        left = "" if member.slow_start_left is None else f", {member.slow_start_left:.1f} sec left"
        lines.append(f"        effective weight = {member.effective_weight:.1f} (slow start{left})")
    lines.append(f"        capacity = {member.capacity}")
    if member.backup:
        lines.append("        backup = yes")
    lines.append(f"        state = {'online' if member.online else 'offline'}")
    if member.held_down_left is not None:
        lines.append(f"        held down = {member.held_down_left:.1f} sec (flapping)")
    lines += [
        f"        active sessions = {member.active_sessions}",
        f"        capacity utilization = {member.utilisation * 100:.2f}%",
        f"        average rtpc delay = {rtt}",
        f"        status = {member.status}",
        f"        tracked calls = {member.tracked_calls}",
    ]
    if member.drain_deadline is not None:
        lines.append(f"        drain deadline = {member.drain_deadline:.1f} sec")
    return lines


def cluster_detail(info: ClusterInfo) -> list[str]:
    """The ``ls <cluster>`` listing: online members, then offline ones."""
    lines = [f"Active members of the cluster #{info.index}:"]
    online = [m for m in info.members if m.online]
    offline = [m for m in info.members if not m.online]
    for index, member in enumerate(online):
        lines += member_block(index, member)
    lines.append(f"Inactive members of the cluster #{info.index}:")
    for index, member in enumerate(offline):
        lines += member_block(index, member)
    return lines


def store_line(store: StoreInfo) -> str:
    """The last line of ``ls``: which session store, and in what state."""
    if not store.shared:
        return f"Session store: {store.url} (not shared)"
    state = "up" if store.up else "DOWN"
    return (
        f"Session store: {store.url} ({state}; {store.pending} writes queued, "
        f"{store.writes_dropped} dropped; {store.outages} outages; reads "
        f"{store.reads_hit} hit, {store.reads_miss} miss, {store.reads_error} error)"
    )


def _json_lines(document: object) -> list[str]:
    return json.dumps(document, indent=2).splitlines()


@ADMIN.command("ls", args=LsArgs, help="list the clusters, or the members of one cluster")
async def ls(ctx: AdminContext, args: LsArgs) -> Reply:
    if args.cluster is None:
        clusters = ctx.control.clusters()
        store = ctx.control.session_store()
        if args.as_json:
            return Reply(_json_lines(clusters_document(clusters, store)))
        lines = [line for info in clusters for line in cluster_summary(info)]
        return Reply([*lines, store_line(store)])
    info = ctx.control.cluster(args.cluster)
    if args.as_json:
        return Reply(_json_lines(cluster_document(info)))
    return Reply(cluster_detail(info))


# --- modify -----------------------------------------------------------------------


@ADMIN.command(
    "modify", args=ModifyArgs, help="change the members of a cluster (actions listed below)"
)
async def modify(ctx: AdminContext, args: ModifyArgs) -> Reply:
    # Reordered so the nested registry sees the action word first.
    sub = ModifyContext(control=ctx.control, cluster=args.cluster)
    return await MODIFY.dispatch_words(sub, [args.action, *args.args])


@MODIFY.command(
    "add",
    args=FieldsArgs,
    help="add a member: name, protocol, address, capacity, weight "
    "[, status, backup=yes|no, wan_address, lan_address, cmd_out_address]",
)
async def modify_add(ctx: ModifyContext, args: FieldsArgs) -> Reply:
    fields = unique_fields(args.fields)
    info = ctx.control.cluster(ctx.cluster)
    member = member_from_fields(fields, info.name)
    await ctx.control.add_member(info.name, member)
    return Reply()


@MODIFY.command(
    "set",
    args=SetArgs,
    help="change a member at once, keeping its calls: weight=N[,capacity=M][,backup=yes|no]",
)
async def modify_set(ctx: ModifyContext, args: SetArgs) -> Reply:
    info = ctx.control.cluster(ctx.cluster)
    changes = member_changes_from_fields(unique_fields(args.fields), info.name, args.member)
    await ctx.control.set_member(info.name, args.member, changes)
    return Reply()


@MODIFY.command(
    "delete",
    "remove",
    args=RemoveArgs,
    help="drain a member, then remove it (at the latest after timeout seconds)",
)
async def modify_delete(ctx: ModifyContext, args: RemoveArgs) -> Reply:
    await ctx.control.remove_member(ctx.cluster, args.member, args.timeout)
    return Reply()


@MODIFY.command("suspend", "pause", args=MemberArgs, help="stop placing new calls on a member")
async def modify_suspend(ctx: ModifyContext, args: MemberArgs) -> Reply:
    await ctx.control.suspend_member(ctx.cluster, args.member)
    return Reply()


@MODIFY.command("resume", args=MemberArgs, help="place new calls on a suspended member again")
async def modify_resume(ctx: ModifyContext, args: MemberArgs) -> Reply:
    await ctx.control.resume_member(ctx.cluster, args.member)
    return Reply()


# --- clusters, config -------------------------------------------------------------


@ADMIN.command(
    "create",
    args=CreateArgs,
    help="create a cluster: address=KIND:ADDR [, capacity_limit=soft|hard, <timer>=SECONDS, "
    "rise|fall|flap_limit=N]",
)
async def create(ctx: AdminContext, args: CreateArgs) -> Reply:
    cluster = cluster_from_fields(args.cluster, unique_fields(args.fields))
    await ctx.control.create_cluster(cluster)
    return Reply()


@ADMIN.command("destroy", args=ClusterArgs, help="drain every member, then remove the cluster")
async def destroy(ctx: AdminContext, args: ClusterArgs) -> Reply:
    await ctx.control.destroy_cluster(args.cluster)
    return Reply()


@ADMIN.command("reload", args=ReloadArgs, help="re-read the config file and apply what changed")
async def reload(ctx: AdminContext, args: ReloadArgs) -> Reply:
    plan = await ctx.control.reload(dry_run=args.dry_run)
    totals = f"{plan.clusters} clusters and {plan.members} RTP proxies"
    warnings = [f"warning: {warning}" for warning in plan.warnings]
    if args.dry_run:
        return Reply([*plan.changes, *warnings, f"Would load {totals} (dry run, nothing changed)"])
    return Reply([*plan.changes, *warnings, f"Loaded {totals}"])


@ADMIN.command(
    "save",
    args=SaveArgs,
    help="write the running config (runtime changes included) to the config file, "
    "or to a file in an allowed directory",
)
async def save(ctx: AdminContext, args: SaveArgs) -> Reply:
    config_path = ctx.control.config_path
    allowed = saving.allowed_directories(config_path, ctx.save_dirs)
    target = saving.save_target(args.path, config_path, allowed)
    data = dump_config(ctx.control.running_config()).encode()
    await trio.to_thread.run_sync(saving.write_file, target, data)
    return Reply([f"Saved to {target}"])


# --- session ----------------------------------------------------------------------


@ADMIN.command("help", "h", args=NoArgs, help="this text")
async def help_(ctx: AdminContext, args: NoArgs) -> Reply:
    return Reply([*ADMIN.help_lines(), *MODIFY.help_lines(prefix="modify <cluster> ")])


@ADMIN.command("quit", "q", "exit", args=NoArgs, help="close the connection")
async def quit_(ctx: AdminContext, args: NoArgs) -> Reply:
    return Reply(close=True)


async def run_command(control: ServiceControl, line: str, save_dirs: tuple[str, ...] = ()) -> Reply:
    """Run one admin command line against ``control``."""
    return await ADMIN.dispatch(AdminContext(control=control, save_dirs=save_dirs), line)
