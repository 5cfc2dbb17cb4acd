"""The systemd notify protocol, with this test playing systemd's side of the socket."""

from __future__ import annotations

import os
import socket as stdsocket
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from rtpcluster.cluster.control import ClusterInfo
from rtpcluster.config import ClusterConfig, Config
from rtpcluster.endpoint import Endpoint
from rtpcluster.sdnotify import Notifier, socket_address, status_text, watchdog_interval
from rtpcluster.service import ServeOptions, run_service
from tests.unit.test_admin_commands import member
from testsupport import free_port


class Systemd:
    """The receiving end of $NOTIFY_SOCKET: a unix datagram socket."""

    def __init__(self, address: str) -> None:
        self.address = address  # as $NOTIFY_SOCKET gives it
        self.sock = trio.socket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_DGRAM)

    async def bind(self) -> None:
        await self.sock.bind(socket_address(self.address))

    async def message(self) -> dict[str, str]:
        """The next datagram as KEY -> VALUE."""
        with trio.fail_after(10):
            data = await self.sock.recv(4096)
        fields = dict(line.split("=", 1) for line in data.decode().split("\n"))
        return fields

    async def until(self, key: str) -> dict[str, str]:
        """Skip datagrams until one carries ``key``."""
        while True:
            fields = await self.message()
            if key in fields:
                return fields


@pytest.fixture(params=["path", "abstract"])
async def systemd(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Systemd]:
    if request.param == "path":
        address = str(tmp_path / "notify.sock")
    else:
        address = f"@rtpcluster-test-{os.getpid()}-{id(request)}"
    receiver = Systemd(address)
    await receiver.bind()
    yield receiver
    receiver.sock.close()


async def test_ready_carries_the_status(systemd: Systemd) -> None:
    notifier = Notifier(systemd.address)
    notifier.ready("1 cluster, 2 of 2 members online")
    assert await systemd.message() == {
        "READY": "1",
        "STATUS": "1 cluster, 2 of 2 members online",
    }


async def test_reloading_stopping_and_status(systemd: Systemd) -> None:
    notifier = Notifier(systemd.address)
    notifier.reloading()
    fields = await systemd.message()
    assert fields["RELOADING"] == "1" and int(fields["MONOTONIC_USEC"]) > 0
    notifier.status("changed")
    notifier.status("changed")  # unchanged: not sent again
    notifier.stopping()
    assert await systemd.message() == {"STATUS": "changed"}
    assert await systemd.message() == {"STOPPING": "1", "STATUS": "stopping"}


async def test_watchdog_pings_come_from_the_loop(systemd: Systemd, nursery: trio.Nursery) -> None:
    # WATCHDOG_USEC of 0.2 s: a ping every 0.1 s
    notifier = Notifier.from_environment(
        {"NOTIFY_SOCKET": systemd.address, "WATCHDOG_USEC": "200000"}
    )
    assert notifier.watchdog == 0.1
    await nursery.start(notifier.run, lambda: "fine")
    assert await systemd.message() == {"READY": "1", "STATUS": "fine"}
    for _ in range(3):
        assert await systemd.message() == {"WATCHDOG": "1"}


def test_watchdog_interval_from_the_environment() -> None:
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "junk"}) is None
    mine = str(os.getpid())
    assert watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": mine}) == 1.0
    assert watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}) is None


def test_without_notify_socket_nothing_is_sent() -> None:
    notifier = Notifier.from_environment({"WATCHDOG_USEC": "1000000"})
    assert not notifier.enabled and notifier.watchdog is None
    notifier.ready("x")  # no socket, no error


def test_abstract_address() -> None:
    assert socket_address("@name") == b"\0name"
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"


async def test_a_socket_nobody_listens_on_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier(str(tmp_path / "gone.sock"))
    notifier.ready("x")
    notifier.stopping()
    warnings = [r for r in caplog.records if r.name == "rtpcluster.sdnotify"]
    assert len(warnings) == 1
    assert "gone.sock" in warnings[0].getMessage()


def test_status_text_names_the_offline_members() -> None:
    clusters = [
        ClusterInfo(
            index=0,
            name="c1",
            addresses=[],
            capacity_limit="soft",
            members=[member("a"), member("b", online=False)],
        ),
        ClusterInfo(index=1, name="c2", addresses=[], capacity_limit="soft"),
    ]
    assert status_text(clusters) == "2 clusters, 1 of 2 members online; offline: c1/b"
    assert status_text([]) == "0 clusters, 0 of 0 members online"


