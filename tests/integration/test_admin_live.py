"""Every admin command over the real admin socket of a running service, real RTPproxies."""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from rtpcluster.config import Config, save_config
from rtpcluster.service import ServeOptions, Service, run_service
from tests.conftest import MemberFactory
from tests.integration.harness import cluster_config, member_config, owner_of, wait_online
from testsupport import RtpProxy, UdpControlClient, free_port, run_rtpcluster


class Admin:
    """The original client's way: ``<command>\\nquit\\n``, read until the server closes."""

    def __init__(self, path: str) -> None:
        self.path = path

    async def __call__(self, line: str) -> list[str]:
        with trio.fail_after(10):
            stream = await trio.open_unix_socket(self.path)
            async with stream:
                await stream.send_all(f"{line}\nquit\n".encode())
                chunks = []
                while data := await stream.receive_some(65536):
                    chunks.append(data)
        return b"".join(chunks).decode().splitlines()

    async def ok(self, line: str) -> list[str]:
        lines = await self(line)
        assert lines[-1] == "OK", lines
        return lines[:-1]

    async def until(self, line: str, condition: Callable[[str], bool]) -> str:
        """Repeat ``line`` until its reply text satisfies ``condition`` (bounded)."""
        with trio.fail_after(10):
            while not condition(text := "\n".join(await self(line))):
                await trio.sleep(0.05)
        return text


@asynccontextmanager
async def live_service(
    tmp_path: Path, config: Config, online: int | None = None
) -> AsyncIterator[tuple[Service, Admin]]:
    config_path = tmp_path / "rtp_cluster.xml"
    save_config(config, config_path)
    socket_path = str(tmp_path / "admin.sock")
    options = ServeOptions(config_path=str(config_path), admin_socket=socket_path, stop_grace=0.5)
    async with trio.open_nursery() as nursery:
        service: Service = await nursery.start(run_service, config, options)
        for cluster in config.clusters:
            expected = len(cluster.members) if online is None else online
            await wait_online(service, cluster.name, expected)
        try:
            yield service, Admin(socket_path)
        finally:
            service.stop()


def member_fields(name: str, proxy: RtpProxy) -> str:
    """A ``modify add`` list; the same weight as the harness members, for an even spread."""
    return f"name={name},protocol={proxy.kind},address={proxy.address},capacity=4000,weight=100"


async def test_ls_in_every_form(rtpproxy: MemberFactory, tmp_path: Path) -> None:
    proxies = [rtpproxy(), rtpproxy("unix")]
    listen = f"udp:127.0.0.1:{free_port()}"
    config = Config(clusters=[cluster_config(proxies, [listen], name="Supercluster#1")])
    async with live_service(tmp_path, config) as (_, admin):
        assert await admin.ok("ls") == [
            "Cluster: #0",
            "    name = Supercluster#1",
            f"    address = {listen}",
            "    active members = 2",
            "    inactive members = 0",
            "    online members = 2 (2 active, 0 suspended, 0 draining)",
            "    offline members = 0",
            "Session store: memory (not shared)",
        ]
        text = await admin.until("ls Supercluster#1", lambda t: "delay = n/a" not in t)
        lines = text.splitlines()
        assert lines[0] == "Active members of the cluster #0:"
        assert lines[1:5] == [
            "    RTPproxy: #0",
            "        name = m0",
            f"        address = {proxies[0].address}",
            "        protocol = udp",
        ]
        assert f"        address = {proxies[1].address}" in lines
        assert "        protocol = unix" in lines
        assert lines.count("        state = online") == 2
        assert lines.count("        status = ACTIVE") == 2
        assert lines[-2:] == ["Inactive members of the cluster #0:", "OK"]
        assert all(line.endswith(" sec") for line in lines if "average rtpc delay" in line)

        [document] = [json.loads("\n".join(await admin.ok("ls --json")))]
        assert [m["name"] for m in document["clusters"][0]["members"]] == ["m0", "m1"]
        assert document["session_store"]["url"] == "memory"
        assert document["session_store"]["shared"] is False
        single = json.loads("\n".join(await admin.ok("LS Supercluster#1 --JSON")))
        assert single["addresses"] == [listen]
        assert single["members"][0]["online"] is True
        # the member state machine's state, beside the status and online flag of old
        assert [(m["state"], m["status"]) for m in single["members"]] == [("online", "ACTIVE")] * 2


