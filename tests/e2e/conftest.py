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
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.e2e_harness import (
    FIGURES,
    Kamailio,
    Rig,
    RigFactory,
    Tools,
    env_port,
    members,
    required_tools,
    sipp_uas,
    start_cluster,
)
from testsupport import RtpclusterProcess


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("rtpcluster e2e figures")
        for line in FIGURES:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def tools() -> Tools:
    return required_tools("end-to-end", kamailio=True)


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
            sipp = stack.enter_context(sipp_uas(tmp_path / "sipp", tools, talk_ms=talk_ms))
            cluster: RtpclusterProcess | None = None
            if mode == "direct":
                sock = " ".join(f"udp:127.0.0.1:{n.port}={n.weight}" for n in nodes)
            else:
                cluster = start_cluster(tmp_path, nodes, short_dir)
                stack.callback(cluster.stop)
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