async def test_service_notifies_ready_after_binding_then_reload_and_stop(
    systemd: Systemd, tmp_path: Path, nursery: trio.Nursery
) -> None:
    """READY=1 only once the control socket answers; RELOADING/READY around a reload;
    STOPPING=1 at the stop."""
    port = free_port()
    cluster = ClusterConfig(name="c1", listen=[Endpoint.parse(f"udp:127.0.0.1:{port}")])
    config_file = tmp_path / "rtp_cluster.xml"
    from rtpcluster.config import save_config

    save_config(Config(clusters=[cluster]), config_file)
    options = ServeOptions(
        config_path=str(config_file),
        admin_socket=None,
        stop_grace=0.1,
        notifier=Notifier(systemd.address),
    )
    service = await nursery.start(run_service, Config(clusters=[cluster]), options)
    ready = await systemd.message()
    assert ready == {"READY": "1", "STATUS": "1 cluster, 0 of 0 members online"}
    # the cluster's listener was bound before READY: it answers now
    client = trio.socket.socket(stdsocket.AF_INET, stdsocket.SOCK_DGRAM)
    with client:
        await client.sendto(b"c1 V", ("127.0.0.1", port))
        with trio.fail_after(10):
            assert await client.recv(100) == b"c1 20040107\n"
    await service.reload()
    assert "RELOADING" in await systemd.message()
    assert (await systemd.message())["READY"] == "1"
    service.stop()
    assert await systemd.until("STOPPING") == {"STOPPING": "1", "STATUS": "stopping"}


async def test_a_refused_reload_ends_with_ready_and_the_same_status(
    systemd: Systemd, tmp_path: Path, nursery: trio.Nursery
) -> None:
    """A reload refused at binding (a busy port) or at reading (a broken file) is framed by
    RELOADING=1 and READY=1 like any other, and the cluster keeps answering; a dry run
    tells systemd nothing."""
    from rtpcluster.cluster.control import ControlError
    from rtpcluster.config import save_config

    port = free_port()
    cluster = ClusterConfig(name="c1", listen=[Endpoint.parse(f"udp:127.0.0.1:{port}")])
    config_file = tmp_path / "rtp_cluster.xml"
    options = ServeOptions(
        config_path=str(config_file),
        admin_socket=None,
        stop_grace=0.1,
        notifier=Notifier(systemd.address),
    )
    service = await nursery.start(run_service, Config(clusters=[cluster]), options)
    status = "1 cluster, 0 of 0 members online"
    assert await systemd.message() == {"READY": "1", "STATUS": status}

    with stdsocket.socket(stdsocket.AF_INET, stdsocket.SOCK_DGRAM) as holder:
        holder.bind(("127.0.0.1", 0))  # another program holds this port
        busy = Endpoint.parse(f"udp:127.0.0.1:{holder.getsockname()[1]}")
        second = ClusterConfig(name="c2", listen=[busy])
        save_config(Config(clusters=[cluster, second]), config_file)
        with pytest.raises(ControlError, match="reload failed, nothing changed"):
            await service.reload(dry_run=True)
        with pytest.raises(ControlError, match="reload failed, nothing changed"):
            await service.reload()
    reloading = await systemd.message()
    assert reloading["RELOADING"] == "1" and reloading["STATUS"] == "reloading"
    assert await systemd.message() == {"READY": "1", "STATUS": status}

    config_file.write_text("<rtp_cluster_config><rtp_cluster>")  # not XML
    with pytest.raises(ControlError, match="reload failed, nothing changed"):
        await service.reload()
    assert "RELOADING" in await systemd.message()
    assert await systemd.message() == {"READY": "1", "STATUS": status}

    assert list(service.running) == ["c1"]
    client = trio.socket.socket(stdsocket.AF_INET, stdsocket.SOCK_DGRAM)
    with client:
        await client.sendto(b"c1 V", ("127.0.0.1", port))
        with trio.fail_after(10):
            assert await client.recv(100) == b"c1 20040107\n"
    service.stop()
    # nothing came between the last READY=1 and the stop (the dry run sent nothing)
    assert await systemd.message() == {"STOPPING": "1", "STATUS": "stopping"}
