"""Disconnect notifications relayed from a member to the SIP server's unix socket.

The relay runs inside a real service (one real RTPproxy as member, a real admin socket);
the attacks are played over real sockets from the member's address (127.0.0.1), as any
local user could. Each test synchronises on an event it can await: a line that
arrives at a listening socket, or the relay closing the connection.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote_to_bytes

import pytest
import trio

from rtpcluster.admin.client import send_command
from rtpcluster.cluster import notify, notify_tags
from rtpcluster.cluster.notify import NotifyRelay
from rtpcluster.cluster.notify_tags import issue_tag, tag_key
from rtpcluster.config import Config, DisconnectNotify
from rtpcluster.service import ServeOptions, Service, run_service
from tests.conftest import MemberFactory
from tests.integration.harness import cluster_config, owner_of, running_service, wait_online
from testsupport import UdpControlClient, free_port, run_rtpcluster

NOTIFY_LOGGER = "rtpcluster.cluster.notify"


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: unix socket paths hold 107 bytes at most."""
    path = Path(tempfile.mkdtemp(prefix="rtpn-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


class LineSink:
    """A SIP server's notify socket: a listening unix socket that collects lines."""

    def __init__(self, path: Path, *, read: bool = True) -> None:
        self.path = path
        self.read = read
        self.lines_in, self.lines = trio.open_memory_channel[bytes](100_000)
        self.connections: list[trio.SocketStream] = []
        self.accepted = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await listener.bind(str(self.path))
        listener.listen(16)
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                sock, _ = await listener.accept()
                self.accepted += 1
                stream = trio.SocketStream(sock)
                self.connections.append(stream)
                if self.read:
                    nursery.start_soon(self._read, stream)

    async def _read(self, stream: trio.SocketStream) -> None:
        buffer = b""
        try:
            while data := await stream.receive_some(65536):
                buffer += data
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    self.lines_in.send_nowait(line)
        except trio.ClosedResourceError:
            return  # the test closed this connection

    async def next_line(self, timeout: float = 10.0) -> bytes:
        with trio.fail_after(timeout):
            return await self.lines.receive()

    def pending(self) -> list[bytes]:
        got = []
        while True:
            try:
                got.append(self.lines.receive_nowait())
            except trio.WouldBlock:
                return got


@dataclass
class RelayRig:
    service: Service
    relay: NotifyRelay
    config: DisconnectNotify
    prefix: str
    relay_port: int
    admin_socket: str
    control: str  # the cluster's unix control socket
    nursery: trio.Nursery

    @property
    def key(self) -> bytes:
        return tag_key(self.config)

    def line(self, suffix: str, tag: bytes) -> bytes:
        """A line as RTPproxy writes it for a tag the router issued."""
        issued = issue_tag(self.key, self.prefix, suffix, tag)
        assert issued is not None
        return issued + b"\n"

    async def sink(self, name: str, *, read: bool = True) -> LineSink:
        sink = LineSink(Path(self.prefix + name), read=read)
        await self.nursery.start(sink.run)
        return sink

    async def connect(self, source: str = "127.0.0.1") -> trio.SocketStream:
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        await sock.bind((source, 0))
        await sock.connect(("127.0.0.1", self.relay_port))
        return trio.SocketStream(sock)

    async def send(self, *lines: bytes) -> None:
        async with await self.connect() as stream:
            await stream.send_all(b"".join(lines))


@asynccontextmanager
async def relay_rig(rtpproxy: MemberFactory, directory: Path) -> AsyncIterator[RelayRig]:
    member = rtpproxy()
    relay_port = free_port(kind=socket.SOCK_STREAM)
    prefix = f"{directory}/"
    relay = DisconnectNotify(inbound_address=f"127.0.0.1:{relay_port}", dest_socket_prefix=prefix)
    control = f"{directory}/ctl.sock"
    config = cluster_config([member], [f"cunix:{control}"], disconnect_notify=relay)
    admin_socket = f"{directory}/rtp_cluster.sock"
    options = ServeOptions(
        config_path=str(directory / "rtp_cluster.xml"), admin_socket=admin_socket, stop_grace=0.5
    )
    async with trio.open_nursery() as nursery:
        service: Service = await nursery.start(run_service, Config(clusters=[config]), options)
        await wait_online(service, "c1", 1)
        running = service.running["c1"].notify_relay
        assert running is not None
        try:
            yield RelayRig(
                service, running, relay, prefix, relay_port, admin_socket, control, nursery
            )
        finally:
            service.stop()
            nursery.cancel_scope.cancel()


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


async def test_admin_takeover_line_is_dropped(rtpproxy: MemberFactory, short_dir: Path) -> None:
    """The line that made the admin plane overwrite a file and create a cluster."""
    victim = short_dir / "somefile"
    victim.write_text("precious\n")
    async with relay_rig(rtpproxy, short_dir) as rig:
        sip = await rig.sink("sip.sock")
        await rig.send(
            f"rtp_cluster.sock save {victim}\n".encode(),
            b"rtp_cluster.sock create x address=udp:127.0.0.1:1\n",
            rig.line("sip.sock", b"after"),
        )
        # Lines of one connection are handled in order: once the last is delivered,
        # the two before it have been dealt with.
        assert await sip.next_line() == b"after"
        assert victim.read_text() == "precious\n"
        lines, ok = await trio.to_thread.run_sync(send_command, rig.admin_socket, "ls")
        assert ok and "    name = c1" in lines and not any("name = x" in line for line in lines)
        assert list(rig.service.running) == ["c1"]
        assert (rig.relay.rejected, rig.relay.delivered) == (2, 1)


async def test_issued_tags_for_our_own_sockets_are_refused(
    rtpproxy: MemberFactory, short_dir: Path
) -> None:
    """Even a tag this process issued (a control client asked for it) never reaches
    the admin socket or a control socket of rtpcluster."""
    victim = short_dir / "somefile"
    victim.write_text("precious\n")
    async with relay_rig(rtpproxy, short_dir) as rig:
        sip = await rig.sink("sip.sock")
        # The router issues tags for whatever socket under the prefix a U names; this
        # is the line RTPproxy would write back for such a U.
        args = notify_tags.relay_notify_args(rig.config, rig.admin_socket, f"save%20{victim}")
        assert args is not None
        await rig.send(
            unquote_to_bytes(args[1]) + b"\n",
            rig.line("ctl.sock", b"X"),
            rig.line("sip.sock", b"after"),
        )
        assert await sip.next_line() == b"after"
        assert victim.read_text() == "precious\n"
        assert (rig.relay.refused, rig.relay.delivered) == (2, 1)


async def test_forged_and_unknown_tags_are_dropped(
    rtpproxy: MemberFactory, short_dir: Path
) -> None:
    async with relay_rig(rtpproxy, short_dir) as rig:
        sip = await rig.sink("sip.sock")
        genuine = rig.line("sip.sock", b"r 12")
        suffix, mac, tag = genuine.rstrip(b"\n").split(b" ", 2)
        other_key = secrets.token_bytes(32)  # e.g. the key of an rtpcluster before a restart
        replayed = issue_tag(other_key, rig.prefix, "sip.sock", b"r 13")
        assert replayed is not None
        flipped = bytes([mac[0] ^ 1]) + mac[1:]
        await rig.send(
            b"sip.sock d *\n",  # the old relay's format: free text for the B2BUA
            b"%s %s %s\n" % (suffix, b"0" * 32, tag),  # a guessed MAC
            b"%s %s %s\n" % (suffix, flipped, tag),
            b"%s %s d *\n" % (suffix, mac),  # a genuine MAC on other text
            replayed + b"\n",
            b"\n",
            genuine,
        )
        assert await sip.next_line() == b"r 12"
        assert sip.pending() == []
        assert (rig.relay.rejected, rig.relay.delivered) == (6, 1)


async def test_destinations_escaping_the_prefix_are_refused(
    rtpproxy: MemberFactory, short_dir: Path
) -> None:
    outside_dir = Path(tempfile.mkdtemp(prefix="rtpo-"))
    try:
        prefix_dir = short_dir / "run"
        prefix_dir.mkdir()
        async with relay_rig(rtpproxy, prefix_dir) as rig:
            outside = LineSink(outside_dir / "outside.sock")
            await rig.nursery.start(outside.run)
            sip = await rig.sink("sip.sock")
            (prefix_dir / "link.sock").symlink_to(outside.path)
            relative = os.path.relpath(outside.path, prefix_dir)
            assert relative.startswith("../")
            # issue_tag never signs a "../" suffix; sign one by hand to test the relay.
            forged_mac = notify_tags._mac(rig.key, rig.prefix, relative, b"escape")
            await rig.send(
                b"%s %s escape\n" % (relative.encode(), forged_mac),
                rig.line("link.sock", b"escape"),
                rig.line("sip.sock", b"after"),
            )
            assert await sip.next_line() == b"after"
            assert outside.accepted == 0
            assert (rig.relay.rejected, rig.relay.refused) == (1, 1)
    finally:
        shutil.rmtree(outside_dir, ignore_errors=True)


async def test_a_stuck_destination_delays_only_itself(
    rtpproxy: MemberFactory, short_dir: Path
) -> None:
    async with relay_rig(rtpproxy, short_dir) as rig:
        stuck = await rig.sink("stuck.sock", read=False)  # accepts, never reads
        sip = await rig.sink("sip.sock")
        # 600 KB: more than a unix socket buffers (about 200 KB), so the writer to
        # stuck.sock blocks in send; the old relay held one lock across that send.
        big = [rig.line("stuck.sock", b"%04d" % i + b"x" * 1000) for i in range(600)]
        await rig.send(*big, rig.line("sip.sock", b"after"))
        assert await sip.next_line() == b"after"
        assert stuck.accepted == 1
        assert rig.relay.delivered < 600


async def test_a_closed_destination_connection_is_reopened(
    rtpproxy: MemberFactory, short_dir: Path
) -> None:
    """A SIP server that restarted closed our kept connection: the next line is not lost."""
    async with relay_rig(rtpproxy, short_dir) as rig:
        sip = await rig.sink("sip.sock")
        await rig.send(rig.line("sip.sock", b"one"))
        assert await sip.next_line() == b"one"
        await sip.connections[0].aclose()
        await rig.send(rig.line("sip.sock", b"two"))
        assert await sip.next_line() == b"two"
        assert sip.accepted == 2


async def test_a_flood_for_a_missing_socket_logs_a_bounded_number_of_lines(
    rtpproxy: MemberFactory, short_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    count = 100_000
    async with relay_rig(rtpproxy, short_dir) as rig:
        sip = await rig.sink("sip.sock")
        missing = rig.line("missing.sock", b"r 1")
        forged = b"missing.sock " + b"f" * 32 + b" r 1\n"
        caplog.clear()
        started = trio.current_time()
        with caplog.at_level(logging.WARNING, logger=NOTIFY_LOGGER):
            async with await rig.connect() as stream:
                for _ in range(count // 1000):
                    await stream.send_all(missing * 500 + forged * 500)
                await stream.send_all(rig.line("sip.sock", b"after"))
                assert await sip.next_line(timeout=60) == b"after"
        intervals = math.floor((trio.current_time() - started) / notify.WARN_INTERVAL) + 1
        relay_lines = [r for r in caplog.records if r.name == NOTIFY_LOGGER]
        # at most one line per kind (dropped for missing.sock, rejected from 127.0.0.1)
        # and interval; 100,000 before the fix
        assert 2 <= len(relay_lines) <= 2 * intervals, [r.getMessage() for r in relay_lines]
        assert rig.relay.rejected == count // 2
        assert rig.relay.dropped >= count // 2 - notify.DESTINATION_QUEUE


async def test_an_overlong_line_ends_the_connection_with_a_warning(
    rtpproxy: MemberFactory, short_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with relay_rig(rtpproxy, short_dir) as rig:
        sip = await rig.sink("sip.sock")
        with caplog.at_level(logging.WARNING, logger=NOTIFY_LOGGER):
            async with await rig.connect() as stream:
                with trio.fail_after(10):
                    try:
                        await stream.send_all(b"x" * 1_000_000 + b"\n")
                        assert await stream.receive_some(65536) == b""
                    except trio.BrokenResourceError:
                        pass  # reset: closed by the relay while we were still sending
        assert any("longer than" in r.getMessage() for r in caplog.records)
        await rig.send(rig.line("sip.sock", b"still relaying"))
        assert await sip.next_line() == b"still relaying"


async def test_connections_from_other_addresses_are_closed(
    rtpproxy: MemberFactory, short_dir: Path
) -> None:
    async with relay_rig(rtpproxy, short_dir) as rig:
        sip = await rig.sink("sip.sock")
        async with await rig.connect(source="127.0.0.2") as stream:
            with trio.fail_after(10):
                try:
                    await stream.send_all(rig.line("sip.sock", b"not a member"))
                    assert await stream.receive_some(100) == b""
                except trio.BrokenResourceError:
                    pass  # reset: closed by the relay before our line was read
        await rig.send(rig.line("sip.sock", b"from the member"))
        assert await sip.next_line() == b"from the member"
        assert sip.pending() == []


def test_serve_refuses_a_key_file_others_can_read(short_dir: Path) -> None:
    key_file = short_dir / "notify.key"
    key_file.write_text(secrets.token_hex(32) + "\n")
    key_file.chmod(0o644)
    config = short_dir / "rtp_cluster.xml"
    config.write_text(
        f"""<rtp_cluster_config><rtp_cluster><name>c1</name>
        <protocol>udp</protocol><address>127.0.0.1:{free_port()}</address>
        <disconnect_notify>
          <inbound_address>127.0.0.1:{free_port(kind=socket.SOCK_STREAM)}</inbound_address>
          <dest_socket_prefix>{short_dir}/</dest_socket_prefix>
          <key_file>{key_file}</key_file>
        </disconnect_notify></rtp_cluster></rtp_cluster_config>"""
    )
    admin = str(short_dir / "admin.sock")
    result = run_rtpcluster("serve", "-f", "-c", str(config), "-s", admin)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        f"rtpcluster: c1: disconnect_notify key_file {key_file}: mode 0644 lets other users"
        " read or change the key; chmod 600 it"
    )
    assert "Traceback" not in result.stderr and "Trio nursery" not in result.stderr
