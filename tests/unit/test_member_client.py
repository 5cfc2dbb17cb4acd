"""Member clients against small fake RTPproxies on loopback and in tmp_path."""

from __future__ import annotations

import socket as stdsocket
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from rtpcluster.endpoint import Endpoint, Kind
from rtpcluster.protocol import MAX_COMMAND_BYTES, MAX_DATAGRAM_BYTES
from rtpcluster.transport.member_client import (
    TIMER_TICK,
    TOO_LONG_REPLY,
    MemberError,
    MemberTimeout,
    MemberUnavailable,
    StreamMemberClient,
    UdpMemberClient,
    UnixOneShotClient,
    make_client,
    new_cookie,
)
from rtpcluster.transport.pump import DatagramPump

IB_REPLY = (
    "sessions created: 10\n"
    "active sessions: 2\n"
    "active streams: 4\n"
    "packets received: 100\n"
    "packets transmitted: 90\n"
)


# --- cookies -----------------------------------------------------------------------------------


def test_cookies_are_unique_and_one_token() -> None:
    cookies = [new_cookie() for _ in range(10_000)]
    assert len(set(cookies)) == len(cookies)
    assert all(c and c.isascii() and not any(ch.isspace() for ch in c) for c in cookies)


# --- fake members ------------------------------------------------------------------------------


class FakeUdpMember:
    """Answers ``<cookie> <reply>`` to the ``answer_on``-th copy of each cookie.

    ``hold`` > 1 keeps the answers until that many distinct cookies arrived, then sends
    them newest first (replies out of order).
    """

    def __init__(
        self,
        reply: Callable[[str], str] = lambda command: f"re:{command}",
        answer_on: int = 1,
        hold: int = 1,
        family: int = stdsocket.AF_INET,
    ) -> None:
        self.reply = reply
        self.answer_on = answer_on
        self.hold = hold
        self.family = family
        self.copies: Counter[bytes] = Counter()
        self.received: list[tuple[bytes, str]] = []
        self.sources: set[tuple[Any, ...]] = set()
        self.got_copy = trio.Event()
        self.endpoint = Endpoint(Kind.UDP)
        self.sock: trio.socket.SocketType | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        ipv6 = self.family == stdsocket.AF_INET6
        host = "::1" if ipv6 else "127.0.0.1"
        with trio.socket.socket(self.family, stdsocket.SOCK_DGRAM) as sock:
            self.sock = sock
            await sock.bind((host, 0))
            self.endpoint = Endpoint(Kind.UDP6 if ipv6 else Kind.UDP, host, sock.getsockname()[1])
            task_status.started()
            held: list[tuple[bytes, str, tuple[Any, ...]]] = []
            while True:
                data, addr = await sock.recvfrom(65536)
                cookie, _, command = data.partition(b" ")
                text = command.decode()
                self.copies[cookie] += 1
                self.received.append((cookie, text))
                self.sources.add(addr)
                self.got_copy.set()
                self.got_copy = trio.Event()
                if self.copies[cookie] != self.answer_on:
                    continue
                held.append((cookie, text, addr))
                if len(held) < self.hold:
                    continue
                for cookie, text, addr in reversed(held):
                    await sock.sendto(cookie + b" " + self.reply(text).encode() + b"\n", addr)
                held.clear()


