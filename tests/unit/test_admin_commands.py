"""The admin commands against a hand-written fake of the service."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from rtpcluster.admin.commands import run_command
from rtpcluster.cluster.control import (
    ClusterInfo,
    ControlError,
    MemberInfo,
    ReloadPlan,
    StoreInfo,
)
from rtpcluster.config import (
    ClusterConfig,
    Config,
    MemberChanges,
    MemberConfig,
    load_config,
    parse_config,
)

CONFIG_XML = """<?xml version="1.0"?>
<rtp_cluster_config>
  <rtp_cluster>
    <name>Supercluster#1</name>
    <protocol>udp</protocol>
    <address>127.0.0.1:22222</address>
    <rtpproxy>
      <name>RTPPROXY1</name>
      <protocol>udp</protocol>
      <address>127.0.0.1:22223</address>
      <weight>100</weight>
      <capacity>2500</capacity>
      <status>ACTIVE</status>
    </rtpproxy>
  </rtp_cluster>
</rtp_cluster_config>
"""


def member(name: str, **changes: Any) -> MemberInfo:
    fields: dict[str, Any] = {
        "name": name,
        "protocol": "udp",
        "address": "127.0.0.1:22223",
        "weight": 100,
        "capacity": 4000,
        "status": "ACTIVE",
        "online": True,
        "active_sessions": 500,
        "utilisation": 0.125,
        "rtt": 0.000123,
        "tracked_calls": 7,
    }
    fields.update(changes)
    return MemberInfo(**fields)


def sample_clusters() -> list[ClusterInfo]:
    return [
        ClusterInfo(
            index=0,
            name="Supercluster#1",
            addresses=["udp:127.0.0.1:22222", "unix:/var/run/rtpproxy.sock"],
            capacity_limit="soft",
            members=[
                member("RTPPROXY1", wan_address="192.0.2.1", lan_address="10.0.0.1"),
                member("RTPPROXY2", status="SUSPENDED", rtt=None, utilisation=0.0),
                member(
                    "RTPPROXY3",
                    online=False,
                    status="DRAINING",
                    protocol="unix",
                    address="/var/run/rtpp3.sock",
                    drain_deadline=12.5,
                ),
            ],
        ),
        ClusterInfo(
            index=1, name="empty", addresses=["udp:127.0.0.1:22224"], capacity_limit="hard"
        ),
    ]


class FakeControl:
    """Records every call; ``fail`` makes the next mutating call raise it."""

    def __init__(self, config_path: str = "rtp_cluster.xml") -> None:
        self.infos = sample_clusters()
        self.calls: list[tuple[Any, ...]] = []
        self.fail: Exception | None = None
        self.plan = ReloadPlan(changes=["add member c1/rp3"], clusters=2, members=5)
        self.config: Config = parse_config(CONFIG_XML)
        self.store = MEMORY_STORE
        self._config_path = config_path

    def _record(self, *call: Any) -> None:
        self.calls.append(call)
        if self.fail is not None:
            raise self.fail

    def clusters(self) -> list[ClusterInfo]:
        return self.infos

    def cluster(self, name: str) -> ClusterInfo:
        for info in self.infos:
            if info.name == name:
                return info
        raise ControlError(f"{name}: cluster not found")

    async def add_member(self, cluster: str, member: MemberConfig) -> None:
        self._record("add_member", cluster, member)

    async def remove_member(self, cluster: str, member: str, timeout: float | None) -> None:
        self._record("remove_member", cluster, member, timeout)

    async def set_member(self, cluster: str, member: str, changes: MemberChanges) -> None:
        self._record("set_member", cluster, member, changes)

    async def suspend_member(self, cluster: str, member: str) -> None:
        self._record("suspend_member", cluster, member)

    async def resume_member(self, cluster: str, member: str) -> None:
        self._record("resume_member", cluster, member)

    async def create_cluster(self, cluster: ClusterConfig) -> None:
        self._record("create_cluster", cluster)

    async def destroy_cluster(self, name: str) -> None:
        self._record("destroy_cluster", name)

    async def reload(self, dry_run: bool = False) -> ReloadPlan:
        self._record("reload", dry_run)
        return self.plan

    def running_config(self) -> Config:
        return self.config

    def session_store(self) -> StoreInfo:
        return self.store

    @property
    def config_path(self) -> str:
        return self._config_path


MEMORY_STORE = StoreInfo(
    url="memory",
    shared=False,
    up=True,
    pending=0,
    writes_dropped=0,
    outages=0,
    reads_hit=0,
    reads_miss=0,
    reads_error=0,
    bind_delay_count=0,
    bind_delay_sum=0.0,
    bind_delay_max=0.0,
)


@pytest.fixture
def control() -> FakeControl:
    return FakeControl()


async def run(control: FakeControl, line: str) -> list[str]:
    return (await run_command(control, line)).render()


async def test_ls_keeps_the_original_lines_and_adds_the_newer_ones(control: FakeControl) -> None:
    assert await run(control, "ls") == [
        "Cluster: #0",
        "    name = Supercluster#1",
        "    address = udp:127.0.0.1:22222",
        "    address = unix:/var/run/rtpproxy.sock",
        "    active members = 2",
        "    inactive members = 1",
        "    online members = 2 (1 active, 1 suspended, 0 draining)",
        "    offline members = 1",
        "Cluster: #1",
        "    name = empty",
        "    address = udp:127.0.0.1:22224",
        "    active members = 0",
        "    inactive members = 0",
        "    online members = 0 (0 active, 0 suspended, 0 draining)",
        "    offline members = 0",
        "Session store: memory (not shared)",
        "OK",
    ]


async def test_ls_ends_with_the_state_of_a_shared_store(control: FakeControl) -> None:
    control.store = dataclasses.replace(
        MEMORY_STORE,
        url="redis://:***@127.0.0.1:6379/0",
        shared=True,
        up=False,
        pending=12,
        writes_dropped=3,
        outages=2,
        reads_hit=7,
        reads_miss=5,
        reads_error=1,
    )
    lines = await run(control, "ls")
    assert lines[-2:] == [
        "Session store: redis://:***@127.0.0.1:6379/0 (DOWN; 12 writes queued, 3 dropped;"
        " 2 outages; reads 7 hit, 5 miss, 1 error)",
        "OK",
    ]
    document = json.loads("\n".join((await run(control, "ls --json"))[:-1]))
    assert document["session_store"] == dataclasses.asdict(control.store)
    assert "Session store" not in "\n".join(await run(control, "ls Supercluster#1"))


async def test_ls_cluster_lists_online_then_offline_members(control: FakeControl) -> None:
    assert await run(control, "ls Supercluster#1") == [
        "Active members of the cluster #0:",
        "    RTPproxy: #0",
        "        name = RTPPROXY1",
        "        address = 127.0.0.1:22223",
        "        protocol = udp",
        "        wan_address = 192.0.2.1",
        "        lan_address = 10.0.0.1",
        "        weight = 100",
        "        capacity = 4000",
        "        state = online",
        "        active sessions = 500",
        "        capacity utilization = 12.50%",
        "        average rtpc delay = 0.000123 sec",
        "        status = ACTIVE",
        "        tracked calls = 7",
        "    RTPproxy: #1",
        "        name = RTPPROXY2",
        "        address = 127.0.0.1:22223",
        "        protocol = udp",
        "        weight = 100",
        "        capacity = 4000",
        "        state = online",
        "        active sessions = 500",
        "        capacity utilization = 0.00%",
        "        average rtpc delay = n/a",
        "        status = SUSPENDED",
        "        tracked calls = 7",
        "Inactive members of the cluster #0:",
        "    RTPproxy: #0",
        "        name = RTPPROXY3",
        "        address = /var/run/rtpp3.sock",
        "        protocol = unix",
        "        weight = 100",
        "        capacity = 4000",
        "        state = offline",
        "        active sessions = 500",
        "        capacity utilization = 12.50%",
        "        average rtpc delay = 0.000123 sec",
        "        status = DRAINING",
        "        tracked calls = 7",
        "        drain deadline = 12.5 sec",
        "OK",
    ]


async def test_ls_empty_cluster_has_both_headers(control: FakeControl) -> None:
    assert await run(control, "LS empty") == [
        "Active members of the cluster #1:",
        "Inactive members of the cluster #1:",
        "OK",
    ]


async def test_ls_unknown_cluster(control: FakeControl) -> None:
    assert await run(control, "ls nope") == ["ERROR: nope: cluster not found"]


async def test_ls_json_is_one_document_from_the_dataclasses(control: FakeControl) -> None:
    lines = await run(control, "ls --json")
    assert lines[-1] == "OK"
    document = json.loads("\n".join(lines[:-1]))
    assert document == {
        "clusters": [dataclasses.asdict(info) for info in control.infos],
        "session_store": dataclasses.asdict(MEMORY_STORE),
    }

    lines = await run(control, "ls Supercluster#1 --json")
    assert json.loads("\n".join(lines[:-1])) == dataclasses.asdict(control.infos[0])


async def test_modify_add_builds_the_member_from_the_fields(control: FakeControl) -> None:
    line = (
        "modify Supercluster#1 add name=another_proxy,protocol=udp,address=1.2.3.4:567,"
        "capacity=120,weight=300,status=suspended,wan_address=192.0.2.9"
    )
    assert await run(control, line) == ["OK"]
    [(call, cluster, added)] = control.calls
    assert (call, cluster) == ("add_member", "Supercluster#1")
    assert added.name == "another_proxy"
    assert added.address.address == "1.2.3.4:567"
    assert (added.capacity, added.weight, added.status.value) == (120, 300, "SUSPENDED")
    assert added.wan_address == "192.0.2.9"


async def test_modify_add_without_status_is_active(control: FakeControl) -> None:
    line = "modify Supercluster#1 add name=p,protocol=udp6,address=[::1]:5000,capacity=1,weight=1"
    assert await run(control, line) == ["OK"]
    added = control.calls[0][2]
    assert added.status.value == "ACTIVE"
    assert added.address.address == "[::1]:5000"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ("name=p,protocol=udp,address=1.2.3.4:5,weight=0", "<weight>"),
        ("name=p,protocol=bogus,address=1.2.3.4:5", "<protocol>"),
        ("name=p,protocol=udp,address=1.2.3.4:5,colour=red", "unknown key 'colour'"),
        ("name=p,name=q,protocol=udp,address=1.2.3.4:5", "field 'name' given twice"),
    ],
)
async def test_modify_add_bad_fields(control: FakeControl, fields: str, message: str) -> None:
    [line] = await run(control, f"modify Supercluster#1 add {fields}")
    assert line.startswith("ERROR: ")
    assert message in line
    assert control.calls == []


async def test_modify_add_to_an_unknown_cluster(control: FakeControl) -> None:
    line = "modify nope add name=p,protocol=udp,address=1.2.3.4:5"
    assert await run(control, line) == ["ERROR: nope: cluster not found"]


@pytest.mark.parametrize(
    ("line", "call"),
    [
        ("modify c delete rp1", ("remove_member", "c", "rp1", None)),
        ("modify c remove rp1 timeout=30", ("remove_member", "c", "rp1", 30.0)),
        ("MODIFY c DELETE rp1 TIMEOUT=1.5", ("remove_member", "c", "rp1", 1.5)),
        ("modify c suspend rp1", ("suspend_member", "c", "rp1")),
        ("modify c pause rp1", ("suspend_member", "c", "rp1")),
        ("modify c resume rp1", ("resume_member", "c", "rp1")),
        ("destroy c", ("destroy_cluster", "c")),
    ],
)
async def test_member_and_cluster_actions(
    control: FakeControl, line: str, call: tuple[Any, ...]
) -> None:
    assert await run(control, line) == ["OK"]
    assert control.calls == [call]


async def test_refusals_of_the_service_are_errors(control: FakeControl) -> None:
    control.fail = ControlError("rp9: RTPproxy not found")
    assert await run(control, "modify c delete rp9") == ["ERROR: rp9: RTPproxy not found"]


async def test_unsupported_action(control: FakeControl) -> None:
    assert await run(control, "modify c explode rp1") == ['ERROR: unsupported action: "explode"']


async def test_modify_without_action(control: FakeControl) -> None:
    [line] = await run(control, "modify c")
    assert line.startswith("ERROR: modify: missing <action>")


async def test_bad_timeout(control: FakeControl) -> None:
    [line] = await run(control, "modify c delete rp1 timeout=later")
    assert line.startswith("ERROR: delete: bad timeout")


async def test_create_builds_the_cluster(control: FakeControl) -> None:
    assert await run(control, "create c2 address=udp:127.0.0.1:23000,capacity_limit=hard") == ["OK"]
    [(call, cluster)] = control.calls
    assert call == "create_cluster"
    assert cluster.name == "c2"
    assert [str(endpoint) for endpoint in cluster.listen] == ["udp:127.0.0.1:23000"]
    assert cluster.capacity_limit.value == "hard"
    assert cluster.members == []


async def test_create_with_a_bad_address(control: FakeControl) -> None:
    [line] = await run(control, "create c2 address=udp:nowhere:99999")
    assert line.startswith("ERROR: cluster 'c2'")
    assert control.calls == []


async def test_reload_prints_the_plan_and_totals(control: FakeControl) -> None:
    assert await run(control, "reload") == [
        "add member c1/rp3",
        "Loaded 2 clusters and 5 RTP proxies",
        "OK",
    ]
    assert await run(control, "reload --dry-run") == [
        "add member c1/rp3",
        "Would load 2 clusters and 5 RTP proxies (dry run, nothing changed)",
        "OK",
    ]
    assert control.calls == [("reload", False), ("reload", True)]


async def test_save_writes_a_loadable_config(control: FakeControl, tmp_path: Path) -> None:
    control._config_path = str(tmp_path / "default.xml")
    assert await run(control, "save") == [f"Saved to {tmp_path / 'default.xml'}", "OK"]
    assert load_config(tmp_path / "default.xml") == control.config
    other = tmp_path / "other.xml"
    assert await run(control, f"save {other}") == [f"Saved to {other}", "OK"]
    assert load_config(other) == control.config


async def test_save_to_an_unwritable_place(control: FakeControl, tmp_path: Path) -> None:
    control._config_path = str(tmp_path / "default.xml")
    target = tmp_path / "missing-dir" / "x.xml"
    [line] = await run(control, f"save {target}")
    assert line.startswith("ERROR: ")
    assert str(target) in line and "No such file or directory" in line
    assert not target.exists()


async def test_help_lists_commands_and_modify_actions(control: FakeControl) -> None:
    lines = await run(control, "h")
    assert lines[-1] == "OK"
    text = "\n".join(lines)
    for usage in (
        "ls [<cluster>] [--json]",
        "modify <cluster> <action> [ARGS...]",
        "modify <cluster> add KEY=VALUE[,KEY=VALUE...]",
        "modify <cluster> set <member> KEY=VALUE[,KEY=VALUE...]",
        "modify <cluster> delete <member> [timeout=VALUE]",
        "modify <cluster> suspend <member>",
        "modify <cluster> resume <member>",
        "create <cluster> KEY=VALUE[,KEY=VALUE...]",
        "destroy <cluster>",
        "reload [--dry-run]",
        "save [<path>]",
        "help",
        "quit",
    ):
        assert usage in lines, usage
    assert "(also: remove)" in text and "(also: pause)" in text and "(also: q, exit)" in text


@pytest.mark.parametrize("word", ["quit", "q", "EXIT"])
async def test_quit_closes_without_a_reply(control: FakeControl, word: str) -> None:
    reply = await run_command(control, word)
    assert reply.close and reply.render() == []


async def test_unknown_command(control: FakeControl) -> None:
    assert await run(control, "frobnicate") == ["ERROR: unknown command"]


async def test_unexpected_failure_is_an_internal_error(control: FakeControl) -> None:
    control.fail = ZeroDivisionError("division by zero")
    assert await run(control, "destroy c") == [
        "ERROR: internal error: ZeroDivisionError: division by zero"
    ]


# --- modify set, backup, and what ls shows of balancing ---------------------------------


@pytest.mark.parametrize(
    ("fields", "changes"),
    [
        ("weight=300", MemberChanges(weight=300)),
        (
            "weight=50,capacity=1000,backup=yes",
            MemberChanges(weight=50, capacity=1000, backup=True),
        ),
        ("BACKUP=No", MemberChanges(backup=False)),
        ("capacity=7, weight=1", MemberChanges(capacity=7, weight=1)),
    ],
)
async def test_modify_set_changes_a_member(
    control: FakeControl, fields: str, changes: MemberChanges
) -> None:
    assert await run(control, f"modify Supercluster#1 set RTPPROXY1 {fields}") == ["OK"]
    assert control.calls == [("set_member", "Supercluster#1", "RTPPROXY1", changes)]


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (
            "set RTPPROXY1 weight=0",
            "cluster 'Supercluster#1', rtpproxy 'RTPPROXY1': <weight>: must be > 0, got '0'",
        ),
        (
            "set RTPPROXY1 backup=maybe",
            "cluster 'Supercluster#1', rtpproxy 'RTPPROXY1': <backup>: must be yes or no, "
            "got 'maybe'",
        ),
        (
            "set RTPPROXY1 capacity=lots",
            "cluster 'Supercluster#1', rtpproxy 'RTPPROXY1': <capacity>: must be an integer, "
            "got 'lots'",
        ),
        (
            "set RTPPROXY1 address=1.2.3.4:5",
            "cluster 'Supercluster#1', rtpproxy 'RTPPROXY1': 'address' cannot be set "
            "(settable: weight, capacity, backup)",
        ),
        ("set RTPPROXY1 weight=1,weight=2", "field 'weight' given twice"),
        ("set RTPPROXY1 weight", "set: unexpected argument: 'weight'"),
        (
            "set RTPPROXY1",
            "set: missing KEY=VALUE[,KEY=VALUE...]; usage: set <member> KEY=VALUE[,KEY=VALUE...]",
        ),
        ("set weight=5", "set: missing <member>; usage: set <member> KEY=VALUE[,KEY=VALUE...]"),
    ],
)
async def test_modify_set_refuses_bad_fields_in_one_line(
    control: FakeControl, line: str, error: str
) -> None:
    assert await run(control, f"modify Supercluster#1 {line}") == [f"ERROR: {error}"]
    assert control.calls == []


async def test_modify_set_on_an_unknown_cluster_or_member(control: FakeControl) -> None:
    assert await run(control, "modify nope set rp1 weight=1") == ["ERROR: nope: cluster not found"]
    control.fail = ControlError("rp9: RTPproxy not found")
    assert await run(control, "modify Supercluster#1 set rp9 weight=1") == [
        "ERROR: rp9: RTPproxy not found"
    ]


async def test_modify_add_takes_backup(control: FakeControl) -> None:
    line = "modify Supercluster#1 add name=b1,protocol=udp,address=1.2.3.4:9,backup=YES"
    assert await run(control, line) == ["OK"]
    added = control.calls[0][2]
    assert added.backup is True
    line = "modify Supercluster#1 add name=b2,protocol=udp,address=1.2.3.4:8,backup=sometimes"
    [error] = await run(control, line)
    assert error == (
        "ERROR: cluster 'Supercluster#1', rtpproxy 'b2': <backup>: must be yes or no, "
        "got 'sometimes'"
    )


async def test_ls_shows_backup_ramp_and_hold_down_only_when_set(control: FakeControl) -> None:
    control.infos[0].members = [
        member("ramping", effective_weight=37.25, slow_start_left=8.04),
        member("spare", backup=True, online=False, held_down_left=35.27),
    ]
    lines = await run(control, "ls Supercluster#1")
    assert lines[lines.index("        name = ramping") :][:8] == [
        "        name = ramping",
        "        address = 127.0.0.1:22223",
        "        protocol = udp",
        "        weight = 100",
        "        effective weight = 37.2 (slow start, 8.0 sec left)",
        "        capacity = 4000",
        "        state = online",
        "        active sessions = 500",
    ]
    assert lines[lines.index("        name = spare") :][3:8] == [
        "        weight = 100",
        "        capacity = 4000",
        "        backup = yes",
        "        state = offline",
        "        held down = 35.3 sec (flapping)",
    ]
    document = json.loads("\n".join((await run(control, "ls Supercluster#1 --json"))[:-1]))
    spare = document["members"][1]
    assert (spare["backup"], spare["held_down_left"], spare["effective_weight"]) == (
        True,
        35.27,
        None,
    )


async def test_reload_prints_the_warnings_of_the_new_config(control: FakeControl) -> None:
    control.plan.warnings = ["cluster 'c1': <member_timeout>: 2 s is above 0.9 s: ..."]
    assert await run(control, "reload") == [
        "add member c1/rp3",
        "warning: cluster 'c1': <member_timeout>: 2 s is above 0.9 s: ...",
        "Loaded 2 clusters and 5 RTP proxies",
        "OK",
    ]
