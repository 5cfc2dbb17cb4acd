"""``--state-file`` in the service (in-process, real RTPproxies): what it writes at stop,
what it takes at start, and that a file it cannot use costs one log line, never the start.
The round trip through real processes is in test_shared_affinity.py."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from rtpcluster.config import Config
from rtpcluster.service import ServeOptions, Service, run_service
from tests.conftest import MemberFactory
from tests.integration.harness import cluster_config, owner_of, wait_online
from testsupport import UdpControlClient, free_port


@asynccontextmanager
async def service_with_state(config: Config, state: Path) -> AsyncIterator[Service]:
    options = ServeOptions(
        config_path="unused.xml", admin_socket=None, stop_grace=0.5, state_file=str(state)
    )
    async with trio.open_nursery() as nursery:
        service: Service = await nursery.start(run_service, config, options)
        for cluster in config.clusters:
            await wait_online(service, cluster.name, len(cluster.members))
        try:
            yield service
        finally:
            service.stop()


async def test_written_at_stop_taken_at_start_aged_and_filtered(
    rtpproxy: MemberFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    proxies = [rtpproxy(), rtpproxy()]
    listen = f"udp:127.0.0.1:{free_port()}"
    config = Config(clusters=[cluster_config(proxies, [listen])])
    state = tmp_path / "sessions.state"
    client = UdpControlClient(listen)
    try:
        async with service_with_state(config, state):
            placed = {}
            for i in range(6):
                reply = await client.command(f"U s{i} 127.0.0.1 4000 f{i}")
                placed[f"s{i}"] = f"m{proxies.index(owner_of(reply, proxies))}"
        lines = state.read_text().splitlines()
        assert lines[0].startswith("rtpcluster-sessions 1 ")
        assert sorted(line.split("\t")[1:3] for line in lines[1:]) == sorted(
            [call, member] for call, member in placed.items()
        )
        # Bindings another start would drop: too old, of a member or cluster not here.
        now = time.time()
        state.write_text(
            f"rtpcluster-sessions 1 {now:.3f}\n"
            + "".join(line + "\n" for line in lines[1:])
            + "c1\told\tm0\t3600.0\n"
            + "c1\tstranger\tm9\t1.0\n"
            + "c9\tother\tm0\t1.0\n"
        )
        async with service_with_state(config, state) as service:
            assert not state.exists()
            sessions = service.running["c1"].sessions
            assert {call: sessions.get(call).name for call in placed} == placed  # type: ignore[union-attr]
            assert sessions.get("old") is None and sessions.get("stranger") is None
            for call in placed:
                assert await client.command(f"D {call} f{call[1:]}") == "0\n"
        messages = [r.getMessage() for r in caplog.records]
        assert any(
            "7 bindings read (1 older than the idle timeout, 1 of clusters" in m for m in messages
        )
        assert any("c1: 6 calls bound from the state file (1 of members" in m for m in messages)
    finally:
        client.close()


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("not a state file\n", "not a session state file"),
        ("rtpcluster-sessions 1 0\nc1\tcall\n", ":2: expected cluster, call-id, member, age"),
        ("rtpcluster-sessions 1 0\nc1\tcall\tm0\t1", "incomplete last line"),
    ],
)
async def test_a_file_it_cannot_use_is_one_error_line_and_an_empty_table(
    rtpproxy: MemberFactory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    content: str,
    reason: str,
) -> None:
    proxy = rtpproxy()
    listen = f"udp:127.0.0.1:{free_port()}"
    config = Config(clusters=[cluster_config([proxy], [listen])])
    state = tmp_path / "sessions.state"
    state.write_text(content)
    async with service_with_state(config, state) as service:
        assert len(service.running["c1"].sessions) == 0
        [error] = [r for r in caplog.records if r.levelno >= logging.ERROR]
        message = error.getMessage()
        assert reason in message and "empty session table" in message
        assert "\n" not in message and error.exc_info is None
    assert state.read_text().startswith("rtpcluster-sessions 1 ")  # written anew at stop
