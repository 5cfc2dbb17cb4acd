"""Issue 9, findings 4 and 8: a refused change leaves the service as it was, and says why.

Each test plays what a careless operator did against the real admin socket of a running
service with real RTPproxies: a reload or ``create`` onto a port someone else holds, two
members on one address, timers far outside reason, a member whose name does not resolve.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from rtpcluster.config import Config, DisconnectNotify, save_config
from rtpcluster.endpoint import Endpoint
from rtpcluster.service import Service
from tests.conftest import MemberFactory
from tests.integration.harness import cluster_config, member_config, owner_of, wait_online
from tests.integration.test_admin_live import Admin, live_service, member_fields
from testsupport import RtpProxy, UdpControlClient, free_port, stream_command

GROUP_TEXT = "Exceptions from Trio nursery"
UNRESOLVABLE = "nonexistent.invalid"  # RFC 6761: never resolves


@pytest.fixture
def busy_udp_port() -> Iterator[int]:
    """A loopback UDP port this test holds bound, as another program would."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("127.0.0.1", 0))
        yield int(holder.getsockname()[1])


def os_reason(host: str) -> str:
    """What the resolver says about ``host`` on this machine (the message must carry it)."""
    try:
        socket.getaddrinfo(host, 22222, socket.AF_INET, socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        return str(exc.strerror)
    raise AssertionError(f"{host} resolves here")


async def still_serving(
    service: Service, admin: Admin, listen: list[str], proxies: list[RtpProxy], call: str
) -> None:
    """The cluster c1 is listed, each of its control sockets answers, and calls get placed."""
    assert "    name = c1" in "\n".join(await admin.ok("ls"))
    await wait_online(service, "c1", len(proxies))
    for endpoint in listen:
        if endpoint.startswith("unix:"):
            assert await stream_command(endpoint, "V", newline=False) == "20040107\n"
        else:
            client = UdpControlClient(endpoint)
            try:
                assert await client.command("V") == "20040107\n"
                offer = await client.command(f"U {call} 127.0.0.1 4000 f")
                owner_of(offer, proxies)  # raises unless a member placed it
            finally:
                client.close()


async def test_reload_onto_a_busy_port_changes_nothing(
    rtpproxy: MemberFactory,
    tmp_path: Path,
    busy_udp_port: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    proxies = [rtpproxy(), rtpproxy()]
    listen = [f"udp:127.0.0.1:{free_port()}", f"unix:{tmp_path / 'c1.sock'}"]
    config = Config(clusters=[cluster_config(proxies, listen)])
    busy = f"udp:127.0.0.1:{busy_udp_port}"
    async with live_service(tmp_path, config) as (service, admin):
        config_path = Path(service.config_path)
        # the new <listen> collides; the member changes in the same file must not apply
        cluster = config.clusters[0]
        moved = cluster.model_copy(
            update={
                "listen": [Endpoint.parse(spec) for spec in (listen[0], busy, listen[1])],
                "members": [
                    cluster.members[0].model_copy(update={"weight": 7}),
                    member_config("m2", rtpproxy()),
                ],
            }
        )
        save_config(Config(clusters=[moved]), config_path)
        refusal = f"ERROR: reload failed, nothing changed: c1: cannot listen on {busy}: "
        refusal += "Address already in use"
        assert await admin("reload --dry-run") == [refusal]
        assert await admin("reload") == [refusal]
        text = "\n".join(await admin.ok("ls c1"))
        assert "name = m1" in text and "name = m2" not in text and "weight = 7" not in text
        await still_serving(service, admin, listen, proxies, "after-refused-listen")

        # a reload that adds a cluster on the busy port, and drops a member of c1
        added = cluster_config([], [busy], name="c2")
        fewer = cluster.model_copy(update={"members": cluster.members[:1]})
        save_config(Config(clusters=[fewer, added]), config_path)
        refusal = f"ERROR: reload failed, nothing changed: c2: cannot listen on {busy}: "
        refusal += "Address already in use"
        assert await admin("reload --dry-run") == [refusal]
        assert await admin("reload") == [refusal]
        text = "\n".join(await admin.ok("ls"))
        assert "name = c2" not in text
        assert "online members = 2 (2 active, 0 suspended, 0 draining)" in text
        await still_serving(service, admin, listen, proxies, "after-refused-cluster")
    assert not [r for r in caplog.records if GROUP_TEXT in r.getMessage()]


async def test_create_on_a_busy_port_changes_nothing(
    rtpproxy: MemberFactory, tmp_path: Path, busy_udp_port: int
) -> None:
    proxy = rtpproxy()
    listen = [f"udp:127.0.0.1:{free_port()}"]
    config = Config(clusters=[cluster_config([proxy], listen)])
    async with live_service(tmp_path, config) as (service, admin):
        busy = f"udp:127.0.0.1:{busy_udp_port}"
        assert await admin(f"create c2 address={busy}") == [
            f"ERROR: c2: cannot listen on {busy}: Address already in use"
        ]
        # a unix path another server listens on is not taken over either
        path = tmp_path / "taken.sock"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
            other.bind(str(path))
            other.listen(1)
            assert await admin(f"create c3 address=unix:{path}") == [
                f"ERROR: c3: cannot listen on unix:{path}: another server is listening on it"
            ]
            assert path.exists()
        assert [line for line in await admin.ok("ls") if "name =" in line] == ["    name = c1"]
        await still_serving(service, admin, listen, [proxy], "after-refused-create")

        # the refusals used no cluster number: the next cluster is #1
        free = f"udp:127.0.0.1:{free_port()}"
        assert await admin.ok(f"create c4 address={free}") == []
        assert "Cluster: #1\n    name = c4" in "\n".join(await admin.ok("ls"))


async def test_a_listen_change_keeps_the_cluster_and_its_calls(
    rtpproxy: MemberFactory, tmp_path: Path
) -> None:
    proxies = [rtpproxy(), rtpproxy()]
    first = f"udp:127.0.0.1:{free_port()}"
    unix = f"unix:{tmp_path / 'c1.sock'}"
    config = Config(clusters=[cluster_config(proxies, [first, unix])])
    async with live_service(tmp_path, config) as (service, admin):
        before = service.running["c1"]
        client = UdpControlClient(first)
        owner = owner_of(await client.command("U kept 127.0.0.1 4000 ft"), proxies)
        client.close()

        second = f"udp:127.0.0.1:{free_port()}"
        changed = config.clusters[0].model_copy(
            update={"listen": [Endpoint.parse(first), Endpoint.parse(second)]}
        )
        save_config(Config(clusters=[changed]), Path(service.config_path))
        assert await admin.ok("reload") == [
            f"cluster c1: listen on {first}, {second}",
            "Loaded 1 clusters and 2 RTP proxies",
        ]
        assert service.running["c1"] is before  # changed in place, not restarted
        single = "\n".join(await admin.ok("ls"))
        assert f"address = {second}" in single and unix not in single
        assert not (tmp_path / "c1.sock").exists()
        # the call made before the change is still known: its answer comes from its member
        client = UdpControlClient(second)
        assert owner_of(await client.command("L kept 127.0.0.1 4002 ft tt"), proxies) is owner
        client.close()


async def test_a_reload_with_a_duplicate_member_address_is_refused_whole(
    rtpproxy: MemberFactory, tmp_path: Path
) -> None:
    proxies = [rtpproxy(), rtpproxy()]
    listen = [f"udp:127.0.0.1:{free_port()}"]
    config = Config(clusters=[cluster_config(proxies, listen)])
    async with live_service(tmp_path, config) as (service, admin):
        config_path = Path(service.config_path)
        cluster = config.clusters[0]
        text = config_path.read_text()
        # in the file as written: m2 on m0's address, and a weight change beside it
        doubled = text.replace("<weight>100</weight>", "<weight>5</weight>", 1).replace(
            "</rtp_cluster>",
            f"<rtpproxy><name>m2</name><protocol>udp</protocol>"
            f"<address>{proxies[0].address}</address></rtpproxy></rtp_cluster>",
        )
        config_path.write_text(doubled)
        message = (
            "cluster 'c1': rtpproxy 'm2': <address>: "
            f"'{proxies[0].address}' is already the address of rtpproxy 'm0'"
        )
        assert await admin("reload --dry-run") == [
            f"ERROR: reload failed, nothing changed: {message}"
        ]
        assert await admin("reload") == [f"ERROR: reload failed, nothing changed: {message}"]
        listing = "\n".join(await admin.ok("ls c1"))
        assert "name = m2" not in listing and "weight = 5" not in listing

        # another spelling of the same socket is found by resolving it
        port = proxies[0].address.rsplit(":", 1)[1]
        other_spelling = member_config("m2", proxies[0], address=f"localhost:{port}")
        alias = cluster.model_copy(update={"members": [*cluster.members, other_spelling]})
        save_config(Config(clusters=[alias]), config_path)
        [refused] = await admin("reload")
        assert refused == (
            "ERROR: reload failed, nothing changed: cluster 'c1': rtpproxy 'm2': <address>: "
            f"'localhost:{port}' is already the socket ({proxies[0].address}) of rtpproxy 'm0'"
        )

        # modify add: the same checks, the same words
        fields = member_fields("m3", proxies[1])
        assert await admin(f"modify c1 add {fields}") == [
            "ERROR: cluster 'c1': rtpproxy 'm3': <address>: "
            f"'{proxies[1].address}' is already the address of rtpproxy 'm1'"
        ]
        aliased = f"name=m3,protocol=udp,address=localhost:{port}"
        assert await admin(f"modify c1 add {aliased}") == [
            "ERROR: cluster 'c1': rtpproxy 'm3': <address>: "
            f"'localhost:{port}' is already the socket ({proxies[0].address}) of rtpproxy 'm0'"
        ]
        listing = "\n".join(await admin.ok("ls c1"))
        assert "name = m2" not in listing and "name = m3" not in listing
        await still_serving(service, admin, listen, proxies, "after-duplicates")


async def test_timers_far_outside_reason_are_refused(
    rtpproxy: MemberFactory, tmp_path: Path
) -> None:
    proxy = rtpproxy()
    config = Config(clusters=[cluster_config([proxy], [f"udp:127.0.0.1:{free_port()}"])])
    async with live_service(tmp_path, config) as (service, admin):
        config_path = Path(service.config_path)
        text = config_path.read_text()
        config_path.write_text(text.replace("<heartbeat_interval>0.2", "<heartbeat_interval>1e-9"))
        assert await admin("reload") == [
            "ERROR: reload failed, nothing changed: cluster 'c1': <heartbeat_interval>: "
            "must be a number of seconds from 0.1 to 60, got '1e-9'"
        ]
        assert service.running["c1"].config.heartbeat_interval == 0.2
        free = f"udp:127.0.0.1:{free_port()}"
        assert await admin(f"create c2 address={free},heartbeat_interval=1e-9") == [
            "ERROR: cluster 'c2': <heartbeat_interval>: must be a number of seconds "
            "from 0.1 to 60, got '1e-9'"
        ]
        assert await admin(f"create c2 address={free},member_timeout=3600") == [
            "ERROR: cluster 'c2': <member_timeout>: must be a number of seconds "
            "from 0.05 to 10, got '3600'"
        ]
        assert await admin("modify c1 delete m0 timeout=1e9") == [
            "ERROR: delete: bad timeout: must be a number of seconds from 0 to 86400, got '1e9'"
        ]
        assert "status = ACTIVE" in "\n".join(await admin.ok("ls c1"))
        assert [line for line in await admin.ok("ls") if "name =" in line] == ["    name = c1"]


async def test_an_unresolvable_member_says_why_once(
    rtpproxy: MemberFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    proxy = rtpproxy()
    cluster = cluster_config([proxy], [f"udp:127.0.0.1:{free_port()}"])
    bad = member_config("bad4", proxy, address=f"{UNRESOLVABLE}:22222")
    cluster = cluster.model_copy(update={"members": [*cluster.members, bad]})
    reason = os_reason(UNRESOLVABLE)
    async with live_service(tmp_path, Config(clusters=[cluster]), online=1) as (service, admin):
        member = service.running["c1"].members["bad4"]
        clients = {id(member.client)}
        with trio.fail_after(10):  # several attempts: each failure makes a fresh client
            while len(clients) < 4:
                await trio.sleep(0.02)
                clients.add(id(member.client))
        warnings = [r.getMessage() for r in caplog.records if "member bad4" in r.getMessage()]
        assert warnings == [f"c1: member bad4 (udp:{UNRESOLVABLE}:22222) failed: {reason}"]

        # at run time the same address is refused before anything changes
        fields = f"name=bad5,protocol=udp,address={UNRESOLVABLE}:22222"
        assert await admin(f"modify c1 add {fields}") == [
            f"ERROR: cluster 'c1': rtpproxy 'bad5': <address>: "
            f"cannot resolve '{UNRESOLVABLE}': {reason}"
        ]
    assert not [r for r in caplog.records if GROUP_TEXT in r.getMessage()]


async def test_a_new_cluster_whose_relay_port_is_busy_is_refused(
    rtpproxy: MemberFactory, tmp_path: Path
) -> None:
    proxy = rtpproxy()
    listen = [f"udp:127.0.0.1:{free_port()}"]
    config = Config(clusters=[cluster_config([proxy], listen)])
    async with live_service(tmp_path, config) as (service, admin):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen(1)
            port = holder.getsockname()[1]
            relay = DisconnectNotify(
                inbound_address=f"127.0.0.1:{port}", dest_socket_prefix=str(tmp_path) + "/"
            )
            c2 = cluster_config([], [f"udp:127.0.0.1:{free_port()}"], name="c2")
            c2 = c2.model_copy(update={"disconnect_notify": relay})
            save_config(Config(clusters=[*config.clusters, c2]), Path(service.config_path))
            refusal = (
                "ERROR: reload failed, nothing changed: c2: disconnect_notify: "
                f"cannot listen on tcp:127.0.0.1:{port}: Address already in use"
            )
            assert await admin("reload --dry-run") == [refusal]
            assert await admin("reload") == [refusal]
        assert [line for line in await admin.ok("ls") if "name =" in line] == ["    name = c1"]
        await still_serving(service, admin, listen, [proxy], "after-refused-relay")


async def test_a_member_that_hangs_up_says_why_once(
    rtpproxy: MemberFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    path = tmp_path / "hangs-up.sock"
    accepted = 0
    probed_thrice = trio.Event()

    async def hang_up_on_everyone(listener: trio.socket.SocketType) -> None:
        nonlocal accepted
        while True:
            connection, _ = await listener.accept()
            connection.close()  # no reply: the member's probe fails on each of them
            accepted += 1
            if accepted == 3:
                probed_thrice.set()

    proxy = rtpproxy()
    cluster = cluster_config([proxy], [f"udp:127.0.0.1:{free_port()}"])
    hangs_up = member_config("m9", proxy, protocol="unix", address=str(path))
    cluster = cluster.model_copy(update={"members": [*cluster.members, hangs_up]})
    with trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        await listener.bind(str(path))
        listener.listen(8)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(hang_up_on_everyone, listener)
            async with live_service(tmp_path, Config(clusters=[cluster]), online=1):
                with trio.fail_after(10):
                    await probed_thrice.wait()
            nursery.cancel_scope.cancel()
    warnings = [r.getMessage() for r in caplog.records if "member m9" in r.getMessage()]
    assert warnings == [f"c1: member m9: cannot serve: unix:{path}: closed without a reply"]