class FakeStreamMember:
    """A ``cunix``/``tcp`` member: reads lines, answers each in order on the same connection.

    ``answer`` returns the reply bytes for a command, or None to stay silent (and then
    the member ignores everything else on that connection). ``one_shot`` closes the
    connection after one reply, like RTPproxy's ``unix:`` socket.
    """

    def __init__(
        self,
        answer: Callable[[str], bytes | None] = lambda command: f"re:{command}\n".encode(),
        *,
        one_shot: bool = False,
        chunk: int = 0,
    ) -> None:
        self.answer = answer
        self.one_shot = one_shot
        self.chunk = chunk  # send replies in pieces of this many bytes (0: whole)
        self.connections = 0
        self.peers: list[str] = []  # source addresses of tcp connections
        self.received: list[str] = []
        self.raw: list[bytes] = []
        self.got_line = trio.Event()
        self.endpoint = Endpoint(Kind.CUNIX)

    async def serve_unix(
        self, path: Path, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        sock = trio.socket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM)
        await sock.bind(str(path))
        sock.listen()
        self.endpoint = Endpoint(Kind.CUNIX, path=str(path))
        await self._serve(trio.SocketListener(sock), task_status)

    async def serve_tcp(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        self.endpoint = Endpoint(Kind.TCP, "127.0.0.1", port)
        await self._serve(listeners[0], task_status)

    async def _serve(
        self, listener: trio.SocketListener, task_status: trio.TaskStatus[None]
    ) -> None:
        async with listener, trio.open_nursery() as nursery:
            task_status.started()
            while True:
                stream = await listener.accept()
                self.connections += 1
                if not isinstance(stream.socket.getpeername(), str):
                    self.peers.append(stream.socket.getpeername()[0])
                nursery.start_soon(self._connection, stream)

    async def _connection(self, stream: trio.SocketStream) -> None:
        buffer = b""
        async with stream:
            while True:
                try:
                    data = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    return
                if not data:
                    return
                self.raw.append(data)
                buffer += data
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    command = line.decode()
                    self.received.append(command)
                    self.got_line.set()
                    self.got_line = trio.Event()
                    reply = self.answer(command)
                    if reply is None:
                        await trio.sleep_forever()
                    await self._send(stream, reply)
                    if self.one_shot:
                        return

    async def _send(self, stream: trio.SocketStream, reply: bytes) -> None:
        if not self.chunk:
            await stream.send_all(reply)
            return
        for start in range(0, len(reply), self.chunk):
            await stream.send_all(reply[start : start + self.chunk])
            await trio.lowlevel.checkpoint()


def closed_udp_port() -> int:
    with stdsocket.socket(stdsocket.AF_INET, stdsocket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def has_ipv6_loopback() -> bool:
    try:
        with stdsocket.socket(stdsocket.AF_INET6, stdsocket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


# --- UDP ---------------------------------------------------------------------------------------


async def test_udp_request_and_reply() -> None:
    fake = FakeUdpMember()
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.run)
        client = UdpMemberClient(fake.endpoint)
        await nursery.start(client.run)
        assert client.rtt is None
        assert await client.request("V", timeout=2.0) == "re:V\n"
        assert await client.request("Ib", timeout=2.0, lines=5) == "re:Ib\n"
        assert client.rtt is not None and client.rtt >= 0
        nursery.cancel_scope.cancel()
    cookies = [cookie for cookie, _ in fake.received]
    assert [text for _, text in fake.received] == ["V", "Ib"]
    assert len(set(cookies)) == 2  # every request has its own cookie


@pytest.mark.parametrize("answer_on", [2, 3])
async def test_udp_retransmits_until_answered(
    answer_on: int, autojump_clock: trio.testing.MockClock
) -> None:
    fake = FakeUdpMember(answer_on=answer_on)
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.run)
        client = UdpMemberClient(fake.endpoint)
        await nursery.start(client.run)
        assert await client.request("U call-1 1.2.3.4 5000 tag", timeout=5.0) == (
            "re:U call-1 1.2.3.4 5000 tag\n"
        )
        nursery.cancel_scope.cancel()
    # every copy carried the same cookie and the same command
    assert len(fake.copies) == 1
    assert list(fake.copies.values()) == [answer_on]
    assert {text for _, text in fake.received} == {"U call-1 1.2.3.4 5000 tag"}


async def test_udp_member_that_never_answers_times_out_at_the_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeUdpMember(answer_on=10**9)
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.run)
        client = UdpMemberClient(fake.endpoint)
        await nursery.start(client.run)
        start = trio.current_time()
        with pytest.raises(MemberTimeout):
            await client.request("V", timeout=1.5)
        # retransmits and deadlines run on a timer of TIMER_TICK resolution
        assert 1.5 <= trio.current_time() - start <= 1.5 + TIMER_TICK + 1e-9
        nursery.cancel_scope.cancel()
    assert len(fake.copies) == 1
    assert next(iter(fake.copies.values())) >= 2  # it did retransmit
    assert client.rtt is None


class StalledPump(DatagramPump):
    """A pump that never gets to read: the process was busy elsewhere until the deadline."""

    async def pump_replies(self, sock: Any, source: Any) -> None:
        await trio.sleep_forever()


