"""Every listener kind and every member kind, over real sockets to real RTPproxies."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import MemberFactory
from tests.integration.harness import cluster_config, heartbeat_round, owner_of, running_service
from testsupport import UdpControlClient, free_port, stream_command


@pytest.mark.parametrize("kind", ["udp", "udp6", "unix", "cunix", "tcp"])
async def test_every_member_kind_serves_calls(rtpproxy: MemberFactory, kind: str) -> None:
    member = rtpproxy(kind)
    listen = f"udp:127.0.0.1:{free_port()}"
    async with running_service(cluster_config([member], [listen])) as service:
        client = UdpControlClient(listen)
        for n in range(20):
            offer = await client.command(f"U k{n} 127.0.0.1 4000 f{n}")
            assert owner_of(offer, [member]) is member
            answer = await client.command(f"L k{n} 127.0.0.1 4002 f{n} t{n}")
            assert owner_of(answer, [member]) is member
            assert await client.command(f"D k{n} f{n} t{n}") == "0\n"
        await heartbeat_round(service, "c1")
        info = await client.command("Ib")
        assert info.startswith("sessions created: 20\n")
        client.close()


async def test_every_listener_kind_answers(rtpproxy: MemberFactory, tmp_path: Path) -> None:
    members = [rtpproxy(), rtpproxy()]
    udp = f"udp:127.0.0.1:{free_port()}"
    udp6 = f"udp6:[::1]:{free_port()}"
    unix = f"unix:{tmp_path / 'ctl.sock'}"
    cunix = f"cunix:{tmp_path / 'cctl.sock'}"
    tcp = f"tcp:127.0.0.1:{free_port()}"
    async with running_service(cluster_config(members, [udp, udp6, unix, cunix, tcp])):
        for n, spec in enumerate([udp, udp6]):
            client = UdpControlClient(spec)
            offer = await client.command(f"U l{n} 127.0.0.1 4000 f")
            owner_of(offer, members)
            assert await client.command("V") == "20040107\n"
            client.close()
        # a SIP server running as another user can connect
        assert (tmp_path / "ctl.sock").stat().st_mode & 0o777 == 0o666
        # Kamailio and OpenSIPS send unix: commands without a newline and read until EOF
        offer = await stream_command(unix, "U lu 127.0.0.1 4000 f", newline=False)
        owner = owner_of(offer, members)
        answer = await stream_command(unix, "L lu 127.0.0.1 4002 f t", newline=False)
        assert owner_of(answer, members) is owner
        for spec in (cunix, tcp):
            assert await stream_command(spec, "V") == "20040107\n"
            offer = await stream_command(spec, f"U {spec[:4]} 127.0.0.1 4000 f")
            owner_of(offer, members)
    assert not (tmp_path / "ctl.sock").exists(), "unix socket files are removed on stop"
    assert not (tmp_path / "cctl.sock").exists()


async def test_persistent_stream_answers_several_commands_in_order(
    rtpproxy: MemberFactory, tmp_path: Path
) -> None:
    import trio

    members = [rtpproxy()]
    cunix = tmp_path / "p.sock"
    async with running_service(cluster_config(members, [f"cunix:{cunix}"])):
        stream = await trio.open_unix_socket(str(cunix))
        async with stream:
            await stream.send_all(b"V\nU s1 127.0.0.1 4000 f\nD s1 f\nK\n")
            received = b""
            with trio.fail_after(5):
                while received.count(b"\n") < 4:
                    received += await stream.receive_some(4096)
        lines = received.decode().splitlines()
        assert lines[0] == "20040107"
        owner_of(lines[1], members)
        assert lines[2] == "0"
        assert lines[3] == "E0"
