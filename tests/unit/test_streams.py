"""StreamServer over real unix sockets: limits, idle timeouts, graceful stop."""

from __future__ import annotations

import collections
import errno
import socket as stdsocket
from pathlib import Path

import pytest
import trio
import trio.testing

from rtpcluster.transport.streams import Connection, StreamServer
from rtpcluster.transport.unixsock import claim_socket_path, is_own_socket, release_socket_path


async def _listen(path: Path) -> trio.SocketListener:
    sock = trio.socket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM)
    await sock.bind(str(path))
    sock.listen(16)
    return trio.SocketListener(sock)


async def _echo(connection: Connection) -> None:
    while data := await connection.receive_some(1024):
        await connection.send_all(data)


async def test_echo_then_idle_timeout_closes(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    server = StreamServer("test", _echo, idle_timeout=0.2)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, [await _listen(path)])
        stream = await trio.open_unix_socket(str(path))
        await stream.send_all(b"ping")
        assert await stream.receive_some(10) == b"ping"
        # Say nothing more: the server hangs up (end of input on our side).
        assert await stream.receive_some(10) == b""
        await stream.aclose()
        nursery.cancel_scope.cancel()


async def test_limit_drops_the_longest_idle_connection(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    server = StreamServer("test", _echo, max_connections=2, idle_timeout=60)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, [await _listen(path)])
        first = await trio.open_unix_socket(str(path))
        await first.send_all(b"a")
        assert await first.receive_some(10) == b"a"
        second = await trio.open_unix_socket(str(path))
        await second.send_all(b"b")
        assert await second.receive_some(10) == b"b"
        third = await trio.open_unix_socket(str(path))
        await third.send_all(b"c")
        assert await third.receive_some(10) == b"c"
        assert await first.receive_some(10) == b""  # the oldest idle one was dropped
        await second.send_all(b"d")
        assert await second.receive_some(10) == b"d"
        assert server.dropped == 1
        for stream in (first, second, third):
            await stream.aclose()
        nursery.cancel_scope.cancel()


async def test_busy_connections_are_not_dropped_new_one_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    release = trio.Event()

    async def busy(connection: Connection) -> None:
        await connection.receive_some(10)
        await release.wait()  # working on a command: not idle
        await connection.send_all(b"done")

    server = StreamServer("test", busy, max_connections=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, [await _listen(path)])
        first = await trio.open_unix_socket(str(path))
        await first.send_all(b"x")
        await trio.testing.wait_all_tasks_blocked()
        second = await trio.open_unix_socket(str(path))
        assert await second.receive_some(10) == b""  # refused: closed at once
        release.set()
        assert await first.receive_some(10) == b"done"
        assert server.dropped == 1
        await first.aclose()
        await second.aclose()
        nursery.cancel_scope.cancel()


async def test_stop_accepting_closes_idle_keeps_busy(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    release = trio.Event()

    async def handler(connection: Connection) -> None:
        while data := await connection.receive_some(10):
            if data == b"slow":
                await release.wait()
            await connection.send_all(data)

    server = StreamServer("test", handler)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, [await _listen(path)])
        idle = await trio.open_unix_socket(str(path))
        busy = await trio.open_unix_socket(str(path))
        await busy.send_all(b"slow")
        await trio.testing.wait_all_tasks_blocked()
        server.stop_accepting()
        assert await idle.receive_some(10) == b""
        release.set()
        assert await busy.receive_some(10) == b"slow"
        assert await busy.receive_some(10) == b""
        with trio.fail_after(5):
            while len(server):
                await trio.testing.wait_all_tasks_blocked()
        await idle.aclose()
        await busy.aclose()


async def test_peer_that_never_reads_is_cut_off(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    ended = trio.Event()

    async def flood(connection: Connection) -> None:
        try:
            while True:
                await connection.send_all(b"x" * 65536)
        finally:
            ended.set()

    server = StreamServer("test", flood, write_timeout=0.2)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, [await _listen(path)])
        stream = await trio.open_unix_socket(str(path))
        await ended.wait()  # the write timeout ended the handler
        await stream.aclose()
        nursery.cancel_scope.cancel()


def test_own_socket_registry(tmp_path: Path) -> None:
    path = tmp_path / "own.sock"
    link = tmp_path / "link.sock"
    link.symlink_to(path)
    assert not is_own_socket(str(path))
    claim_socket_path(str(path))
    assert is_own_socket(str(link))
    release_socket_path(str(path))
    assert not is_own_socket(str(path))


class ExhaustedListener:
    """accept(2) out of descriptors but for every other call: one is freed by each drop.

    This is the steady state when a listener allows more connections than the process
    has descriptors.
    """

    def __init__(self) -> None:
        self.calls = 0
        self.socket = stdsocket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM)
        self.peers: collections.deque[trio.socket.SocketType] = collections.deque(maxlen=8)

    async def accept(self) -> trio.SocketStream:
        await trio.lowlevel.checkpoint()
        self.calls += 1
        if self.calls % 2:
            raise OSError(errno.EMFILE, "Too many open files")
        ours, theirs = trio.socket.socketpair()
        self.peers.append(theirs)  # the oldest peers are closed as they fall out
        return trio.SocketStream(ours)


async def test_sustained_descriptor_shortage_logs_once_a_minute(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    server = StreamServer("test", _echo, max_connections=4)
    listener = ExhaustedListener()
    with trio.move_on_after(150):  # virtual seconds: some 750 failed accept(2) calls
        await server.serve([listener])  # type: ignore[list-item]
    assert listener.calls > 1000
    failed = [r for r in caplog.records if "accept failed" in r.getMessage()]
    again = [r for r in caplog.records if "accepting again" in r.getMessage()]
    assert len(failed) == 3  # at 0, 60 and 120 s
    assert len(again) == 3
    assert len(server) <= 4
