"""The `embedded` member protocol: an RTPproxy inside the service (rtp-io wheel)."""

from __future__ import annotations

from pathlib import Path

from rtpcluster.config import ClusterConfig, MemberConfig, load_config
from rtpcluster.endpoint import Endpoint
from tests.integration.harness import FAST_TIMERS, running_service
from testsupport import UdpControlClient, free_port

EXAMPLES = Path(__file__).parents[2] / "config"


async def test_embedded_members_serve_calls() -> None:
    listen = f"udp:127.0.0.1:{free_port()}"
    members = [
        MemberConfig.model_validate(
            {
                "name": f"e{i}",
                "protocol": "embedded",
                "address": f"udp:127.0.0.1:{free_port()}",
                "rtp_port_min": low,
                "rtp_port_max": low + 999,
            }
        )
        for i, low in enumerate((41000, 42000))
    ]
    config = ClusterConfig(
        name="c1", listen=[Endpoint.parse(listen)], members=members, **FAST_TIMERS
    )
    async with running_service(config):
        client = UdpControlClient(listen)
        ports = set()
        for n in range(40):
            reply = await client.command(f"U e{n} 127.0.0.1 4000 f")
            port = int(reply.split()[0])
            assert 41000 <= port < 43000
            ports.add(port // 1000)
            assert await client.command(f"D e{n} f") == "0\n"
        assert ports == {41, 42}
        client.close()


def test_quick_start_config_is_valid() -> None:
    config = load_config(EXAMPLES / "embedded.xml")
    assert [m.protocol for m in config.clusters[0].members] == ["embedded", "embedded"]
