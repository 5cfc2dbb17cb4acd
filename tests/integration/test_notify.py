"""Disconnect notifications relayed from a member to the SIP server's unix socket."""

from __future__ import annotations

import socket
from pathlib import Path

import trio

from rtpcluster.config import DisconnectNotify
from tests.conftest import MemberFactory
from tests.integration.harness import UdpControlClient, cluster_config, owner_of, running_service
from tests.rtpproxies import free_port


async def test_session_timeout_reaches_the_sip_servers_socket(
    rtpproxy: MemberFactory, tmp_path: Path
) -> None:
    relay_port = free_port(kind=socket.SOCK_STREAM)
    member = rtpproxy(extra=["-n", f"tcp:%%CC_SELF%%:{relay_port}", "-T", "1", "-W", "1"])
    listen = f"udp:127.0.0.1:{free_port()}"
    prefix = f"{tmp_path}/"
    relay = DisconnectNotify(inbound_address=f"127.0.0.1:{relay_port}", dest_socket_prefix=prefix)
    config = cluster_config([member], [listen], disconnect_notify=relay)

    sip_socket = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await sip_socket.bind(str(tmp_path / "sip.sock"))
    sip_socket.listen(4)
    async with running_service(config):
        client = UdpControlClient(listen)
        reply = await client.command(f"U n1 127.0.0.1 4000 ftag {prefix}sip.sock dlg%2042")
        owner_of(reply, [member])
        with trio.fail_after(15):
            conn, _ = await sip_socket.accept()
            received = b""
            while not received.endswith(b"\n"):
                received += await conn.recv(1024)
        conn.close()
        assert received == b"dlg 42\n"
        client.close()
    sip_socket.close()
