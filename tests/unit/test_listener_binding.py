"""Binding a control endpoint is a step of its own: it fails with the endpoint and the reason."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest
import trio

from rtpcluster.config.models import ListenOptions
from rtpcluster.endpoint import Endpoint
from rtpcluster.transport.listeners import Listener, ListenerError, bind_endpoint, reopen_endpoint
from testsupport import free_port, stream_command


async def test_a_busy_udp_port_is_named_with_the_reason() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        with pytest.raises(ListenerError) as caught:
            await bind_endpoint(Endpoint.parse(f"udp:127.0.0.1:{port}"))
    assert str(caught.value) == f"cannot listen on udp:127.0.0.1:{port}: Address already in use"


async def test_a_busy_tcp_port_is_named_with_the_reason() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        with pytest.raises(ListenerError) as caught:
            await bind_endpoint(Endpoint.parse(f"tcp:127.0.0.1:{port}"))
    assert str(caught.value) == f"cannot listen on tcp:127.0.0.1:{port}: Address already in use"


async def test_bound_sockets_are_held_until_closed(tmp_path: Path) -> None:
    port = free_port()
    bound = await bind_endpoint(Endpoint.parse(f"udp:127.0.0.1:{port}"))
    assert bound.datagram is not None and bound.datagram.getsockname() == ("127.0.0.1", port)
    bound.close()
    bound.close()  # idempotent
    assert bound.datagram.fileno() == -1

    path = tmp_path / "c.sock"
    unix = await bind_endpoint(Endpoint.parse(f"cunix:{path}"))
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(str(path))  # listening already, before anything serves it
    client.close()
    assert os.stat(path).st_mode & 0o777 == 0o666
    unix.close()
    assert not path.exists()


async def test_closing_leaves_a_successors_socket_file_alone(tmp_path: Path) -> None:
    path = tmp_path / "c.sock"
    first = await bind_endpoint(Endpoint.parse(f"unix:{path}"))
    first.streams[0].socket.close()  # the first stopped listening: its file is stale
    second = await bind_endpoint(Endpoint.parse(f"unix:{path}"))
    first.close()  # late clean-up of the first must not remove the second's file
    assert path.exists()
    second.close()
    assert not path.exists()


# --- the same endpoint with other <listen> attributes ------------------------------------


async def answer_v(data: bytes) -> str:
    return f"got {data.decode().strip()}\n"


def ignore_datagram(data: bytes, addr: object, send: object) -> None:
    raise AssertionError("no datagrams on a stream listener")


def scratch_files(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.startswith(".rtpcluster-")]


async def test_a_reopened_unix_socket_keeps_its_file_and_waiting_connections(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    path = tmp_path / "c.sock"
    first = await bind_endpoint(Endpoint.parse(f"unix:{path}"))
    inode = os.stat(path).st_ino
    # a client queued in the backlog before the change, not accepted by anybody yet
    waiting = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    waiting.settimeout(5)
    waiting.connect(str(path))
    waiting.sendall(b"V")
    successor = reopen_endpoint(first, ListenOptions(mode=0o600, max_connections=4))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666  # nothing changes before it serves
    await nursery.start(Listener(successor, ignore_datagram, answer_v).run)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    first.close()  # the old listener ends after the successor has taken over
    assert os.stat(path).st_ino == inode  # the same file, not removed by the old one
    with waiting:
        assert await trio.to_thread.run_sync(waiting.recv, 100) == b"got V\n"
    assert await stream_command(f"unix:{path}", "V", newline=False) == "got V\n"
    assert scratch_files(tmp_path) == []


async def test_a_reopen_that_is_not_served_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "c.sock"
    first = await bind_endpoint(Endpoint.parse(f"cunix:{path}"), ListenOptions(mode=0o660))
    successor = reopen_endpoint(first, ListenOptions(mode=0o600))
    successor.close()  # the change was refused
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with client:
        client.connect(str(path))  # the first one still listens on its file
    first.close()
    assert not path.exists()


async def test_a_reopened_tcp_port_is_never_free(nursery: trio.Nursery) -> None:
    port = free_port()
    endpoint = Endpoint.parse(f"tcp:127.0.0.1:{port}")
    first = await bind_endpoint(endpoint)
    waiting = await trio.open_tcp_stream("127.0.0.1", port)
    await waiting.send_all(b"V\n")
    successor = reopen_endpoint(first, ListenOptions(idle_timeout=30))
    first.close()
    with pytest.raises(ListenerError, match="Address already in use"):
        await bind_endpoint(endpoint)  # still held: by the successor's sockets
    await nursery.start(Listener(successor, ignore_datagram, answer_v).run)
    assert await waiting.receive_some(100) == b"got V\n"
    await waiting.aclose()


async def test_a_reopen_with_an_owner_not_allowed_is_refused(tmp_path: Path) -> None:
    if os.getuid() == 0:
        pytest.skip("root may give a socket to anybody")
    path = tmp_path / "c.sock"
    first = await bind_endpoint(Endpoint.parse(f"cunix:{path}"))
    with pytest.raises(ListenerError) as caught:
        reopen_endpoint(first, ListenOptions(mode=0o660, owner="0:0"))
    assert str(caught.value) == (
        f"cannot listen on cunix:{path}: cannot set mode 0660 and owner 0:0: "
        "Operation not permitted"
    )
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666
    assert scratch_files(tmp_path) == []
    first.close()
