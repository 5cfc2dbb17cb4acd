"""Finding 6: the admin token, and TCP admin sockets that other hosts could reach.

Real loopback TCP and unix sockets; the service behind them is the admin tests' stand-in
(what is tested here is the admin server alone).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from rtpcluster.admin.address import AdminSocketError, parse_admin_spec
from rtpcluster.admin.server import AUTH_TIMEOUT, serve_admin
from rtpcluster.admin.token import TokenFileError, is_loopback, read_token_file
from tests.unit.test_admin_commands import FakeControl
from tests.unit.test_admin_server import LineClient
from tests.unit.test_cli import invoke
from testsupport import free_port

TOKEN = "s3cret-token-0123456789abcdef"


def token_file(tmp_path: Path, token: str = TOKEN, mode: int = 0o600, name: str = "t") -> Path:
    path = tmp_path / name
    path.write_text(token + "\n")
    os.chmod(path, mode)
    return path


@pytest.fixture
async def guarded(nursery: trio.Nursery, tmp_path: Path) -> tuple[FakeControl, str, Path]:
    """An admin socket on loopback TCP that wants the token: (control, spec, token file)."""
    control = FakeControl(str(tmp_path / "rtp_cluster.xml"))
    spec = f"tcp:127.0.0.1:{free_port(socket.SOCK_STREAM)}"
    path = token_file(tmp_path)
    await nursery.start(lambda **kw: serve_admin(control, spec, token_file=str(path), **kw))
    return control, spec, path


async def connect(spec: str) -> LineClient:
    endpoint = parse_admin_spec(spec)
    return LineClient(await trio.open_tcp_stream(endpoint.host, endpoint.port))


async def closed(client: LineClient) -> bool:
    return await client.line() is None


# --- who must authenticate -----------------------------------------------------------


@pytest.mark.parametrize("spec", ["tcp:0.0.0.0:{port}", "tcp:*:{port}", "tcp6:[::]:{port}"])
async def test_every_interface_without_a_token_is_refused_before_binding(spec: str) -> None:
    port = free_port(socket.SOCK_STREAM)
    with pytest.raises(AdminSocketError, match=r"not a loopback address.*--admin-token-file"):
        await serve_admin(FakeControl(), spec.format(port=port))
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=5):
        pass  # nothing listens


async def test_serve_refuses_an_exposed_admin_socket_at_start(tmp_path: Path) -> None:
    config = tmp_path / "c.xml"
    config.write_text("<rtp_cluster_config/>")
    result = await invoke("serve", "-f", "-c", str(config), "-s", "tcp:0.0.0.0:9999")
    assert result.exit_code == 2
    assert "admin socket tcp:0.0.0.0:9999: not a loopback address" in result.stderr


async def test_loopback_tcp_without_a_token_stays_open(nursery: trio.Nursery) -> None:
    spec = f"tcp:127.0.0.1:{free_port(socket.SOCK_STREAM)}"
    await nursery.start(serve_admin, FakeControl(), spec)
    client = await connect(spec)
    assert (await client.command("ls"))[-1] == "OK"
    assert await client.command(f"auth {TOKEN}") == ["OK"]  # nothing to check: accepted


def test_loopback_hosts() -> None:
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost", "::ffff:127.0.0.1"):
        kind = "tcp6" if ":" in host else "tcp"
        assert is_loopback(
            parse_admin_spec(f"{kind}:[{host}]:1" if ":" in host else f"tcp:{host}:1")
        )
    for spec in (
        "tcp:0.0.0.0:1",
        "tcp:*:1",
        "tcp6:[::]:1",
        "tcp:10.1.2.3:1",
        "tcp:no-such-host.invalid:1",
    ):
        assert not is_loopback(parse_admin_spec(spec))


@given(st.ip_addresses())
def test_loopback_is_decided_by_the_address(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    spec = f"tcp6:[{ip}]:1" if ip.version == 6 else f"tcp:{ip}:1"
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    expected = ip in ipaddress.ip_network("127.0.0.0/8") or ip == ipaddress.ip_address("::1")
    if mapped is not None:
        expected = mapped in ipaddress.ip_network("127.0.0.0/8")
    assert is_loopback(parse_admin_spec(spec)) == expected


# --- the token file --------------------------------------------------------------------


def test_token_file_rules(tmp_path: Path) -> None:
    assert read_token_file(str(token_file(tmp_path))) == TOKEN
    assert read_token_file(str(token_file(tmp_path, mode=0o640))) == TOKEN  # group: fine
    with pytest.raises(TokenFileError, match=r"readable or writable by every user \(mode 0644\)"):
        read_token_file(str(token_file(tmp_path, mode=0o644)))
    with pytest.raises(TokenFileError, match=r"mode 0602"):
        read_token_file(str(token_file(tmp_path, mode=0o602)))
    with pytest.raises(TokenFileError, match="must have 16 to 256 characters, it has 5"):
        read_token_file(str(token_file(tmp_path, token="short")))
    with pytest.raises(TokenFileError, match="must not contain spaces"):
        read_token_file(str(token_file(tmp_path, token="two words but long enough")))
    with pytest.raises(TokenFileError, match="No such file or directory"):
        read_token_file(str(tmp_path / "missing"))
    with pytest.raises(TokenFileError, match="not a regular file"):
        read_token_file(str(tmp_path))


async def test_a_world_readable_token_file_is_refused_at_start(tmp_path: Path) -> None:
    loose = token_file(tmp_path, mode=0o644)
    with pytest.raises(AdminSocketError, match="readable or writable by every user"):
        await serve_admin(FakeControl(), str(tmp_path / "a.sock"), token_file=str(loose))
    config = tmp_path / "c.xml"
    config.write_text("<rtp_cluster_config/>")
    result = await invoke(
        "serve", "-f", "-c", str(config), "-s", "tcp:0.0.0.0:9999", "--admin-token-file", str(loose)
    )
    assert result.exit_code == 2
    assert f"token file {loose}: readable or writable by every user" in result.stderr


# --- the handshake ---------------------------------------------------------------------


async def test_without_auth_nothing_runs(guarded: tuple[FakeControl, str, Path]) -> None:
    control, spec, _ = guarded
    client = await connect(spec)
    assert await client.command("ls") == ["ERROR: authentication required: send auth <token> first"]
    assert await closed(client)
    client = await connect(spec)
    assert await client.command("create x address=udp:127.0.0.1:23000") == [
        "ERROR: authentication required: send auth <token> first"
    ]
    assert control.calls == []


async def test_wrong_token_is_refused_and_closed(guarded: tuple[FakeControl, str, Path]) -> None:
    control, spec, _ = guarded
    for attempt in ("auth wrong-token-0123456789abcdef", "auth", f"auth {TOKEN} extra", "AUTH x"):
        client = await connect(spec)
        assert await client.command(attempt) == ["ERROR: authentication failed"]
        assert await closed(client)
    assert control.calls == []


async def test_right_token_then_commands(guarded: tuple[FakeControl, str, Path]) -> None:
    control, spec, _ = guarded
    client = await connect(spec)
    assert await client.command(f"auth {TOKEN}") == ["OK"]
    assert (await client.command("ls"))[-1] == "OK"
    assert await client.command("modify c pause rp1") == ["OK"]
    assert control.calls == [("suspend_member", "c", "rp1")]
    assert await client.command("auth wrong") == ["ERROR: authentication failed"]
    assert await closed(client)  # a wrong token later on ends the connection too


async def test_long_input_before_auth_is_cut_off(guarded: tuple[FakeControl, str, Path]) -> None:
    _, spec, _ = guarded
    client = await connect(spec)
    await client.send("auth " + "x" * 10_000)  # no newline: at most 512 bytes are held
    assert await client.line() == "ERROR: authentication failed"
    assert await closed(client)


async def test_silent_client_is_dropped_before_auth(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = str(tmp_path / "a.sock")
    async with trio.open_nursery() as nursery:
        tokens = str(token_file(tmp_path))
        await nursery.start(lambda **kw: serve_admin(FakeControl(), path, token_file=tokens, **kw))
        stream = await trio.open_unix_socket(path)
        before = trio.current_time()
        assert await stream.receive_some(100) == b""
        assert AUTH_TIMEOUT <= trio.current_time() - before < AUTH_TIMEOUT + 1
        nursery.cancel_scope.cancel()


async def test_failed_attempts_are_logged_once_per_minute(
    guarded: tuple[FakeControl, str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    _, spec, _ = guarded
    caplog.set_level(logging.WARNING)
    for _ in range(30):
        client = await connect(spec)
        assert await client.command("auth guess-guess-guess-guess") == [
            "ERROR: authentication failed"
        ]
    warnings = [r.getMessage() for r in caplog.records if "authentication failed" in r.getMessage()]
    assert warnings == ["admin: authentication failed from 127.0.0.1"]


# --- rtpcluster ctl ------------------------------------------------------------------


async def test_ctl_sends_the_token(guarded: tuple[FakeControl, str, Path], tmp_path: Path) -> None:
    _, spec, path = guarded
    result = await invoke("ctl", "-s", spec, "--token-file", str(path), "ls", "empty")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "Active members of the cluster #1:",
        "Inactive members of the cluster #1:",
        "OK",
    ]
    result = await invoke("ctl", "-s", spec, "--admin-token-file", str(path), "raw", "help")
    assert result.exit_code == 0 and result.stdout.splitlines()[-1] == "OK"

    wrong = token_file(tmp_path, token="another-token-0123456789", name="wrong")
    result = await invoke("ctl", "-s", spec, "--token-file", str(wrong), "ls")
    assert (result.exit_code, result.stdout) == (1, "ERROR: authentication failed\n")
    result = await invoke("ctl", "-s", spec, "ls")
    assert result.exit_code == 1
    assert result.stdout == "ERROR: authentication required: send auth <token> first\n"
    loose = token_file(tmp_path, mode=0o604, name="loose")
    result = await invoke("ctl", "-s", spec, "--token-file", str(loose), "ls")
    assert result.exit_code == 2 and "readable or writable by every user" in result.stderr


async def test_token_on_a_unix_admin_socket(nursery: trio.Nursery, tmp_path: Path) -> None:
    path = str(tmp_path / "a.sock")
    tokens = str(token_file(tmp_path))
    await nursery.start(lambda **kw: serve_admin(FakeControl(), path, token_file=tokens, **kw))
    result = await invoke("ctl", "-s", path, "--token-file", tokens, "ls", "empty")
    assert result.exit_code == 0, result.output
    result = await invoke("ctl", "-s", path, "ls", "empty")
    assert result.exit_code == 1
