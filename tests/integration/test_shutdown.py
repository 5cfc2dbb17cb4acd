"""A graceful stop: listeners close first, commands in flight still get their replies."""

from __future__ import annotations

from pathlib import Path

import trio

from rtpcluster.config import Config
from rtpcluster.service import ServeOptions, run_service
from tests.conftest import MemberFactory
from tests.integration.harness import cluster_config, owner_of, wait_online
from testsupport import UdpControlClient, free_port


async def test_stop_answers_commands_in_flight_then_closes(
    rtpproxy: MemberFactory, tmp_path: Path
) -> None:
    member = rtpproxy()
    udp = f"udp:127.0.0.1:{free_port()}"
    unix = tmp_path / "ctl.sock"
    config = Config(clusters=[cluster_config([member], [udp, f"unix:{unix}"])])
    options = ServeOptions(config_path="unused.xml", admin_socket=None, stop_grace=2.0)
    client = UdpControlClient(udp)
    async with trio.open_nursery() as nursery:
        service = await nursery.start(run_service, config, options)
        await wait_online(service, "c1", 1)
        owner_of(await client.command("U before 127.0.0.1 4000 f"), [member])
        member.hang()
        try:
            await client.send_raw(b"late U during 127.0.0.1 4000 f t")
            cluster = service.running["c1"]
            with trio.fail_after(5):
                while cluster.front.inflight == 0:
                    await trio.sleep(0.001)
            service.stop()
            # the command in flight is answered (its member is hung: E997 after the
            # member timeout) even though the service is stopping
            reply = await client.receive(timeout=5)
            assert reply == b"late E997\n"
        finally:
            member.unhang()
    assert not unix.exists()
    client.close()
