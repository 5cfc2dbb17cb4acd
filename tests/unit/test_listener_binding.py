"""Binding a control endpoint is a step of its own: it fails with the endpoint and the reason."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from rtpcluster.transport.endpoint import Endpoint
from rtpcluster.transport.listeners import ListenerError, bind_endpoint
from tests.rtpproxies import free_port


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
