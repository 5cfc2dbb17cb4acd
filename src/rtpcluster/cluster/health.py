"""Health of one member: version check, capability check, heartbeat; offline and back.

A member is online after it answers ``V`` with the protocol version and supports the
multi-stream capability every SIP server asks for. While online it is asked ``Ib``
every ``heartbeat_interval``, counted from the start of the one before, also while they
fail (a failed one is not asked again at once): ``fall`` failed heartbeats take about
``fall`` intervals. The answers feed the load figures. Failed commands and heartbeats
count together, in the member's damping, which takes it out after ``fall`` in a row. An
offline member is probed every ``offline_probe_interval``; once a probe has answered,
every ``heartbeat_interval`` while the good probes go on (its ``rise`` streak), and it
comes back after ``rise`` of them in a row, not before a hold-down has ended. A hung
member answers nothing, so it fails on time-outs exactly like a dead one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from rtpcluster.cluster.member import Asked, Member
from rtpcluster.protocol import (
    CAP_MULTI_STREAM,
    CAP_NOTIFY,
    CAP_SUBCOMMANDS,
    CAP_WILDCARD_NOTIFY,
    PROTOCOL_VERSION,
    ProtocolError,
    parse_command,
    parse_info_reply,
    reply_lines,
)
from rtpcluster.transport.member_client import MemberError

if TYPE_CHECKING:
    from rtpcluster.config.models import ClusterConfig

log = logging.getLogger(__name__)

REQUIRED_CAPABILITY = CAP_MULTI_STREAM  # every SIP server we know refuses a node without it
# Asked once when a member comes online: what the router and the relay need to know.
KNOWN_CAPABILITIES = (CAP_NOTIFY, CAP_WILDCARD_NOTIFY, CAP_SUBCOMMANDS)
HEARTBEAT = "Ib"
HEARTBEAT_LINES = reply_lines(parse_command(HEARTBEAT))  # the five of an I reply


async def probe(member: Member, timeout: float) -> str | None:
    """Ask ``V`` and the required capability; None when the member is fit, else why not."""
    try:
        version = await member.client.request("V", timeout)
        if version.strip() != PROTOCOL_VERSION:
            return f"answers V with {version.strip()!r}, not {PROTOCOL_VERSION}"
        required = await member.client.request(f"VF {REQUIRED_CAPABILITY}", timeout)
        if required.strip() != "1":
            return f"lacks capability {REQUIRED_CAPABILITY}"
        for date in KNOWN_CAPABILITIES:
            reply = await member.client.request(f"VF {date}", timeout)
            member.capabilities[date] = reply.strip() == "1"
        member.capabilities[REQUIRED_CAPABILITY] = True
    except MemberError as exc:
        return str(exc)
    return None


async def heartbeat(member: Member, timeout: float) -> bool:
    placed_before = member.placed_since_report
    try:
        reply = await member.client.request(HEARTBEAT, timeout, HEARTBEAT_LINES)
        info = parse_info_reply(reply)
    except (MemberError, ProtocolError):
        member.record_silence(Asked.HEARTBEAT)
        return False
    member.heartbeat(info, placed_before)
    return True


async def deliver_deferred(member: Member, timeout: float) -> None:
    """Send the deletes kept while the member did not answer, oldest first."""
    while member.deferred and member.online:
        deadline, command = member.deferred[0]
        if deadline < trio.current_time():
            member.deferred.popleft()
            continue
        try:
            await member.client.request(command, timeout)
        except MemberError:
            member.record_silence(Asked.DELETE)
            return
        member.record_answer()
        member.deferred.popleft()


async def watch(
    member: Member,
    settings: Callable[[], ClusterConfig],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The member's health task: runs until the member's nursery is cancelled.

    Started (``task_status``) once the first probe has answered or failed. The timers are
    read from ``settings`` each round, so a reload changes them for running members too.
    Going offline and coming back are the member's moves (its damping's verdicts),
    logged there.
    """
    reported: str | None = None  # why the last probe failed: logged once, not per probe
    started = False
    while True:
        round_start = trio.current_time()
        timers = settings()
        timeout = timers.member_timeout
        if member.online:
            await heartbeat(member, timeout)
            if member.deferred and member.online:
                await deliver_deferred(member, timeout)
            if not started:
                started = True
                task_status.started()
            await trio.sleep_until(round_start + timers.heartbeat_interval)
            continue
        unfit = await probe(member, timeout)
        if unfit is None:
            reported = None
            member.answered_probe()
        else:
            if unfit != reported:
                reported = unfit
                log.warning("%s: cannot serve: %s", member.label, unfit, extra=member.log_context)
            member.probe_failed()
        if not started:
            started = True
            task_status.started()
        if member.online:
            continue  # back: a heartbeat at once, for its load figures
        await trio.sleep_until(_next_probe(member, timers, round_start))


def _next_probe(member: Member, timers: ClusterConfig, round_start: float) -> float:
    """When an offline member is probed next (trio time).

    During a rise streak after the heartbeat interval, so ``rise`` good probes take about
    as long as ``rise`` heartbeats; while held down, after the probe interval or as the
    hold-down ends, whichever comes first (the probe that may bring it back).
    """
    if member.held_down_left() is not None:
        held_until = member.damping.held_until  # the member's clock is trio's
        assert held_until is not None
        return min(round_start + timers.offline_probe_interval, held_until)
    interval = timers.heartbeat_interval if member.rising else timers.offline_probe_interval
    return round_start + interval
