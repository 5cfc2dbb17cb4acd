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

import trio

from rtpcluster.cluster.member import Member
from rtpcluster.protocol import ProtocolError, parse_command, parse_info_reply
from rtpcluster.transport.member_client import MemberError

log = logging.getLogger(__name__)

PROTOCOL_VERSION = "20040107"
REQUIRED_CAPABILITY = "20050322"  # several media streams per call: Kamailio/OpenSIPS need it
KNOWN_CAPABILITIES = ("20081224", "20150617", "20191015")  # asked once when it comes online
HEARTBEAT = parse_command("Ib")
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
        reply = await member.send(HEARTBEAT, timeout)
        member.heartbeat(parse_info_reply(reply), placed_before)
    except MemberError:
        return False  # already counted by Member.send
    except ProtocolError:
        member.note_failure()
        return False
    return True


async def deliver_deferred(member: Member, timeout: float) -> None:
    """Send the deletes kept while the member did not answer, oldest first."""
    while member.deferred and member.online:
        deadline, command = member.deferred[0]
        if deadline < trio.current_time():
            member.deferred.popleft()
            continue
        try:
            await member.send(command, timeout)
        except MemberError:
            return
        member.deferred.popleft()


async def watch(
    member: Member,
    heartbeat_interval: float,
    probe_interval: float,
    timeout: float,
) -> None:
    """The member's health task: runs until the member's nursery is cancelled."""
    reported: str | None = None  # why the last probe failed: logged once, not per probe
    while True:
        if not member.online:
            unfit = await probe(member, timeout)
            if unfit is None:
                reported = None
                log.info("member %s is online", member.name)
                member.set_online(True)
                await heartbeat(member, timeout)
            else:
                if unfit != reported:
                    reported = unfit
                    log.warning("member %s cannot serve: %s", member.name, unfit)
                await trio.sleep(probe_interval)
                continue
        if member.deferred:
            await deliver_deferred(member, timeout)
        if await heartbeat(member, timeout):
            await trio.sleep(heartbeat_interval)
        elif member.online:
            await trio.sleep(RETRY_AFTER_FAILED_HEARTBEAT)
        else:
            log.warning("member %s is offline", member.name)
