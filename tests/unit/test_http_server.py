"""The HTTP endpoint on a real socket (hypercorn on trio): what a hostile client can do.

Every test talks raw bytes to a loopback port, so what is checked is what hypercorn and
our limits really do, not what the app would answer if asked nicely.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
import trio

from rtpcluster.endpoint import Endpoint, Kind
from rtpcluster.http.server import HttpEndpointError, HttpLimits, is_loopback, serve_http
from tests.unit.test_http_app import FakeSource

# Short timeouts so an idle connection is closed while the test waits for it; the test
# waits for the close itself (bounded by fail_after), never for a fixed time.
LIMITS = HttpLimits(keep_alive_timeout=0.3, read_timeout=2, max_header_bytes=4096)


class Server:
    def __init__(self, port: int, shutdown: trio.Event) -> None:
        self.port = port
        self.shutdown = shutdown

    async def connect(self) -> trio.SocketStream:
        return await trio.open_tcp_stream("127.0.0.1", self.port)

    async def exchange(self, data: bytes) -> bytes:
        """Send ``data``, read until the server closes; the whole answer."""
        stream = await self.connect()
        async with stream:
            await stream.send_all(data)
            return await read_to_close(stream)


async def read_to_close(stream: trio.SocketStream, limit: int = 1 << 20) -> bytes:
    chunks = []
    size = 0
    with trio.fail_after(10):
        while True:
            try:
                data = await stream.receive_some(65536)
            except trio.BrokenResourceError:  # reset by the server
                break
            if not data:
                break
            chunks.append(data)
            size += len(data)
            assert size < limit
    return b"".join(chunks)


@pytest.fixture
async def server(nursery: trio.Nursery) -> AsyncIterator[Server]:
    shutdown = trio.Event()
    bind = Endpoint(kind=Kind.TCP, host="127.0.0.1", port=0)
    # port 0 goes to hypercorn as "127.0.0.1:0"; started() tells the port it got
    urls: list[str] = await nursery.start(serve_http, FakeSource(), bind, shutdown.wait, LIMITS)
    port = int(urls[0].rsplit(":", 1)[1])
    yield Server(port, shutdown)
    shutdown.set()


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:100]
    return int(answer.split(b" ", 2)[1])


async def test_get_metrics_over_the_socket(server: Server) -> None:
    answer = await server.exchange(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(answer) == 200
    assert b"rtpcluster_member_up{" in answer
    assert b"server:" not in answer.lower()  # no product banner


async def test_unknown_path_is_404_and_post_is_405(server: Server) -> None:
    answer = await server.exchange(
        b"GET /etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert status_of(answer) == 404
    answer = await server.exchange(
        b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    assert status_of(answer) == 405
    assert b"allow: GET, HEAD" in answer.lower().replace(b"get, head", b"GET, HEAD")


async def test_oversized_headers_are_refused_and_the_connection_closed(server: Server) -> None:
    """h11 applies the limit to a header block still incomplete after a read: twice the
    limit, not yet ended, gets 431. (hypercorn reads 64 KiB at a time, so a client can
    make the server hold at most 64 KiB plus the limit per connection.)"""
    partial = b"GET / HTTP/1.1\r\nHost: x\r\nX-Filler: " + b"a" * (LIMITS.max_header_bytes * 2)
    answer = await server.exchange(partial)
    assert status_of(answer) == 431


async def test_endless_header_stream_is_cut_off(server: Server) -> None:
    """Headers that never end: the server stops reading at the limit, it does not buffer."""
    stream = await server.connect()
    async with stream:
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        sent = 0
        with trio.fail_after(10):
            try:
                while sent < 100 * LIMITS.max_header_bytes:
                    await stream.send_all(b"X-A: " + b"b" * 1000 + b"\r\n")
                    sent += 1007
            except trio.BrokenResourceError:
                pass  # closed on us: what we want
        answer = await read_to_close(stream)
    assert answer == b"" or status_of(answer) == 431
    # and the server still serves everyone else
    answer = await server.exchange(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(answer) == 200


async def test_a_body_is_refused_and_not_read(server: Server) -> None:
    stream = await server.connect()
    async with stream:
        # Announce 100 MB and send a little: the answer comes without waiting for the rest.
        await stream.send_all(
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n" + b"z" * 1000
        )
        answer = await read_to_close(stream)
    assert status_of(answer) == 413


async def test_a_connection_that_sends_nothing_is_closed(server: Server) -> None:
    stream = await server.connect()
    async with stream:
        assert await read_to_close(stream) == b""


async def test_slowloris_headers_trickling_in_are_closed(server: Server) -> None:
    """One header byte at a time, each well inside the read timeout: the keep-alive
    (idle) timer still closes the connection, since no request ever started."""
    stream = await server.connect()
    closed = False
    async with stream:
        with trio.fail_after(10):
            for byte in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 10000:
                try:
                    await stream.send_all(bytes([byte]))
                except trio.BrokenResourceError:
                    closed = True
                    break
                with trio.move_on_after(0.05):
                    try:
                        received = await stream.receive_some(1024)
                    except trio.BrokenResourceError:  # closed with bytes unread: a reset
                        received = b""
                    if received == b"":
                        closed = True
                        break
    assert closed


async def test_keep_alive_serves_several_requests_then_closes_when_idle(server: Server) -> None:
    stream = await server.connect()
    async with stream:
        for _ in range(3):
            await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            with trio.fail_after(10):
                answer = b""
                while not answer.endswith(b"ok\n"):
                    answer += await stream.receive_some(65536)
            assert status_of(answer) == 200
        assert await read_to_close(stream) == b""  # idle: closed by the server


async def test_garbage_gets_400(server: Server) -> None:
    answer = await server.exchange(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 50)
    assert answer == b"" or status_of(answer) == 400


async def test_websocket_upgrade_is_not_accepted(server: Server) -> None:
    answer = await server.exchange(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    assert b"101 Switching Protocols" not in answer


async def test_shutdown_trigger_stops_the_server(nursery: trio.Nursery) -> None:
    shutdown = trio.Event()
    done = trio.Event()
    bind = Endpoint(kind=Kind.TCP, host="127.0.0.1", port=0)

    async def run(task_status: trio.TaskStatus[list[str]]) -> None:
        await serve_http(FakeSource(), bind, shutdown.wait, LIMITS, task_status=task_status)
        done.set()

    urls = await nursery.start(run)
    port = int(urls[0].rsplit(":", 1)[1])
    shutdown.set()
    with trio.fail_after(10):
        await done.wait()
    with pytest.raises(OSError):
        await trio.open_tcp_stream("127.0.0.1", port)


async def test_a_port_in_use_fails_before_started_in_one_line(server: Server) -> None:
    bind = Endpoint(kind=Kind.TCP, host="127.0.0.1", port=server.port)
    with pytest.raises(HttpEndpointError) as caught:
        await serve_http(FakeSource(), bind, None, LIMITS)
    assert str(caught.value) == f"HTTP endpoint 127.0.0.1:{server.port}: Address already in use"


async def test_a_non_loopback_bind_warns_that_there_is_no_authentication(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # 192.0.2.1 (TEST-NET-1) is on no interface here: the warning comes first, then the
    # bind fails; no packet leaves the machine.
    bind = Endpoint(kind=Kind.TCP, host="192.0.2.1", port=9100)
    with (
        caplog.at_level(logging.WARNING, logger="rtpcluster.http.server"),
        pytest.raises(HttpEndpointError),
    ):
        await serve_http(FakeSource(), bind, None, LIMITS)
    [record] = [r for r in caplog.records if r.name == "rtpcluster.http.server"]
    assert "no authentication" in record.getMessage()
    assert "192.0.2.1:9100" in record.getMessage()


async def test_a_loopback_bind_does_not_warn(
    caplog: pytest.LogCaptureFixture, server: Server
) -> None:
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.0.2.1", False),
        ("example.org", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
