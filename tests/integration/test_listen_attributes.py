"""``<listen>`` attributes from the XML file to the running sockets, and back by ``save``."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest
import trio
import trio.testing

from rtpcluster.config import Config, ListenOptions, load_config, save_config
from rtpcluster.endpoint import Endpoint
from rtpcluster.service import ServeOptions, run_service
from tests.conftest import MemberFactory
from tests.integration.harness import cluster_config
from tests.integration.test_admin_live import Admin, live_service
from testsupport import free_port, stream_command


def mode_of(path: Path) -> int | None:
    """The socket's permission bits, None while it is being reopened."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return None


async def test_mode_owner_and_limits_reach_the_sockets_and_survive_save(tmp_path: Path) -> None:
    uid, gid = os.getuid(), os.getgid()
    narrow, default = tmp_path / "narrow.sock", tmp_path / "default.sock"
    config_path = tmp_path / "rtp_cluster.xml"
    config_path.write_text(
        f"""<rtp_cluster_config><rtp_cluster><name>c1</name>
        <listen mode="0660" owner="{uid}:{gid}" max_connections="8">unix:{narrow}</listen>
        <listen idle_timeout="30">cunix:{default}</listen>
        </rtp_cluster></rtp_cluster_config>"""
    )
    config = load_config(config_path)
    admin_path = str(tmp_path / "admin.sock")
    options = ServeOptions(config_path=str(config_path), admin_socket=admin_path, stop_grace=0.5)
    async with trio.open_nursery() as nursery:
        service = await nursery.start(run_service, config, options)
        info = os.stat(narrow)
        assert stat.S_IMODE(info.st_mode) == 0o660
        assert (info.st_uid, info.st_gid) == (uid, gid)
        assert stat.S_IMODE(os.stat(default).st_mode) == 0o666  # RTPproxy's default
        assert await stream_command(f"unix:{narrow}", "V", newline=False) == "20040107\n"

        saved = tmp_path / "saved.xml"
        assert await Admin(admin_path).ok(f"save {saved}") == [f"Saved to {saved}"]
        assert load_config(saved) == config
        assert f'<listen mode="0660" owner="{uid}:{gid}" max_connections="8">' in saved.read_text()

        # a reload that narrows the mode reopens the socket with it
        config_path.write_text(saved.read_text().replace('mode="0660"', 'mode="0600"'))
        admin = Admin(admin_path)
        assert await admin.ok("reload --dry-run") == [
            f"cluster c1: listen on unix:{narrow}, cunix:{default}",
            "Would load 1 clusters and 0 RTP proxies (dry run, nothing changed)",
        ]
        await admin.ok("reload")
        await admin.until("ls", lambda _: mode_of(narrow) == 0o600)
        assert await stream_command(f"unix:{narrow}", "V", newline=False) == "20040107\n"
        service.stop()


def with_listen(config: Config, options: dict[str, ListenOptions], *extra: str) -> Config:
    """``config`` whose one cluster has these ``<listen>`` attributes (and more endpoints)."""
    cluster = config.clusters[0]
    listen = [*cluster.listen, *(Endpoint.parse(spec) for spec in extra)]
    return Config(
        clusters=[cluster.model_copy(update={"listen": listen, "listen_options": options})]
    )


def scratch_files(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.startswith(".rtpcluster-")]


async def command(stream: trio.SocketStream, text: bytes) -> bytes:
    await stream.send_all(text)
    with trio.fail_after(5):
        return await stream.receive_some(100)