async def test_udp_reply_waiting_at_the_deadline_is_not_silence() -> None:
    """The member answered at once, but nothing read the socket before the deadline (a
    stall of this process): the reply waiting there is delivered, not a timeout."""
    fake = FakeUdpMember()
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.run)
        client = UdpMemberClient(fake.endpoint, pump=StalledPump())
        await nursery.start(client.run)
        assert await client.request("V", timeout=0.05) == "re:V\n"
        nursery.cancel_scope.cancel()
    assert list(fake.copies.values()) == [1]  # answered the first copy


async def test_udp_connection_refused(autojump_clock: trio.testing.MockClock) -> None:
    client = UdpMemberClient(Endpoint(Kind.UDP, "127.0.0.1", closed_udp_port()))
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        start = trio.current_time()
        with pytest.raises((MemberTimeout, MemberUnavailable)):
            await client.request("V", timeout=1.0)
        assert trio.current_time() - start <= 1.0 + TIMER_TICK + 1e-9
        # the client is still usable: the next request fails the same way, no crash
        with pytest.raises((MemberTimeout, MemberUnavailable)):
            await client.request("V", timeout=0.5)
        nursery.cancel_scope.cancel()


async def test_udp_replies_out_of_order_reach_their_requests() -> None:
    fake = FakeUdpMember(hold=3)
    results: dict[str, str] = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.run)
        client = UdpMemberClient(fake.endpoint)
        await nursery.start(client.run)

        async def ask(command: str) -> None:
            results[command] = await client.request(command, timeout=10.0)

        async with trio.open_nursery() as requests:
            for command in ("D a", "D b", "D c"):
                requests.start_soon(ask, command)
        nursery.cancel_scope.cancel()
    assert results == {"D a": "re:D a\n", "D b": "re:D b\n", "D c": "re:D c\n"}


async def test_udp_ignores_foreign_cookies_and_garbage(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeUdpMember(answer_on=10**9)  # the test answers by hand
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.run)
        client = UdpMemberClient(fake.endpoint)
        await nursery.start(client.run)

        async def answer_by_hand() -> None:
            await fake.got_copy.wait()
            assert fake.sock is not None
            cookie, _ = fake.received[0]
            (addr,) = fake.sources
            await fake.sock.sendto(b"   ", addr)
            await fake.sock.sendto(b"not-our-cookie 999\n", addr)
            await fake.sock.sendto(cookie + b" 42\n", addr)

        nursery.start_soon(answer_by_hand)
        assert await client.request("V", timeout=5.0) == "42\n"
        nursery.cancel_scope.cancel()


async def test_udp_binds_the_cmd_out_address() -> None:
    with stdsocket.socket(stdsocket.AF_INET, stdsocket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        out_port = probe.getsockname()[1]
    fake = FakeUdpMember()
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.run)
        client = UdpMemberClient(fake.endpoint, cmd_out_address=f"127.0.0.1:{out_port}")
        await nursery.start(client.run)
        assert await client.request("V", timeout=2.0) == "re:V\n"
        host_only = UdpMemberClient(fake.endpoint, cmd_out_address="127.0.0.1")
        await nursery.start(host_only.run)
        assert await host_only.request("V", timeout=2.0) == "re:V\n"
        nursery.cancel_scope.cancel()
    ports = {addr[1] for addr in fake.sources}
    assert out_port in ports
    assert len(ports) == 2


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback")
async def test_udp6_member() -> None:
    fake = FakeUdpMember(family=stdsocket.AF_INET6)
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.run)
        client = UdpMemberClient(fake.endpoint, cmd_out_address="[::1]")
        await nursery.start(client.run)
        assert await client.request("V", timeout=2.0) == "re:V\n"
        nursery.cancel_scope.cancel()


async def test_udp_request_without_run_still_ends_by_its_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client = UdpMemberClient(Endpoint(Kind.UDP, "127.0.0.1", closed_udp_port()))
    outcome: list[BaseException] = []
    with trio.move_on_after(50.0):  # virtual time: a hundred times the request's timeout
        try:
            await client.request("V", timeout=0.5)
        except MemberError as exc:
            outcome.append(exc)
    assert len(outcome) == 1


async def test_udp_request_after_run_ended_still_ends_by_its_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeUdpMember()
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.run)
        client = UdpMemberClient(fake.endpoint)
        async with trio.open_nursery() as client_nursery:
            await client_nursery.start(client.run)
            assert await client.request("V", timeout=0.5) == "re:V\n"
            client_nursery.cancel_scope.cancel()
        outcome: list[BaseException] = []
        with trio.move_on_after(50.0):
            try:
                await client.request("V", timeout=0.5)
            except MemberError as exc:
                outcome.append(exc)
        nursery.cancel_scope.cancel()
    assert len(outcome) == 1


