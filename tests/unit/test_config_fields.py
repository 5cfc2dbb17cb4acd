"""Members and clusters built from admin ``key=value`` fields, and the models themselves."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from rtpcluster.config import (
    CapacityLimit,
    ClusterConfig,
    Config,
    ConfigError,
    MemberConfig,
    MemberProtocol,
    MemberStatus,
    cluster_from_fields,
    member_from_fields,
)
from rtpcluster.transport.endpoint import Endpoint, Kind


def test_member_from_fields_normalises_like_the_xml() -> None:
    member = member_from_fields(
        {
            "name": "rp1",
            "protocol": "UDP6",
            "address": "[::1]:5000",
            "weight": " 300 ",
            "capacity": "120",
            "status": "suspended",
            "wan_address": "2001:db8::1",
            "lan_address": "",
        },
        cluster="c1",
    )
    assert member == MemberConfig(
        name="rp1",
        protocol=MemberProtocol.UDP6,
        address=Endpoint(Kind.UDP6, "::1", 5000),
        weight=300,
        capacity=120,
        status=MemberStatus.SUSPENDED,
        wan_address="2001:db8::1",
    )


def test_member_status_defaults_to_active() -> None:
    member = member_from_fields({"name": "a", "protocol": "unix", "address": "/run/rtpp.sock"})
    assert member.status is MemberStatus.ACTIVE
    assert member.address == Endpoint(Kind.UNIX, path="/run/rtpp.sock")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"name": "rp2", "protocol": "udp", "address": "1.2.3.4", "weight": "0"},
            "cluster 'c1', rtpproxy 'rp2': <weight>: must be > 0, got '0'",
        ),
        (
            {"name": "rp2", "protocol": "udp", "address": "1.2.3.4", "speed": "1"},
            "cluster 'c1', rtpproxy 'rp2': unknown key 'speed' (known: name, protocol, "
            "address, weight, capacity, status, wan_address, lan_address, cmd_out_address, "
            "rtp_port_min, rtp_port_max, backup)",
        ),
        (
            {"protocol": "udp", "address": "1.2.3.4"},
            "cluster 'c1', new rtpproxy: <name>: missing required element",
        ),
        (
            {"name": "rp2", "address": "1.2.3.4"},
            "cluster 'c1', rtpproxy 'rp2': <protocol>: missing required element",
        ),
        (
            {"name": "e", "protocol": "embedded", "address": "127.0.0.1:22301"},
            "cluster 'c1', rtpproxy 'e': <address>: an embedded RTPproxy's address needs its "
            "kind, e.g. udp:127.0.0.1:22301, got '127.0.0.1:22301'",
        ),
        (
            {
                "name": "e",
                "protocol": "embedded",
                "address": "udp:127.0.0.1:22301",
                "rtp_port_min": "2000",
                "rtp_port_max": "1000",
            },
            "cluster 'c1', rtpproxy 'e': <rtp_port_min>: must not be above <rtp_port_max> "
            "1000, got 2000",
        ),
        (
            {"name": "e", "protocol": "embedded", "address": "udp:1.2.3.4:1", "rtp_port_max": "0"},
            "cluster 'c1', rtpproxy 'e': <rtp_port_max>: must be a port number 1..65535, got '0'",
        ),
        (
            {"name": "a", "protocol": "tcp6", "address": "tcp:1.2.3.4:5"},
            "cluster 'c1', rtpproxy 'a': <address>: address 'tcp:1.2.3.4:5' does not match "
            "protocol tcp6",
        ),
    ],
)
def test_member_from_fields_errors(fields: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        member_from_fields(fields, cluster="c1")
    assert str(caught.value) == message


def test_cluster_from_fields_with_a_full_endpoint() -> None:
    cluster = cluster_from_fields(
        "c2", {"address": "udp:127.0.0.1:22222", "capacity_limit": "Hard", "member_timeout": "2"}
    )
    assert cluster == ClusterConfig(
        name="c2",
        listen=[Endpoint(Kind.UDP, "127.0.0.1", 22222)],
        capacity_limit=CapacityLimit.HARD,
        member_timeout=2.0,
    )


def test_cluster_from_fields_with_protocol_and_address() -> None:
    cluster = cluster_from_fields("c3", {"protocol": "cunix", "address": "/run/c3.sock"})
    assert cluster.listen == [Endpoint(Kind.CUNIX, path="/run/c3.sock")]
    assert cluster.members == []


@pytest.mark.parametrize(
    ("name", "fields", "message"),
    [
        ("c", {}, "cluster 'c': no control socket: give <protocol> and <address>, or a <listen>"),
        (
            "c",
            {"address": "udp:1.2.3.4", "port": "1"},
            "cluster 'c': unknown key 'port' (known: protocol, address, capacity_limit, "
            "heartbeat_interval, offline_probe_interval, member_timeout, new_call_budget, "
            "session_idle_timeout, slow_start, flap_window, hold_down, hold_down_max, rise, "
            "fall, flap_limit)",
        ),
        (
            "c",
            {"protocol": "udp"},
            "cluster 'c': <address>: missing required element (given <protocol>)",
        ),
        (
            "c",
            {"address": "udp:1.2.3.4", "capacity_limit": "firm"},
            "cluster 'c': <capacity_limit>: must be one of soft, hard, got 'firm'",
        ),
        (
            "c",
            {"address": "udp:1.2.3.4", "session_idle_timeout": "inf"},
            "cluster 'c': <session_idle_timeout>: must be a number of seconds from 60 to "
            "86400, got 'inf'",
        ),
        ("", {"address": "udp:1.2.3.4"}, "cluster '': <name>: must not be empty"),
    ],
)
def test_cluster_from_fields_errors(name: str, fields: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        cluster_from_fields(name, fields)
    assert str(caught.value) == message


def test_models_are_frozen_and_copied_with_changes() -> None:
    member = member_from_fields({"name": "a", "protocol": "udp", "address": "1.2.3.4:5"})
    with pytest.raises(ValidationError):
        member.weight = 5  # type: ignore[misc]
    paused = member.model_copy(update={"status": MemberStatus.SUSPENDED})
    assert (member.status, paused.status) == (MemberStatus.ACTIVE, MemberStatus.SUSPENDED)


def test_model_dump_validates_back_to_an_equal_model() -> None:
    cluster = cluster_from_fields("c", {"address": "tcp6:[::1]:7000"})
    member = member_from_fields(
        {"name": "e", "protocol": "embedded", "address": "unix:/run/e.sock", "rtp_port_min": "9"}
    )
    config = Config(clusters=[cluster.model_copy(update={"members": [member]})])
    assert Config.model_validate(config.model_dump()) == config
    assert Config.model_validate_json(config.model_dump_json()) == config


def test_models_built_in_code_get_the_same_checks() -> None:
    with pytest.raises(ValidationError, match="must be > 0"):
        MemberConfig(
            name="a",
            protocol=MemberProtocol.UDP,
            address=Endpoint(Kind.UDP, "1.2.3.4", 5),
            capacity=0,
        )
    with pytest.raises(ValidationError, match="does not match protocol unix"):
        MemberConfig(name="a", protocol=MemberProtocol.UNIX, address=Endpoint(Kind.UDP, "1.2.3.4"))
