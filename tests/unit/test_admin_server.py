"""The admin socket server and the blocking client, over real sockets in tmp_path."""

from __future__ import annotations

import os
import pwd
import socket
import stat
from pathlib import Path

import pytest
import trio
import trio.testing

from rtpcluster.admin.address import AdminSocketError, parse_admin_spec, parse_owner
from rtpcluster.admin.client import AdminConnectError, send_command
from rtpcluster.admin.server import IDLE_TIMEOUT, MAX_CONNECTIONS, serve_admin
from rtpcluster.endpoint import Kind
from tests.unit.test_admin_commands import FakeControl
from testsupport import free_port


class LineClient:
    """Reads whole replies (up to the final OK / ERROR line) from a stream."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def send(self, text: str) -> None:
        await self.stream.send_all(text.encode())

    async def line(self) -> str | None:
        while b"\n" not in self.buffer:
            try:
                data = await self.stream.receive_some(4096)
            except trio.BrokenResourceError:  # closed with our unread data: a reset
                return None
            if not data:
                return None
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()

    async def reply(self) -> list[str]:
        lines: list[str] = []
        while True:
            line = await self.line()
            assert line is not None, f"connection closed after {lines}"
            lines.append(line)
            if line == "OK" or line.startswith("ERROR: "):
                return lines

    async def command(self, line: str) -> list[str]:
        await self.send(line + "\n")
        return await self.reply()


@pytest.fixture
def sock_path(tmp_path: Path) -> str:
    return str(tmp_path / "admin.sock")


async def start(nursery: trio.Nursery, path: str, owner: str | None = None) -> FakeControl:
    control = FakeControl()
    await nursery.start(serve_admin, control, path, owner)
    return control


async def connect(path: str) -> LineClient:
    return LineClient(await trio.open_unix_socket(path))


async def test_several_commands_on_one_connection(nursery: trio.Nursery, sock_path: str) -> None:
    control = await start(nursery, sock_path)
    client = await connect(sock_path)
    assert (await client.command("ls"))[0] == "Cluster: #0"
    assert await client.command("modify c pause rp1") == ["OK"]
    assert await client.command("ls nope") == ["ERROR: nope: cluster not found"]
    assert await client.command("reload") == [
        "add member c1/rp3",
        "Loaded 2 clusters and 5 RTP proxies",
        "OK",
    ]
    assert control.calls == [("suspend_member", "c", "rp1"), ("reload", False)]
    await client.send("quit\n")
    assert await client.line() is None  # closed by the server


async def test_bad_commands_do_not_kill_the_server(nursery: trio.Nursery, sock_path: str) -> None:
    control = await start(nursery, sock_path)
    control.fail = RuntimeError("bug")
    client = await connect(sock_path)
    assert await client.command("garbage here") == ["ERROR: unknown command"]
    assert await client.command("destroy c") == ["ERROR: internal error: RuntimeError: bug"]
    assert await client.command("modify") == [
        "ERROR: modify: missing <cluster>; usage: modify <cluster> <action> [ARGS...]"
    ]
    assert (await client.command("ls"))[-1] == "OK"
    other = await connect(sock_path)
    assert (await other.command("ls"))[-1] == "OK"


async def test_original_client_style_and_crlf(nursery: trio.Nursery, sock_path: str) -> None:
    await start(nursery, sock_path)
    client = await connect(sock_path)
    await client.send("ls empty\r\n\r\nquit\r\n")
    lines = []
    while (line := await client.line()) is not None:
        lines.append(line)
    assert lines == [
        "Active members of the cluster #1:",
        "Inactive members of the cluster #1:",
        "OK",
    ]


async def test_eof_closes_and_a_last_line_without_newline_is_served(
    nursery: trio.Nursery, sock_path: str
) -> None:
    await start(nursery, sock_path)
    client = await connect(sock_path)
    await client.send("help")
    await client.stream.send_eof()
    assert (await client.reply())[-1] == "OK"
    assert await client.line() is None


async def test_overlong_line_is_refused_and_closed(nursery: trio.Nursery, sock_path: str) -> None:
    await start(nursery, sock_path)
    client = await connect(sock_path)
    await client.send("x" * 70_000)
    assert await client.line() == "ERROR: line too long"
    assert await client.line() is None


async def test_socket_mode_and_removal_on_exit(sock_path: str) -> None:
    async with trio.open_nursery() as nursery:
        await start(nursery, sock_path)
        mode = os.stat(sock_path).st_mode
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) == 0o660
        nursery.cancel_scope.cancel()
    assert not os.path.exists(sock_path)


async def test_owner_is_applied(nursery: trio.Nursery, sock_path: str) -> None:
    user = pwd.getpwuid(os.getuid())
    await start(nursery, sock_path, owner=f"{user.pw_name}:{user.pw_gid}")
    info = os.stat(sock_path)
    assert (info.st_uid, info.st_gid) == (user.pw_uid, user.pw_gid)


async def test_stale_socket_file_is_replaced(nursery: trio.Nursery, sock_path: str) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(sock_path)
    stale.close()  # the file stays, nobody listens
    await start(nursery, sock_path)
    assert (await (await connect(sock_path)).command("ls empty"))[-1] == "OK"


async def test_refuses_a_live_socket_or_a_regular_file(
    nursery: trio.Nursery, sock_path: str, tmp_path: Path
) -> None:
    await start(nursery, sock_path)
    with pytest.raises(AdminSocketError, match="another server is listening"):
        await serve_admin(FakeControl(), sock_path)
    regular = tmp_path / "file"
    regular.write_text("keep me")
    with pytest.raises(AdminSocketError, match="not a socket"):
        await serve_admin(FakeControl(), str(regular))
    assert regular.read_text() == "keep me"


async def test_unbindable_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(AdminSocketError, match=r"missing/admin\.sock"):
        await serve_admin(FakeControl(), str(tmp_path / "missing" / "admin.sock"))


async def test_tcp_admin_socket(nursery: trio.Nursery) -> None:
    port = free_port(socket.SOCK_STREAM)
    await nursery.start(serve_admin, FakeControl(), f"tcp:127.0.0.1:{port}")
    client = LineClient(await trio.open_tcp_stream("127.0.0.1", port))
    assert (await client.command("ls"))[-1] == "OK"


async def test_blocking_client(nursery: trio.Nursery, sock_path: str) -> None:
    await start(nursery, sock_path)
    lines, ok = await trio.to_thread.run_sync(send_command, sock_path, "ls empty", 10.0)
    assert ok and lines[-1] == "OK"
    lines, ok = await trio.to_thread.run_sync(send_command, f"unix:{sock_path}", "bogus", 10.0)
    assert (lines, ok) == (["ERROR: unknown command"], False)


def test_client_names_the_socket_it_cannot_reach(tmp_path: Path) -> None:
    path = str(tmp_path / "nobody.sock")
    with pytest.raises(AdminConnectError, match=f"cannot connect to admin socket {path}"):
        send_command(path, "ls", 5.0)


def test_admin_specs() -> None:
    assert parse_admin_spec("/var/run/rtp_cluster.sock").kind is Kind.UNIX
    assert parse_admin_spec("cunix:/x").kind is Kind.UNIX
    assert parse_admin_spec("tcp:127.0.0.1:9000").port == 9000
    with pytest.raises(AdminSocketError, match="unix path or tcp"):
        parse_admin_spec("udp:127.0.0.1:9000")
    assert parse_admin_spec("./admin.sock").path == "./admin.sock"  # a relative unix path
    with pytest.raises(AdminSocketError):
        parse_admin_spec("unix:")


def test_owner_parsing() -> None:
    root = pwd.getpwuid(0)
    assert parse_owner("root") == (0, root.pw_gid)
    assert parse_owner("0:0") == (0, 0)
    assert parse_owner(":0") == (-1, 0)
    with pytest.raises(AdminSocketError, match="no such user: no-such-user-x"):
        parse_owner("no-such-user-x:root")
    with pytest.raises(AdminSocketError, match="no such group: no-such-group-x"):
        parse_owner("root:no-such-group-x")
    with pytest.raises(AdminSocketError, match="expected user:group"):
        parse_owner(":")


async def test_silent_connections_cannot_lock_the_operator_out(
    nursery: trio.Nursery, sock_path: str
) -> None:
    await start(nursery, sock_path)
    silent = [await trio.open_unix_socket(sock_path) for _ in range(MAX_CONNECTIONS + 8)]
    client = await connect(sock_path)  # the longest idle one makes room
    assert (await client.command("ls"))[-1] == "OK"
    assert await silent[0].receive_some(10) == b""
    for stream in silent:
        await stream.aclose()


async def test_silent_admin_connection_is_closed_after_the_idle_timeout(
    nursery: trio.Nursery, sock_path: str, autojump_clock: trio.testing.MockClock
) -> None:
    await start(nursery, sock_path)
    client = await connect(sock_path)
    assert (await client.command("ls empty"))[-1] == "OK"
    before = trio.current_time()
    assert await client.line() is None
    assert IDLE_TIMEOUT <= trio.current_time() - before < IDLE_TIMEOUT + 1