# --- unix one-shot -----------------------------------------------------------------------------


async def test_unix_one_shot_request(tmp_path: Path) -> None:
    fake = FakeStreamMember(one_shot=True)
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.serve_unix, tmp_path / "m.sock")
        client = UnixOneShotClient(Endpoint(Kind.UNIX, path=fake.endpoint.path))
        await nursery.start(client.run)
        assert await client.request("V", timeout=5.0) == "re:V\n"
        assert await client.request("X", timeout=5.0) == "re:X\n"
        assert client.rtt is not None
        nursery.cancel_scope.cancel()
    assert fake.received == ["V", "X"]
    assert fake.raw == [b"V\n", b"X\n"]  # one newline-terminated command per connection
    assert fake.connections == 2


async def test_unix_one_shot_multi_line_reply_in_pieces(tmp_path: Path) -> None:
    fake = FakeStreamMember(lambda _: IB_REPLY.encode(), one_shot=True, chunk=7)
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.serve_unix, tmp_path / "m.sock")
        client = UnixOneShotClient(Endpoint(Kind.UNIX, path=fake.endpoint.path))
        assert await client.request("Ib", timeout=5.0, lines=5) == IB_REPLY
        nursery.cancel_scope.cancel()


async def test_unix_one_shot_reply_ended_by_eof(tmp_path: Path) -> None:
    fake = FakeStreamMember(lambda _: b"12345", one_shot=True)  # no newline, then close
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.serve_unix, tmp_path / "m.sock")
        client = UnixOneShotClient(Endpoint(Kind.UNIX, path=fake.endpoint.path))
        assert await client.request("V", timeout=5.0) == "12345\n"
        nursery.cancel_scope.cancel()


async def test_unix_one_shot_closed_without_reply(tmp_path: Path) -> None:
    fake = FakeStreamMember(lambda _: b"", one_shot=True)
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.serve_unix, tmp_path / "m.sock")
        client = UnixOneShotClient(Endpoint(Kind.UNIX, path=fake.endpoint.path))
        with pytest.raises(MemberUnavailable):
            await client.request("V", timeout=5.0)
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("sent", [b"", b"sessions created: 1\nactive sessions: 0\n"])
async def test_unix_one_shot_closed_before_a_whole_multi_line_reply(
    tmp_path: Path, sent: bytes
) -> None:
    fake = FakeStreamMember(lambda _: sent, one_shot=True)
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.serve_unix, tmp_path / "m.sock")
        client = UnixOneShotClient(Endpoint(Kind.UNIX, path=fake.endpoint.path))
        with pytest.raises(MemberUnavailable):
            await client.request("Ib", timeout=5.0, lines=5)
        nursery.cancel_scope.cancel()


async def test_unix_one_shot_silent_member_times_out(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    fake = FakeStreamMember(lambda _: None, one_shot=True)
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.serve_unix, tmp_path / "m.sock")
        client = UnixOneShotClient(Endpoint(Kind.UNIX, path=fake.endpoint.path))
        start = trio.current_time()
        with pytest.raises(MemberTimeout):
            await client.request("V", timeout=2.0)
        assert trio.current_time() - start == pytest.approx(2.0)
        nursery.cancel_scope.cancel()


async def test_unix_one_shot_no_socket_file(tmp_path: Path) -> None:
    client = UnixOneShotClient(Endpoint(Kind.UNIX, path=str(tmp_path / "absent.sock")))
    with pytest.raises(MemberUnavailable):
        await client.request("V", timeout=5.0)


# --- cunix / tcp persistent stream ------------------------------------------------------------


async def test_stream_requests_share_one_connection(tmp_path: Path) -> None:
    fake = FakeStreamMember()
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.serve_unix, tmp_path / "m.sock")
        client = StreamMemberClient(fake.endpoint)
        await nursery.start(client.run)
        for command in ("V", "VF 20040107", "G"):
            assert await client.request(command, timeout=5.0) == f"re:{command}\n"
        assert client.rtt is not None
        nursery.cancel_scope.cancel()
    assert fake.received == ["V", "VF 20040107", "G"]
    assert fake.connections == 1


