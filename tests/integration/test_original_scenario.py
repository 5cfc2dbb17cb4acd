"""The original RTP Cluster's own scenario, ported; and reloads under load.

Three members (unix, udp, udp6) plus a fourth that is not running; a cluster on udp.
Calls are created and deleted through the cluster, stats are summed, the file is edited
to suspend a member and reloaded, members are paused and deleted, one dies and comes
back, and a last reload brings the deleted members back.
"""

from __future__ import annotations

from pathlib import Path

import trio

from rtpcluster.config import Config, MemberStatus, save_config
from tests.conftest import MemberFactory
from tests.integration.harness import cluster_config, member_config, owner_of
from tests.integration.test_admin_live import live_service
from testsupport import RtpProxy, UdpControlClient, free_port

WAN = "192.0.2.10"


async def test_original_scenario(rtpproxy: MemberFactory, tmp_path: Path) -> None:
    unix, udp, udp6 = rtpproxy("unix"), rtpproxy("udp"), rtpproxy("udp6")
    absent = RtpProxy(control=f"udp:127.0.0.1:{free_port()}", port_min=1, port_max=2)
    proxies = [unix, udp, udp6]
    members = [
        member_config("RTPPROXY0", unix, wan_address=WAN, lan_address="127.0.0.1"),
        member_config("RTPPROXY1", udp, wan_address=WAN, lan_address="127.0.0.1"),
        member_config("RTPPROXY2", udp6, wan_address=WAN),
        member_config("RTPPROXY3", absent),
    ]
    listen = f"udp:127.0.0.1:{free_port()}"
    config = Config(clusters=[cluster_config([], [listen], name="basic", members=members)])
    async with live_service(tmp_path, config, online=3) as (service, admin):
        listing = "\n".join(await admin.ok("ls"))
        assert "active members = 3" in listing
        assert "inactive members = 1" in listing

        client = UdpControlClient(listen)
        for n in range(4):
            offer = await client.command(f"U call{n} 127.0.0.1 {4000 + n} from{n}")
            assert offer.split()[1:] == [WAN]
            answer = await client.command(f"L call{n} 127.0.0.1 {5000 + n} from{n} to{n}")
            assert answer.split()[1:] == [WAN]
        created = await client.command("G nsess_created")
        assert int(created) == 4
        for n in range(4):
            assert await client.command(f"D call{n} from{n} to{n}") == "0\n"

        # the file says RTPPROXY1 is suspended; reload applies it
        edited = [
            m.model_copy(update={"status": MemberStatus.SUSPENDED}) if m.name == "RTPPROXY1" else m
            for m in members
        ]
        config_path = Path(service.config_path)
        save_config(
            Config(clusters=[config.clusters[0].model_copy(update={"members": edited})]),
            config_path,
        )
        assert (await admin.ok("reload"))[-1] == "Loaded 1 clusters and 4 RTP proxies"
        assert "status = SUSPENDED" in await admin.until(
            "ls basic", lambda t: "status = SUSPENDED" in t
        )
        await admin.ok("modify basic pause RTPPROXY2")
        for n in range(10):
            offer = await client.command(f"U only0-{n} 127.0.0.1 4000 f")
            port = int(offer.split()[0])
            assert unix.owns_port(port), "only the unix member is still ACTIVE"

        await admin.ok("modify basic delete RTPPROXY3")  # offline: removed at once
        await admin.ok("modify basic resume RTPPROXY2")
        await admin.ok("modify basic delete RTPPROXY2")  # no calls on it: drains quickly
        text = await admin.until(
            "ls basic", lambda t: "RTPPROXY2" not in t and "RTPPROXY3" not in t
        )
        assert "RTPPROXY0" in text

        # a member whose RTPproxy exits goes offline; started again, it is back
        udp_port = udp.address.rsplit(":", 1)[1]
        udp.kill()
        await admin.until("ls basic", lambda t: "state = offline" in t)
        revived = RtpProxy(
            control=f"udp:127.0.0.1:{udp_port}", port_min=udp.port_min, port_max=udp.port_max
        )
        revived.start(tmp_path)
        try:
            await admin.until("ls basic", lambda t: "state = offline" not in t)
            # the last reload of the original file brings the deleted members back
            save_config(config, config_path)
            await admin.ok("reload")
            text = await admin.until("ls basic", lambda t: "RTPPROXY2" in t and "RTPPROXY3" in t)
            assert text.count("status = ACTIVE") == 4
        finally:
            revived.stop()
        client.close()
    del proxies


async def test_reload_under_load_loses_no_reply(rtpproxy: MemberFactory, tmp_path: Path) -> None:
    proxies = [rtpproxy(), rtpproxy(), rtpproxy()]
    listen = f"udp:127.0.0.1:{free_port()}"
    config = Config(clusters=[cluster_config(proxies[:2], [listen])])
    failures: list[str] = []
    answered = 0
    stop = trio.Event()

    async def caller(index: int) -> None:
        nonlocal answered
        client = UdpControlClient(listen)
        n = 0
        try:
            while not stop.is_set() and n < 400:
                call = f"rl{index}-{n}"
                offer = await client.command(f"U {call} 127.0.0.1 4000 f", timeout=3)
                owner = owner_of(offer, proxies)
                for command in (f"L {call} 127.0.0.1 4002 f t", f"D {call} f t"):
                    reply = await client.command(command, timeout=3)
                    if command[0] == "L" and owner_of(reply, proxies) is not owner:
                        failures.append(f"{command}: {reply!r}")
                    if command[0] == "D" and reply != "0\n":
                        failures.append(f"{command}: {reply!r}")
                answered += 3
                n += 1
        finally:
            client.close()

    async with live_service(tmp_path, config) as (service, admin):
        config_path = Path(service.config_path)
        cluster = config.clusters[0]
        async with trio.open_nursery() as nursery:
            for index in range(6):
                nursery.start_soon(caller, index)
            # add a member, change a weight, then remove the first member, while calls run
            added = cluster.model_copy(
                update={
                    "members": [
                        cluster.members[0],
                        cluster.members[1].model_copy(update={"weight": 300}),
                        member_config("m2", proxies[2]),
                    ]
                }
            )
            save_config(Config(clusters=[added]), config_path)
            await admin.ok("reload")
            removed = added.model_copy(update={"members": added.members[1:]})
            save_config(Config(clusters=[removed]), config_path)
            await admin.ok("reload")
            await admin.until("ls c1", lambda t: "name = m0" not in t)
            stop.set()
    assert failures == []
    assert answered > 0
