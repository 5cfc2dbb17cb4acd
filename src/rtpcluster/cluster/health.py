"""Health of one member: version check, capability check, heartbeat; offline and back.

A member is online after it answers ``V`` with the protocol version and supports the
multi-stream capability every SIP server asks for. While online it is asked ``Ib``
every heartbeat interval; that feeds the load figures. Failed commands and heartbeats
count together: after :data:`OFFLINE_AFTER_FAILURES` in a row it goes offline, and it
is probed again every ``offline_probe_interval`` until it answers. A hung member
answers nothing, so it fails on time-outs exactly like a dead one.
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
# A failed heartbeat is asked again this soon: a member that hangs is offline after two
# failures, about 2 x member_timeout after its last answer, not a heartbeat later.
RETRY_AFTER_FAILED_HEARTBEAT = 0.1


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
    Going offline and coming back are the member's moves, logged there.
    """
    reported: str | None = None  # why the last probe failed: logged once, not per probe
    probed = False
    while True:
        timers = settings()
        timeout = timers.member_timeout
        if not member.online:
            unfit = await probe(member, timeout)
            if unfit is None:
                reported = None
                member.answered_probe()
                await heartbeat(member, timeout)
            else:
                if unfit != reported:
                    reported = unfit
                    log.warning(
                        "%s: cannot serve: %s", member.label, unfit, extra=member.log_context
                    )
                if not probed:
                    probed = True
                    task_status.started()
                await trio.sleep(timers.offline_probe_interval)
                continue
        if not probed:
            probed = True
            task_status.started()
        if member.deferred:
            await deliver_deferred(member, timeout)
        if await heartbeat(member, timeout):
            await trio.sleep(timers.heartbeat_interval)
        elif member.online:
            await trio.sleep(RETRY_AFTER_FAILED_HEARTBEAT)
