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
import os
import re
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
    free_tcp_port,
    sippy_missing,
    uac_hangups,
    uas_hangups,
)
from tests.e2e.e2e_harness import (
    LOOPBACK,
    Cluster,
    Member,
    Sipp,
    UacRun,
    env_port,
    find_pcap,
    find_tool,
    members,
    owner_of,
    pcap_packet_count,
    report,
    wait_until,
)
from tests.e2e.e2e_harness import _stamp as sipp_time

pytestmark = pytest.mark.e2e

RUN_TIMEOUT = 150.0  # seconds a sipp UAC run may take before it is stopped
TTL = 2  # RTPproxy's session timeout (-T, and -W for the set-up) in the notify run


@dataclass(frozen=True)
class B2buaTools:
    sipp: str
    pcap: Path
    pcap_packets: int
    pcap_seconds: float


@pytest.fixture(scope="session")
def b2bua_tools() -> B2buaTools:
    missing: list[str] = []
    sipp = find_tool("sipp")
    pcap = find_pcap()
    if sipp is None:
        missing.append("sipp (Debian package sip-tester)")
    if pcap is None:
        missing.append("g711a.pcap from sipp (Debian package sip-tester; or RTPCLUSTER_E2E_PCAP)")
    try:
        import rtp.io  # noqa: F401
    except ImportError:
        missing.append("the rtp-io wheel (pip install rtp-io)")
    reason = sippy_missing()
    if reason is not None:
        missing.append(reason)
    if missing or sipp is None or pcap is None:
        message = "B2BUA end-to-end tools missing: " + "; ".join(missing)
        if os.environ.get("RTPCLUSTER_E2E_REQUIRED") == "1":
            pytest.fail(message + " and RTPCLUSTER_E2E_REQUIRED=1 is set", pytrace=False)
        pytest.skip(message)
    packets, seconds = pcap_packet_count(pcap)
    return B2buaTools(sipp, pcap, packets, seconds)


@dataclass
class B2buaRig:
    tools: B2buaTools
    nodes: list[Member]
    cluster: Cluster
    sipp: Sipp
    b2bua: B2bua
    notify_socket_dir: Path

    def node(self, name: str) -> Member:
        return next(n for n in self.nodes if n.name == name)


class B2buaRigFactory(Protocol):
    def __call__(self, weights: list[int], *, notify: bool = False) -> B2buaRig: ...


@pytest.fixture
def b2bua_rig(b2bua_tools: B2buaTools, tmp_path: Path) -> Iterator[B2buaRigFactory]:
    """Build the rig with ``build(weights, notify=...)``; stopped by PID at the end."""
    with contextlib.ExitStack() as stack:
        short = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rtpc-b2b-")))

        def build(weights: list[int], *, notify: bool = False) -> B2buaRig:
            relay_port = free_tcp_port()
            extra = ["-n", f"tcp:%%CC_SELF%%:{relay_port}", "-T", str(TTL), "-W", str(TTL)]
            nodes = stack.enter_context(
                members(tmp_path / "members", weights, extra=extra if notify else ())
            )
            sipp = Sipp(
                workdir=tmp_path / "sipp",
                binary=b2bua_tools.sipp,
                pcap=b2bua_tools.pcap,
                uas_port=env_port("RTPCLUSTER_E2E_UAS_PORT"),
                uas_media_port=env_port("RTPCLUSTER_E2E_UAS_MEDIA_PORT") & ~1,
                talk_ms=int(b2bua_tools.pcap_seconds * 1000) + 500,
                uas_scenario=B2BUA_UAS_SCENARIO,
            )
            stack.callback(sipp.stop)
            sipp.start_uas()
            cluster = Cluster(
                name="e2e",
                udp_port=env_port("RTPCLUSTER_E2E_CLUSTER_PORT"),
                unix_path=short / "ctl.sock",
                admin_path=short / "admin.sock",
                config_path=tmp_path / "rtpcluster.xml",
                log_path=tmp_path / "rtpcluster.log",
                notify=(relay_port, f"{short}/") if notify else None,
                log_level="debug" if notify else "info",
            )
            stack.callback(cluster.terminate)
            cluster.start(nodes)
            # The B2BUA asks VF 20081224 once, when it comes online: only with members
            # online does rtpcluster answer it from their real capability.
            names = {n.name for n in nodes}

            def all_online() -> bool:
                info = cluster.members_info()
                return set(info) == names and all(m.get("online") for m in info.values())

            assert wait_until(all_online, timeout=20, interval=0.1), cluster.members_info()
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
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        run = rig.sipp.start_uac(
            rig.b2bua.sip_port,
            calls=1,
            rate=1,
            media=False,
            talk_ms=0,
            scenario_text=B2BUA_UAC_SCENARIO,
        )
        rc = run.wait(RUN_TIMEOUT)
        if rc == 0 and all(r.completed for r in run.records().values()):
            return
    raise AssertionError(
        "no call through the B2BUA completed within 30 s; see " + str(rig.b2bua.log_path)
    )


def counter(node: Member, name: str) -> int:
    reply = node.query(f"G {name}", timeout=1.0)
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
    assert wait_until(lambda: (active_sessions(victim) or 0) >= 4, timeout=30, interval=0.1), (
        "the victim got no call"
    )
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
    assert wait_until(lambda: active_sessions(survivor) == 0, timeout=10, interval=0.2), (
        f"sessions left on m1: {active_sessions(survivor)}"
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