async def test_a_reload_of_only_listen_attributes_reopens_each_socket_in_place(
    rtpproxy: MemberFactory, tmp_path: Path
) -> None:
    one_shot, persistent, port = tmp_path / "c.sock", tmp_path / "p.sock", free_port()
    listen = [f"unix:{one_shot}", f"cunix:{persistent}", f"tcp:127.0.0.1:{port}"]
    config = Config(clusters=[cluster_config([rtpproxy()], listen)])
    async with live_service(tmp_path, config) as (service, admin):
        config_path = Path(service.config_path)
        cluster = service.running["c1"]
        before = list(cluster.listeners)
        inodes = [os.stat(one_shot).st_ino, os.stat(persistent).st_ino]
        quiet = await trio.open_unix_socket(str(persistent))  # idle between commands
        assert await command(quiet, b"V\n") == b"20040107\n"

        narrowed = {
            listen[0]: ListenOptions(mode=0o600),
            listen[1]: ListenOptions(max_connections=1),
            listen[2]: ListenOptions(max_connections=1, idle_timeout=60),
        }
        save_config(with_listen(config, narrowed), config_path)
        assert await admin.ok("reload --dry-run") == [
            f"cluster c1: listen on {', '.join(listen)}",
            "Would load 1 clusters and 1 RTP proxies (dry run, nothing changed)",
        ]
        assert cluster.listeners == before and mode_of(one_shot) == 0o666
        assert await admin.ok("reload") == [
            f"cluster c1: listen on {', '.join(listen)}",
            "Loaded 1 clusters and 1 RTP proxies",
        ]
        assert service.running["c1"] is cluster  # changed in place, not restarted
        after = list(cluster.listeners)
        assert [str(li.endpoint) for li in after] == listen and not set(after) & set(before)
        assert [li.bound.options for li in after] == list(narrowed.values())
        assert mode_of(one_shot) == 0o600  # at once: the file never went away
        assert [os.stat(one_shot).st_ino, os.stat(persistent).st_ino] == inodes
        with trio.fail_after(5):
            assert await quiet.receive_some(10) == b""  # let go by the listener that left

        # the new limit holds on the same sockets: the second connection pushes out the first
        for opened in (
            lambda: trio.open_unix_socket(str(persistent)),
            lambda: trio.open_tcp_stream("127.0.0.1", port),
        ):
            first = await opened()
            assert await command(first, b"V\n") == b"20040107\n"
            second = await opened()
            assert await command(second, b"V\n") == b"20040107\n"
            with trio.fail_after(5):
                assert await first.receive_some(10) == b""
            await first.aclose()
            await second.aclose()

        # the old listeners end (their grace cut short): the files stay with the new ones
        for listener in before:
            listener.close()
        await trio.testing.wait_all_tasks_blocked()
        assert all(s.socket.fileno() == -1 for li in before for s in li.bound.streams)
        assert [os.stat(one_shot).st_ino, os.stat(persistent).st_ino] == inodes
        assert await stream_command(listen[0], "V", newline=False) == "20040107\n"
        assert await stream_command(listen[1], "V") == "20040107\n"

        # other attributes beside a busy port: refused whole, the sockets keep theirs
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
            holder.bind(("127.0.0.1", 0))
            busy = f"udp:127.0.0.1:{holder.getsockname()[1]}"
            wider = {listen[0]: ListenOptions(mode=0o660), listen[1]: ListenOptions()}
            save_config(with_listen(config, wider, busy), config_path)
            assert await admin("reload") == [
                f"ERROR: reload failed, nothing changed: c1: cannot listen on {busy}: "
                "Address already in use"
            ]
        assert cluster.listeners == after
        assert [li.bound.options for li in after] == list(narrowed.values())
        assert mode_of(one_shot) == 0o600
        assert scratch_files(tmp_path) == []
        await quiet.aclose()


async def test_a_reload_gives_a_kept_socket_another_owner_in_place(
    rtpproxy: MemberFactory, tmp_path: Path
) -> None:
    if os.getuid() != 0:
        pytest.skip("only root gives a socket to another user")
    path = tmp_path / "c.sock"
    config = Config(clusters=[cluster_config([rtpproxy()], [f"cunix:{path}"])])
    async with live_service(tmp_path, config) as (service, admin):
        inode = os.stat(path).st_ino
        given = {f"cunix:{path}": ListenOptions(mode=0o660, owner="65534:65534")}
        save_config(with_listen(config, given), Path(service.config_path))
        await admin.ok("reload")
        info = os.stat(path)
        assert (info.st_ino, stat.S_IMODE(info.st_mode)) == (inode, 0o660)
        assert (info.st_uid, info.st_gid) == (65534, 65534)
        # without the attribute the file goes back to the service's own user and group
        save_config(config, Path(service.config_path))
        await admin.ok("reload")
        info = os.stat(path)
        assert (info.st_ino, stat.S_IMODE(info.st_mode)) == (inode, 0o666)
        assert (info.st_uid, info.st_gid) == (os.geteuid(), os.getegid())
        assert await stream_command(f"cunix:{path}", "V") == "20040107\n"


async def test_a_reload_with_an_owner_not_allowed_changes_nothing(
    rtpproxy: MemberFactory, tmp_path: Path
) -> None:
    if os.getuid() == 0:
        pytest.skip("root may give a socket to anybody")
    path = tmp_path / "c.sock"
    config = Config(clusters=[cluster_config([rtpproxy()], [f"cunix:{path}"])])
    async with live_service(tmp_path, config) as (service, admin):
        before = list(service.running["c1"].listeners)
        given = {f"cunix:{path}": ListenOptions(mode=0o660, owner="0:0", max_connections=3)}
        save_config(with_listen(config, given), Path(service.config_path))
        refusal = (
            f"ERROR: reload failed, nothing changed: c1: cannot listen on cunix:{path}: "
            "cannot set mode 0660 and owner 0:0: Operation not permitted"
        )
        assert await admin("reload --dry-run") == [refusal]
        assert await admin("reload") == [refusal]
        assert service.running["c1"].listeners == before
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o666
        assert scratch_files(tmp_path) == []
        assert await stream_command(f"cunix:{path}", "V") == "20040107\n"
