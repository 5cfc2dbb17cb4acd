"""Fixtures for the end-to-end tests: tool discovery, the rig, and a figures report.

The tests need Kamailio (with its rtpproxy module), sipp (Debian: sip-tester) and a
pcap that sipp ships; ``.ci/install-e2e-deps`` installs them on Debian. Where they
are missing the tests skip with a message saying what is missing, unless
RTPCLUSTER_E2E_REQUIRED=1 is set (CI), in which case they fail.

Ports are picked free at run time unless set: RTPCLUSTER_E2E_KAMAILIO_PORT,
RTPCLUSTER_E2E_CLUSTER_PORT, RTPCLUSTER_E2E_MEMBER<N>_PORT, RTPCLUSTER_E2E_UAS_PORT,
RTPCLUSTER_E2E_UAS_MEDIA_PORT; the members' RTP ports are blocks of 1000 from
RTPCLUSTER_E2E_RTP_BASE (default 61000, above Linux's ephemeral range). Programs:
RTPCLUSTER_E2E_KAMAILIO, RTPCLUSTER_E2E_SIPP, RTPCLUSTER_E2E_KAMAILIO_MODULES,
RTPCLUSTER_E2E_PCAP.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.e2e_harness import (
    FIGURES,
    Cluster,
    Kamailio,
    Rig,
    RigFactory,
    Sipp,
    Tools,
    env_port,
    find_pcap,
    find_tool,
    kamailio_modules_dir,
    members,
    pcap_packet_count,
)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("rtpcluster e2e figures")
        for line in FIGURES:
            terminalreporter.write_line(line)


def _missing_tools() -> tuple[Tools | None, list[str]]:
    missing: list[str] = []
    kamailio = find_tool("kamailio")
    sipp = find_tool("sipp")
    pcap = find_pcap()
    if kamailio is None:
        missing.append("kamailio (Debian package kamailio)")
    else:
        try:
            kamailio_modules_dir()
        except RuntimeError:
            missing.append("Kamailio's rtpproxy module (rtpproxy.so)")
    if sipp is None:
        missing.append("sipp (Debian package sip-tester)")
    if pcap is None:
        missing.append("g711a.pcap from sipp (Debian package sip-tester; or RTPCLUSTER_E2E_PCAP)")
    try:
        import rtp.io  # noqa: F401
    except ImportError:
        missing.append("the rtp-io wheel (pip install rtp-io)")
    if missing or kamailio is None or sipp is None or pcap is None:
        return None, missing
    packets, seconds = pcap_packet_count(pcap)
    return Tools(kamailio, sipp, pcap, packets, seconds), []


@pytest.fixture(scope="session")
def tools() -> Tools:
    found, missing = _missing_tools()
    if found is None:
        message = (
            "end-to-end tools missing: "
            + "; ".join(missing)
            + " (run .ci/install-e2e-deps as root)"
        )
        if os.environ.get("RTPCLUSTER_E2E_REQUIRED") == "1":
            pytest.fail(message + " and RTPCLUSTER_E2E_REQUIRED=1 is set", pytrace=False)
        pytest.skip(message)
    return found


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short temporary directory for unix sockets (sun_path holds 107 bytes)."""
    with tempfile.TemporaryDirectory(prefix="rtpc-e2e-") as name:
        yield Path(name)


@pytest.fixture
def make_rig(tools: Tools, tmp_path: Path, short_dir: Path) -> Iterator[RigFactory]:
    """Build a rig; everything it started is stopped by PID when the test ends.

    ``mode``: ``direct`` (Kamailio's own set of the members), ``udp`` or ``unix``
    (Kamailio points at rtpcluster over that kind of socket).
    """
    with contextlib.ExitStack() as stack:

        def build(mode: str, weights: list[int], *, talk_ms: int | None = None) -> Rig:
            nodes = stack.enter_context(members(tmp_path / "members", weights))
            talk = talk_ms if talk_ms is not None else int(tools.pcap_seconds * 1000) + 500
            sipp = Sipp(
                workdir=tmp_path / "sipp",
                binary=tools.sipp,
                pcap=tools.pcap,
                uas_port=env_port("RTPCLUSTER_E2E_UAS_PORT"),
                uas_media_port=env_port("RTPCLUSTER_E2E_UAS_MEDIA_PORT") & ~1,
                talk_ms=talk,
            )
            stack.callback(sipp.stop)
            sipp.start_uas()
            cluster: Cluster | None = None
            if mode == "direct":
                sock = " ".join(f"udp:127.0.0.1:{n.ctl_port}={n.weight}" for n in nodes)
            else:
                cluster = Cluster(
                    name="e2e",
                    udp_port=env_port("RTPCLUSTER_E2E_CLUSTER_PORT"),
                    unix_path=short_dir / "ctl.sock",
                    admin_path=short_dir / "admin.sock",
                    config_path=tmp_path / "rtpcluster.xml",
                    log_path=tmp_path / "rtpcluster.log",
                )
                stack.callback(cluster.terminate)
                cluster.start(nodes)
                if mode == "udp":
                    sock = f"udp:127.0.0.1:{cluster.udp_port}"
                elif mode == "unix":
                    sock = f"unix:{cluster.unix_path}"
                else:
                    raise ValueError(mode)
            kamailio = Kamailio(
                workdir=tmp_path / "kamailio",
                port=env_port("RTPCLUSTER_E2E_KAMAILIO_PORT"),
                rtpproxy_sock=sock,
                uas_port=sipp.uas_port,
            )
            stack.callback(kamailio.terminate)
            kamailio.start()
            return Rig(tools, tmp_path, nodes, kamailio, sipp, cluster)

        yield build
