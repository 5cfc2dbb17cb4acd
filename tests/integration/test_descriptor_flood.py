"""Finding 7: silent connections must not eat the descriptors that serve real clients.

``rtpcluster serve`` runs as its own process with 1,024 descriptors (soft and hard, as
the finding had it: it cannot raise them); this test opens more silent connections to
its unix control socket than that. The service must go on answering a unix ``V`` and
an admin ``ls``, and must not log accept(2) failures.
"""

from __future__ import annotations

import os
import resource
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rtpcluster.admin.client import send_command
from testsupport import ask, stop_process, wait_until

SERVER_DESCRIPTORS = 1024
FLOOD = 1100
SEND_TIMEOUT = struct.pack("ll", 10, 0)  # struct timeval: 10 s


@pytest.fixture
def descriptors() -> Iterator[tuple[int, int]]:
    """(flood size, the server's limit), scaled to what this test process may open."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = FLOOD + 200  # the flood, pytest's own files, the admin client
    if soft < wanted:
        raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
    available = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    flood = min(FLOOD, available - 200)
    # The server needs room for its own 256 + 32 connections and its base descriptors,
    # and fewer descriptors than the flood has connections.
    server = min(SERVER_DESCRIPTORS, flood - 76)
    if server < 400:
        pytest.skip(f"only {available} descriptors for the test process")
    yield flood, server
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_flood_of_silent_connections_leaves_the_service_answering(
    tmp_path: Path, descriptors: tuple[int, int]
) -> None:
    flood, limit = descriptors
    control = tmp_path / "ctl.sock"
    admin = tmp_path / "admin.sock"
    config = tmp_path / "rtp_cluster.xml"
    log = tmp_path / "serve.log"
    # An idle timeout far beyond the test: only the connection limit can save it.
    config.write_text(
        f"""<rtp_cluster_config><rtp_cluster><name>c1</name>
        <listen idle_timeout="3600">unix:{control}</listen>
        </rtp_cluster></rtp_cluster_config>"""
    )

    def limit_descriptors() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    command = [sys.executable, "-m", "rtpcluster", "serve", "-f", "-c", str(config)]
    with log.open("w") as output:
        server = subprocess.Popen(
            [*command, "-s", str(admin), "--log-level", "debug"],
            stdout=output,
            stderr=subprocess.STDOUT,
            preexec_fn=limit_descriptors,
        )
    sockets: list[socket.socket] = []
    try:
        wait_until(lambda: admin.exists() and control.exists(), "the service to listen")
        for _ in range(flood):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sockets.append(sock)
            # Blocking, so that connect waits while the backlog is full (a socket with
            # a Python timeout would fail with EAGAIN instead); SO_SNDTIMEO bounds it.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, SEND_TIMEOUT)
            sock.connect(str(control))
        # The service holds at most its connection limit of them, not every descriptor.
        held = len(os.listdir(f"/proc/{server.pid}/fd"))
        assert held < limit - 100, f"{held} descriptors open of {limit}"
        sockets[0].settimeout(10)
        assert sockets[0].recv(10) == b""  # the longest idle one was dropped

        assert ask(f"unix:{control}", "V", timeout=10) == "20040107\n"
        lines, ok = send_command(str(admin), "ls", 10.0)
        assert ok and "    name = c1" in lines, lines
    finally:
        for sock in sockets:
            sock.close()
        stop_process(server, grace=20)
    text = log.read_text()
    assert f"open file limit: {limit}" in text
    assert "accept failed" not in text
    assert text.count("\n") < 100, text[-2000:]  # no line per dropped connection
