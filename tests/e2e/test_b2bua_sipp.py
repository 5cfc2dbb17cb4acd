"""The Sippy B2BUA relays sipp calls through rtpcluster to real RTPproxies.

sipp UAC -> Sippy B2BUA -> sipp UAS (echoing RTP). The B2BUA is rtpcluster's client
(``-r udp:...``): it sends ``U`` for both legs (never ``L``) and ``D`` at the end. Each
member has its own RTP port block, so the port in the SDP the UAC gets back tells which
member relays the call.

Two runs:

- a member is killed (SIGKILL) mid-run: every call set up after that is placed on the
  survivor and completes, with its media relayed;
- the members' only notify target is rtpcluster's relay (``-n tcp:%%CC_SELF%%:PORT``);
  no media flows, so RTPproxy's session timeout fires (``-T``), the notification goes
  through the relay to the B2BUA's socket, and the B2BUA hangs the call up: the BYE
  reaches both the UAS and the UAC.
"""

from __future__ import annotations

import contextlib
import re
import socket
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest

from tests.e2e.b2bua import (
    B2BUA_UAC_SCENARIO,
    B2BUA_UAS_SCENARIO,
    UAC_WAITS_FOR_BYE,
    B2bua,
    sippy_missing,
    uac_hangups,
    uas_hangups,
)
from tests.e2e.e2e_harness import (
    CLUSTER,
    LOOPBACK,
    RUN_TIMEOUT,
    Member,
    Sipp,
    Tools,
    UacRun,
    env_port,
    members,
    owner_of,
    report,
    required_tools,
    sipp_uas,
    start_cluster,
)
from tests.e2e.e2e_harness import _stamp as sipp_time
from testsupport import RtpclusterProcess, free_port, wait_until

pytestmark = pytest.mark.e2e

TTL = 2  # RTPproxy's session timeout (-T, and -W for the set-up) in the notify run


@pytest.fixture(scope="session")
def b2bua_tools() -> Tools:
    return required_tools("B2BUA end-to-end", kamailio=False, more=[sippy_missing()])


@dataclass
class B2buaRig:
    tools: Tools
    nodes: list[Member]
    cluster: RtpclusterProcess
    sipp: Sipp
    b2bua: B2bua
    notify_socket_dir: Path

    def node(self, name: str) -> Member:
        return next(n for n in self.nodes if n.name == name)


class B2buaRigFactory(Protocol):
    def __call__(self, weights: list[int], *, notify: bool = False) -> B2buaRig: ...


@pytest.fixture
def b2bua_rig(b2bua_tools: Tools, tmp_path: Path) -> Iterator[B2buaRigFactory]:
    """Build the rig with ``build(weights, notify=...)``; stopped by PID at the end."""
    with contextlib.ExitStack() as stack:
        short = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rtpc-b2b-")))

        def build(weights: list[int], *, notify: bool = False) -> B2buaRig:
            relay_port = free_port(socket.SOCK_STREAM)
            extra = ["-n", f"tcp:%%CC_SELF%%:{relay_port}", "-T", str(TTL), "-W", str(TTL)]
            nodes = stack.enter_context(
                members(tmp_path / "members", weights, extra=extra if notify else ())
            )
            sipp = stack.enter_context(
                sipp_uas(tmp_path / "sipp", b2bua_tools, uas_scenario=B2BUA_UAS_SCENARIO)
            )
            cluster = start_cluster(
                tmp_path,
                nodes,
                short,
                notify=(relay_port, f"{short}/") if notify else None,
                log_level="debug" if notify else "info",
            )
            stack.callback(cluster.stop)
            # The B2BUA asks VF 20081224 once, when it comes online: only with members
            # online does rtpcluster answer it from their real capability.
            names = {n.name for n in nodes}

            def all_online() -> bool:
                info = cluster.members_info(CLUSTER)
                return set(info) == names and all(m.get("online") for m in info.values())

            def listed() -> str:
                return f"every member online: {cluster.members_info(CLUSTER)}"

            wait_until(all_online, listed, 20, 0.1)
            b2bua = B2bua(
                workdir=tmp_path / "b2bua",
                sip_port=env_port("RTPCLUSTER_E2E_B2BUA_PORT"),
                route=f"{LOOPBACK}:{sipp.uas_port}",
                rtp_proxy=f"udp:{LOOPBACK}:{cluster.udp_port}",
                command_socket=short / "b2bua.sock",
            )
            stack.callback(b2bua.stop)
            b2bua.start()
            rig = B2buaRig(b2bua_tools, nodes, cluster, sipp, b2bua, short)
            wait_for_b2bua_calls(rig)
            return rig

        yield build


def wait_for_b2bua_calls(rig: B2buaRig) -> None:
    """Place single short calls until one completes: the B2BUA's relay client is online."""

    def one_completes() -> bool:
        run = rig.sipp.start_uac(
            rig.b2bua.sip_port,
            calls=1,
            rate=1,
            media=False,
            talk_ms=0,
            scenario_text=B2BUA_UAC_SCENARIO,
        )
        rc = run.wait(RUN_TIMEOUT)
        return rc == 0 and all(r.completed for r in run.records().values())

    # Each try is a sipp run of its own: no pause between them.
    wait_until(one_completes, f"a call through the B2BUA; see {rig.b2bua.log_path}", 30, 0)