async def test_stream_multi_line_reply(tmp_path: Path) -> None:
    def answer(command: str) -> bytes:
        return IB_REPLY.encode() if command == "Ib" else f"re:{command}\n".encode()

    fake = FakeStreamMember(answer, chunk=3)
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.serve_unix, tmp_path / "m.sock")
        client = StreamMemberClient(fake.endpoint)
        await nursery.start(client.run)
        assert await client.request("Ib", timeout=5.0, lines=5) == IB_REPLY
        assert await client.request("V", timeout=5.0) == "re:V\n"  # still in step
        nursery.cancel_scope.cancel()


async def test_stream_error_reply_is_one_line_whatever_was_expected(tmp_path: Path) -> None:
    def answer(command: str) -> bytes:
        return b"E8\n" if command == "Ib" else f"re:{command}\n".encode()

    fake = FakeStreamMember(answer)
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.serve_unix, tmp_path / "m.sock")
        client = StreamMemberClient(fake.endpoint)
        await nursery.start(client.run)
        assert await client.request("Ib", timeout=5.0, lines=5) == "E8\n"
        assert await client.request("V", timeout=5.0) == "re:V\n"
        nursery.cancel_scope.cancel()


async def test_stream_concurrent_requests_are_answered_in_order(tmp_path: Path) -> None:
    def answer(command: str) -> bytes:
        return IB_REPLY.encode() if command == "Ib" else f"re:{command}\n".encode()

    fake = FakeStreamMember(answer, chunk=5)
    results: dict[str, str] = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.serve_unix, tmp_path / "m.sock")
        client = StreamMemberClient(fake.endpoint)
        await nursery.start(client.run)

        async def ask(command: str, lines: int) -> None:
            results[command] = await client.request(command, timeout=10.0, lines=lines)

        async with trio.open_nursery() as requests:
            for command, lines in (("D a", 1), ("Ib", 5), ("D b", 1), ("D c", 1)):
                requests.start_soon(ask, command, lines)
        nursery.cancel_scope.cancel()
    assert results == {"D a": "re:D a\n", "Ib": IB_REPLY, "D b": "re:D b\n", "D c": "re:D c\n"}
    assert fake.connections == 1


async def test_stream_reconnects_after_a_timeout(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    def answer(command: str) -> bytes | None:
        return None if command == "slow" else f"re:{command}\n".encode()

    fake = FakeStreamMember(answer)
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.serve_unix, tmp_path / "m.sock")
        client = StreamMemberClient(fake.endpoint)
        await nursery.start(client.run)
        assert await client.request("V", timeout=1.0) == "re:V\n"
        start = trio.current_time()
        with pytest.raises(MemberTimeout):
            await client.request("slow", timeout=1.0)
        assert trio.current_time() - start == pytest.approx(1.0)
        # the connection was out of step and dropped: the next command uses a new one
        assert await client.request("V", timeout=1.0) == "re:V\n"
        nursery.cancel_scope.cancel()
    assert fake.connections == 2
    assert fake.received == ["V", "slow", "V"]


async def test_stream_member_closing_the_connection(tmp_path: Path) -> None:
    def answer(command: str) -> bytes:
        return b"" if command == "bye" else f"re:{command}\n".encode()

    fake_close = FakeStreamMember(answer, one_shot=True)  # replies once, then closes
    async with trio.open_nursery() as nursery:
        await nursery.start(fake_close.serve_unix, tmp_path / "c.sock")
        client = StreamMemberClient(fake_close.endpoint)
        await nursery.start(client.run)
        # the first reply arrives, then the member closes; pending "bye" gets nothing
        assert await client.request("V", timeout=5.0) == "re:V\n"
        with pytest.raises(MemberUnavailable):
            await client.request("bye", timeout=5.0)
        # and the client reconnects for the next command
        assert await client.request("V", timeout=5.0) == "re:V\n"
        nursery.cancel_scope.cancel()
    assert fake_close.connections >= 2


async def test_stream_no_socket_file(tmp_path: Path) -> None:
    client = StreamMemberClient(Endpoint(Kind.CUNIX, path=str(tmp_path / "absent.sock")))
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        with pytest.raises(MemberUnavailable):
            await client.request("V", timeout=5.0)
        nursery.cancel_scope.cancel()


def stale_socket_file(path: Path) -> str:
    """A unix socket file nobody listens on: connecting is refused."""
    with stdsocket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM) as sock:
        sock.bind(str(path))
    return str(path)