async def test_errors_and_session_commands(rtpproxy: MemberFactory, tmp_path: Path) -> None:
    proxy = rtpproxy()
    config = Config(clusters=[cluster_config([proxy], [f"udp:127.0.0.1:{free_port()}"])])
    async with live_service(tmp_path, config) as (_, admin):
        assert await admin("ls nope") == ["ERROR: nope: cluster not found"]
        assert await admin(f"modify nope add {member_fields('x', proxy)}") == [
            "ERROR: nope: cluster not found"
        ]
        assert await admin(f"modify c1 add {member_fields('m0', proxy)}") == [
            "ERROR: m0: RTPproxy already exists"
        ]
        assert await admin("modify c1 delete ghost") == ["ERROR: ghost: RTPproxy not found"]
        assert await admin("modify c1 pause ghost") == ["ERROR: ghost: RTPproxy not found"]
        assert await admin("modify c1 frob m0") == ['ERROR: unsupported action: "frob"']
        assert await admin("modify c1 add name=x,protocol=udp") == [
            "ERROR: cluster 'c1', rtpproxy 'x': <address>: missing required element"
        ]
        assert await admin("destroy nope") == ["ERROR: nope: cluster not found"]
        assert await admin("bogus") == ["ERROR: unknown command"]
        help_lines = await admin.ok("help")
        assert "modify <cluster> delete <member> [timeout=VALUE]" in help_lines
        assert await admin("quit") == []
        assert (await admin("ls"))[-1] == "OK"  # still serving


async def test_add_suspend_resume_steer_new_calls(rtpproxy: MemberFactory, tmp_path: Path) -> None:
    first, second = rtpproxy(), rtpproxy("cunix")
    listen = f"udp:127.0.0.1:{free_port()}"
    config = Config(clusters=[cluster_config([first], [listen])])
    async with live_service(tmp_path, config) as (service, admin):
        assert await admin.ok(f"modify c1 add {member_fields('m1', second)}") == []
        await wait_online(service, "c1", 2)
        assert "active members = 2" in "\n".join(await admin.ok("ls"))

        assert await admin.ok("modify c1 suspend m0") == []
        text = "\n".join(await admin.ok("ls"))
        assert "online members = 2 (1 active, 1 suspended, 0 draining)" in text
        client = UdpControlClient(listen)
        for n in range(6):
            offer = await client.command(f"U s{n} 127.0.0.1 4000 f")
            assert owner_of(offer, [first, second]) is second

        assert await admin.ok("MODIFY c1 RESUME m0") == []
        owners = set()
        for n in range(40):  # equal weights: one member getting all 40 is ~1e-12 likely
            offer = await client.command(f"U r{n} 127.0.0.1 4000 f")
            owners.add(owner_of(offer, [first, second]).control)
        assert owners == {first.control, second.control}
        client.close()


async def test_drain_waits_for_live_sessions(rtpproxy: MemberFactory, tmp_path: Path) -> None:
    proxies = [rtpproxy(), rtpproxy()]
    listen = f"udp:127.0.0.1:{free_port()}"
    config = Config(clusters=[cluster_config(proxies, [listen])])
    async with live_service(tmp_path, config) as (_, admin):
        client = UdpControlClient(listen)
        offer = await client.command("U live 127.0.0.1 4000 ft")
        draining = owner_of(offer, proxies)
        name = f"m{proxies.index(draining)}"
        other = proxies[1 - proxies.index(draining)]

        assert await admin.ok(f"modify c1 delete {name}") == []
        text = "\n".join(await admin.ok("ls c1"))
        assert "status = DRAINING" in text
        assert "online members = 2 (1 active, 0 suspended, 1 draining)" in "\n".join(
            await admin.ok("ls")
        )
        # the live call stays where it is; new calls go elsewhere
        answer = await client.command("L live 127.0.0.1 4002 ft tt")
        assert owner_of(answer, proxies) is draining
        for n in range(5):
            assert owner_of(await client.command(f"U n{n} 127.0.0.1 4000 f"), proxies) is other
        assert f"name = {name}" in "\n".join(await admin.ok("ls c1"))

        assert await client.command("D live ft tt") == "0\n"
        await admin.until("ls c1", lambda t: f"name = {name}" not in t)

        # with a timeout, a member with live calls goes anyway
        survivor = f"m{proxies.index(other)}"
        assert await admin.ok(f"modify c1 remove {survivor} timeout=0.3") == []
        text = "\n".join(await admin.ok("ls c1"))
        assert "drain deadline = " in text
        await admin.until("ls", lambda t: "active members = 0" in t)
        client.close()