def counter(node: Member, name: str) -> int:
    reply = node.ask(f"G {name}", timeout=1.0)
    assert reply is not None, f"{node.name} does not answer G"
    return int(reply.split()[0])


def active_sessions(node: Member) -> int | None:
    stats = node.stats(timeout=0.5)
    return None if stats is None else stats.active_sessions


def finish(run: UacRun) -> int:
    return run.wait(RUN_TIMEOUT)


# --------------------------------------------------------------------------- the runs


def test_b2bua_calls_move_to_the_survivor_when_a_member_is_killed(
    b2bua_rig: B2buaRigFactory,
) -> None:
    rig = b2bua_rig([1, 1])
    victim, survivor = rig.node("m2"), rig.node("m1")
    relayed_before = counter(survivor, "npkts_relayed")
    run = rig.sipp.start_uac(rig.b2bua.sip_port, calls=40, rate=5, scenario_text=B2BUA_UAC_SCENARIO)
    wait_until(lambda: (active_sessions(victim) or 0) >= 4, "calls on the victim", 30, 0.1)
    fault_at = time.time()
    victim.kill()
    rc = finish(run)
    records = run.records()
    owners = {cid: owner_of(r.answer_port, rig.nodes) for cid, r in records.items()}
    assert all(owner is not None for owner in owners.values()), "an answer port is no member's"
    after = [cid for cid, r in records.items() if r.invite_at > fault_at]
    assert after, "no call was placed after the kill"
    late_on_victim = [cid for cid in after if owners[cid] is victim]
    assert not late_on_victim, f"{len(late_on_victim)} calls set up after the kill on m2"
    not_completed = [cid for cid in after if not records[cid].completed]
    assert not not_completed, f"calls placed after the kill did not complete: {not_completed}"
    on_survivor = [cid for cid, owner in owners.items() if owner is survivor]
    assert all(records[cid].completed for cid in on_survivor)
    # Each call carries the pcap to the UAS and its echo back, both through the member.
    relayed = counter(survivor, "npkts_relayed") - relayed_before
    ratio = relayed / (2 * rig.tools.pcap_packets * len(on_survivor))
    assert ratio > 0.75, f"m1 relayed only {ratio:.0%} of its calls' media"
    wait_until(
        lambda: active_sessions(survivor) == 0,
        lambda: f"no sessions left on m1: {active_sessions(survivor)}",
        10,
        0.2,
    )
    split = Counter(owner.name for owner in owners.values() if owner is not None)
    report(
        f"b2bua, kill m2 mid-run: sipp exit {rc}, {len(records)}/{run.calls} calls set up, "
        f"{sum(r.completed for r in records.values())} completed; split {dict(split)}; "
        f"{len(after)} placed after the kill, all on m1; m1 media relayed {ratio:.3f}"
    )


def test_b2bua_hangs_up_when_the_relay_brings_the_session_timeout(
    b2bua_rig: B2buaRigFactory,
) -> None:
    rig = b2bua_rig([1, 1], notify=True)
    calls = 4
    timeouts_before = sum(counter(n, "nsess_timeout") for n in rig.nodes)
    run = rig.sipp.start_uac(
        rig.b2bua.sip_port, calls=calls, rate=4, media=False, scenario_text=UAC_WAITS_FOR_BYE
    )
    rc = finish(run)
    records = run.records()
    hung_up = uac_hangups(run.log)
    assert rc == 0 and len(records) == calls and set(hung_up) == set(records), (
        f"sipp exit {rc}; {len(records)} set up, {len(hung_up)} hung up by the B2BUA\n"
        + run.error_tail()
    )
    # Every probe call of the rig and every timed-out call reached the UAS's BYE handler.
    uas_byes = uas_hangups(rig.sipp.uas_log)
    assert len(uas_byes) >= calls
    # The sessions ended by RTPproxy's timeout (no D came first) ...
    timeouts = sum(counter(n, "nsess_timeout") for n in rig.nodes) - timeouts_before
    assert timeouts >= calls, f"only {timeouts} sessions timed out"
    # ... and each notification went through the relay to the B2BUA's socket: the tag
    # delivered is the B2BUA's own, "r <call number>".
    log = rig.cluster.log_path.read_text(errors="replace")
    socket_path = re.escape(str(rig.b2bua.command_socket))
    delivered = re.findall(rf"notify relay: delivered b'(r \d+)' to \S*{socket_path}", log)
    assert len(delivered) >= calls, f"relay delivered {delivered}; see {rig.cluster.log_path}"
    held = [sipp_time(hung_up[cid]) - (r.invite_at + r.setup_s) for cid, r in records.items()]
    assert min(held) >= TTL - 0.5, f"a call was hung up before the {TTL} s TTL: {held}"
    report(
        f"b2bua, session timeout through the relay: {calls} calls hung up by the B2BUA, "
        f"{len(delivered)} notifications delivered, call held {min(held):.1f}-{max(held):.1f} s "
        f"(TTL {TTL} s)"
    )
