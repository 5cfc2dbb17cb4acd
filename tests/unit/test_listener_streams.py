"""Stream control listeners over real unix sockets: framing, limits, idle timeouts, access.

The command handler is a stand-in (this tests the listener alone); the sockets are real.
"""

from __future__ import annotations

import os
import socket as stdsocket
import stat
from pathlib import Path

import pytest
import trio
import trio.testing

from rtpcluster.config.models import ListenOptions
from rtpcluster.transport.endpoint import Endpoint
from rtpcluster.transport.listeners import (
    ONE_SHOT_IDLE_TIMEOUT,
    PERSISTENT_IDLE_TIMEOUT,
    Listener,
    ListenerError,
    bind_endpoint,
)


class Commands:
    """Answers ``<text>`` with ``got <text>``; ``slow`` waits until released."""

    def __init__(self) -> None:
        self.release = trio.Event()
        self.started = trio.Event()

    async def __call__(self, data: bytes) -> str:
        if data.strip() == b"slow":
            self.started.set()
            await self.release.wait()
        return f"got {data.decode().strip()}\n"


def ignore_datagram(data: bytes, addr: object, send: object) -> None:
    raise AssertionError("no datagrams on a stream listener")


async def start(
    nursery: trio.Nursery, spec: str, options: ListenOptions | None = None
) -> tuple[Listener, Commands]:
    commands = Commands()
    bound = await bind_endpoint(Endpoint.parse(spec), options)
    listener = Listener(bound, ignore_datagram, commands)
    await nursery.start(listener.run)
    return listener, commands


async def read_all(stream: trio.SocketStream) -> bytes:
    chunks = []
    while data := await stream.receive_some(4096):
        chunks.append(data)
    return b"".join(chunks)


async def test_unix_one_shot_reply_then_close(nursery: trio.Nursery, tmp_path: Path) -> None:
    path = tmp_path / "c.sock"
    await start(nursery, f"unix:{path}")
    stream = await trio.open_unix_socket(str(path))
    await stream.send_all(b"V")  # RTPproxy's unix: needs no newline: one read, one command
    assert await read_all(stream) == b"got V\n"


async def test_persistent_lines_in_order_and_overlong_line_ends_it(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    path = tmp_path / "c.sock"
    await start(nursery, f"cunix:{path}")
    stream = await trio.open_unix_socket(str(path))
    await stream.send_all(b"a\nb\r\nc")
    await stream.send_all(b"\n")
    received = b""
    while received.count(b"\n") < 3:
        received += await stream.receive_some(4096)
    assert received == b"got a\ngot b\ngot c\n"
    await stream.send_all(b"x" * 9000)  # no newline within RTPproxy's 8 KiB
    reply = await read_all(stream)
    assert reply.startswith(b"E") and reply.endswith(b"\n")


@pytest.mark.parametrize(
    ("kind", "timeout"), [("unix", ONE_SHOT_IDLE_TIMEOUT), ("cunix", PERSISTENT_IDLE_TIMEOUT)]
)
async def test_silent_connection_is_closed_after_the_idle_timeout(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    kind: str,
    timeout: float,
) -> None:
    path = tmp_path / "c.sock"
    await start(nursery, f"{kind}:{path}")
    stream = await trio.open_unix_socket(str(path))
    before = trio.current_time()
    assert await stream.receive_some(10) == b""  # the server hung up on us
    assert timeout <= trio.current_time() - before < timeout + 1


async def test_idle_timeout_attribute(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "c.sock"
    await start(nursery, f"cunix:{path}", ListenOptions(idle_timeout=30))
    stream = await trio.open_unix_socket(str(path))
    await stream.send_all(b"a\n")
    assert await stream.receive_some(100) == b"got a\n"
    before = trio.current_time()
    assert await stream.receive_some(10) == b""
    assert 30 <= trio.current_time() - before < 31


async def test_max_connections_attribute_drops_the_longest_idle(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    path = tmp_path / "c.sock"
    await start(nursery, f"cunix:{path}", ListenOptions(max_connections=2))
    streams = []
    for word in (b"a", b"b", b"c"):
        stream = await trio.open_unix_socket(str(path))
        await stream.send_all(word + b"\n")
        assert await stream.receive_some(100) == b"got " + word + b"\n"
        streams.append(stream)
    first, second, third = streams
    assert await first.receive_some(10) == b""  # pushed out by the third
    for stream, word in ((second, b"d"), (third, b"e")):
        await stream.send_all(word + b"\n")
        assert await stream.receive_some(100) == b"got " + word + b"\n"


async def test_stop_accepting_answers_the_command_in_flight(tmp_path: Path) -> None:
    path = tmp_path / "c.sock"
    async with trio.open_nursery() as nursery:
        listener, commands = await start(nursery, f"cunix:{path}")
        idle = await trio.open_unix_socket(str(path))
        busy = await trio.open_unix_socket(str(path))
        await busy.send_all(b"slow\n")
        await commands.started.wait()
        listener.stop_accepting()
        assert await idle.receive_some(10) == b""  # idle: closed at once
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(OSError):
            await trio.open_unix_socket(str(path))  # no new connections
        commands.release.set()
        assert await read_all(busy) == b"got slow\n"  # in flight: answered, then closed
    assert not path.exists()


async def test_unix_socket_mode_default_and_configured(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    default = tmp_path / "default.sock"
    await start(nursery, f"unix:{default}")
    assert stat.S_IMODE(os.stat(default).st_mode) == 0o666  # as RTPproxy's own

    narrowed = tmp_path / "narrow.sock"
    uid, gid = os.getuid(), os.getgid()
    await start(nursery, f"cunix:{narrowed}", ListenOptions(mode=0o600, owner=f"{uid}:{gid}"))
    info = os.stat(narrowed)
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert (info.st_uid, info.st_gid) == (uid, gid)
    stream = await trio.open_unix_socket(str(narrowed))
    await stream.send_all(b"V\n")
    assert await stream.receive_some(100) == b"got V\n"


async def test_owner_that_cannot_be_set_is_a_clear_error(tmp_path: Path) -> None:
    if os.getuid() == 0:
        pytest.skip("root may give a socket to anybody")
    path = tmp_path / "c.sock"
    with pytest.raises(ListenerError, match=r"cannot set mode 0666 and owner 0:0: "):
        await bind_endpoint(Endpoint.parse(f"unix:{path}"), ListenOptions(owner="0:0"))
    assert not path.exists()


async def test_listener_refuses_a_live_socket(nursery: trio.Nursery, tmp_path: Path) -> None:
    path = tmp_path / "c.sock"
    await start(nursery, f"unix:{path}")
    with pytest.raises(ListenerError, match="another server is listening"):
        await bind_endpoint(Endpoint.parse(f"cunix:{path}"))
    probe = stdsocket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM)
    with probe:
        probe.connect(str(path))  # the first one still serves