async def test_create_and_destroy_a_cluster(rtpproxy: MemberFactory, tmp_path: Path) -> None:
    proxy = rtpproxy()
    first = f"udp:127.0.0.1:{free_port()}"
    config = Config(clusters=[cluster_config([proxy], [first])])
    async with live_service(tmp_path, config) as (service, admin):
        second = f"udp:127.0.0.1:{free_port()}"
        assert await admin.ok(f"create c2 address={second},capacity_limit=hard") == []
        assert await admin(f"create c2 address={second}") == ["ERROR: c2: cluster already exists"]
        assert await admin(f"create c3 address={first}") == [
            f"ERROR: c3: {first} is in use by cluster 'c1'"
        ]
        [bad] = await admin("create c4 address=udp:127.0.0.1:0")
        assert bad.startswith("ERROR: cluster 'c4': <address>")
        text = "\n".join(await admin.ok("ls"))
        assert f"Cluster: #1\n    name = c2\n    address = {second}" in text

        assert await admin.ok(f"modify c2 add {member_fields('n0', proxy)}") == []
        await wait_online(service, "c2", 1)
        client = UdpControlClient(second)
        assert owner_of(await client.command("U c2call 127.0.0.1 4000 f"), [proxy]) is proxy

        # destroy drains: the cluster stays while its call lives
        assert await admin.ok("destroy c2") == []
        assert "status = DRAINING" in "\n".join(await admin.ok("ls c2"))
        assert await client.command("D c2call f") == "0\n"
        client.close()
        await admin.until("ls", lambda t: "name = c2" not in t)
        assert await admin("ls c2") == ["ERROR: c2: cluster not found"]


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return run_rtpcluster("serve", "--check", "-c", str(path))


async def test_reload_and_save_round_trip(rtpproxy: MemberFactory, tmp_path: Path) -> None:
    proxies = [rtpproxy(), rtpproxy(), rtpproxy()]
    listen = f"udp:127.0.0.1:{free_port()}"
    config = Config(clusters=[cluster_config(proxies[:2], [listen])])
    async with live_service(tmp_path, config) as (service, admin):
        config_path = Path(service.config_path)
        cluster = config.clusters[0]
        changed = cluster.model_copy(
            update={
                "members": [
                    cluster.members[0].model_copy(update={"weight": 50}),
                    member_config("m2", proxies[2]),
                ]
            }
        )
        save_config(Config(clusters=[changed]), config_path)

        plan = await admin.ok("reload --dry-run")
        assert plan == [
            "cluster c1: member m0: weight 100 -> 50",
            "cluster c1: member m1: remove (drain)",
            "cluster c1: member m2: add",
            "Would load 1 clusters and 2 RTP proxies (dry run, nothing changed)",
        ]
        assert "name = m2" not in "\n".join(await admin.ok("ls c1"))

        assert await admin.ok("reload") == [*plan[:3], "Loaded 1 clusters and 2 RTP proxies"]
        text = await admin.until("ls c1", lambda t: "name = m1" not in t and "name = m2" in t)
        assert "weight = 50" in text

        config_path.write_text("<rtp_cluster_config><rtp_cluster>")
        [failed] = await admin("reload")
        assert failed.startswith("ERROR: reload failed, nothing changed: ")
        assert "name = m2" in "\n".join(await admin.ok("ls c1"))

        # runtime change -> save -> --check -> reload finds nothing to do
        assert await admin.ok(f"modify c1 add {member_fields('m3', proxies[1])}") == []
        assert await admin.ok("save") == [f"Saved to {config_path}"]
        checked = check_config(config_path)
        assert checked.returncode == 0, checked.stderr
        assert "rtpproxy m3: udp" in checked.stdout
        assert await admin.ok("reload") == ["Loaded 1 clusters and 3 RTP proxies"]

        elsewhere = tmp_path / "copy.xml"
        assert await admin.ok(f"save {elsewhere}") == [f"Saved to {elsewhere}"]
        assert elsewhere.read_text() == config_path.read_text()