@pytest.mark.parametrize("kind", [Kind.UNIX, Kind.CUNIX])
async def test_unix_connection_refused(tmp_path: Path, kind: Kind) -> None:
    client = make_client(Endpoint(kind, path=stale_socket_file(tmp_path / "stale.sock")))
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        with pytest.raises(MemberUnavailable):
            await client.request("V", timeout=5.0)
        nursery.cancel_scope.cancel()


async def test_stream_request_without_run_is_unavailable(tmp_path: Path) -> None:
    fake = FakeStreamMember()
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.serve_unix, tmp_path / "m.sock")
        client = StreamMemberClient(fake.endpoint)
        with pytest.raises(MemberUnavailable):
            await client.request("V", timeout=5.0)
        nursery.cancel_scope.cancel()


async def test_tcp_stream_member() -> None:
    fake = FakeStreamMember()
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.serve_tcp)
        client = StreamMemberClient(fake.endpoint)
        await nursery.start(client.run)
        assert await client.request("V", timeout=5.0) == "re:V\n"
        assert await client.request("G", timeout=5.0) == "re:G\n"
        nursery.cancel_scope.cancel()
    assert fake.connections == 1


async def test_tcp_binds_the_cmd_out_address() -> None:
    fake = FakeStreamMember()
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.serve_tcp)
        client = StreamMemberClient(fake.endpoint, cmd_out_address="127.0.0.2")
        await nursery.start(client.run)
        assert await client.request("V", timeout=5.0) == "re:V\n"
        nursery.cancel_scope.cancel()
    assert fake.peers == ["127.0.0.2"]


async def test_tcp_connection_refused() -> None:
    with stdsocket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = StreamMemberClient(Endpoint(Kind.TCP, "127.0.0.1", port))
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        with pytest.raises((MemberUnavailable, MemberTimeout)):
            await client.request("V", timeout=5.0)
        nursery.cancel_scope.cancel()


# --- make_client -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "cls"),
    [
        ("udp:127.0.0.1:22222", UdpMemberClient),
        ("udp6:[::1]:22222", UdpMemberClient),
        ("unix:/r.sock", UnixOneShotClient),
        ("cunix:/r.sock", StreamMemberClient),
        ("tcp:127.0.0.1:22222", StreamMemberClient),
        ("tcp6:[::1]:22222", StreamMemberClient),
    ],
)
def test_make_client_picks_the_transport(text: str, cls: type) -> None:
    client = make_client(Endpoint.parse(text))
    assert type(client) is cls
    client.close()


# --- commands too long for a member's 8 KiB buffer -----------------------------------------------


async def test_udp_command_that_would_not_fit_with_our_cookie_is_e5_and_never_sent() -> None:
    fake = FakeUdpMember()
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.run)
        client = UdpMemberClient(fake.endpoint)
        await nursery.start(client.run)
        # fits a client's datagram with a one-byte cookie, not ours
        long = "U " + "x" * (MAX_DATAGRAM_BYTES - 20) + " 127.0.0.1 4000 f"
        assert await client.request(long, timeout=2.0) == TOO_LONG_REPLY
        fitting = "U " + "x" * (MAX_DATAGRAM_BYTES - 80) + " 127.0.0.1 4000 f"
        assert await client.request(fitting, timeout=2.0) == f"re:{fitting}\n"
        nursery.cancel_scope.cancel()
    assert [text for _, text in fake.received] == [fitting]


@pytest.mark.parametrize("kind", [Kind.CUNIX, Kind.UNIX])
async def test_stream_command_that_would_not_fit_with_its_newline_is_e5_and_never_sent(
    tmp_path: Path, kind: Kind
) -> None:
    fake = FakeStreamMember(one_shot=kind is Kind.UNIX)
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.serve_unix, tmp_path / "m.sock")
        endpoint = Endpoint(kind, path=str(tmp_path / "m.sock"))
        client = make_client(endpoint)
        await nursery.start(client.run)
        too_long = "G " + "é" * (MAX_COMMAND_BYTES // 2)  # few characters, too many bytes
        assert await client.request(too_long, timeout=2.0) == TOO_LONG_REPLY
        assert await client.request("V", timeout=2.0) == "re:V\n"
        nursery.cancel_scope.cancel()
    assert fake.received == ["V"]
