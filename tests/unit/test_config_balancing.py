"""The balancing elements: rise, fall, flap damping, slow start, backup, new-call budget."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from rtpcluster.cli.app import app
from rtpcluster.config import (
    ConfigError,
    MemberChanges,
    cluster_from_fields,
    config_warnings,
    dump_config,
    member_changes_from_fields,
    member_from_fields,
    parse_config,
    summary,
)
from rtpcluster.config.models import NEW_CALL_SHARE

MEMBER = "<rtpproxy><name>m</name><protocol>udp</protocol><address>1.2.3.4:5</address>{}</rtpproxy>"


def cluster_xml(elements: str = "", member: str = "") -> str:
    return (
        "<rtp_cluster_config><rtp_cluster><name>c</name><address>udp:127.0.0.1:22222</address>"
        f"{elements}{MEMBER.format(member)}</rtp_cluster></rtp_cluster_config>"
    )


def test_defaults_keep_todays_behaviour() -> None:
    [cluster] = parse_config(cluster_xml()).clusters
    assert (cluster.rise, cluster.fall, cluster.slow_start) == (2, 2, 0.0)
    assert (cluster.flap_limit, cluster.flap_window) == (5, 60.0)
    assert (cluster.hold_down, cluster.hold_down_max) == (10.0, 300.0)
    assert cluster.new_call_budget is None
    assert cluster.effective_new_call_budget == 0.5 * 0.6  # what the router waited before
    assert NEW_CALL_SHARE == 0.6
    assert cluster.members[0].backup is False


def test_every_element_is_read_and_written_back() -> None:
    text = cluster_xml(
        "<rise>3</rise><fall> 1 </fall><slow_start>45.5</slow_start><flap_limit>0</flap_limit>"
        "<flap_window>120</flap_window><hold_down>2</hold_down><hold_down_max>2</hold_down_max>"
        "<member_timeout>0.8</member_timeout><new_call_budget>0.4</new_call_budget>",
        "<backup>Yes</backup>",
    )
    config = parse_config(text)
    [cluster] = config.clusters
    assert (cluster.rise, cluster.fall, cluster.slow_start, cluster.flap_limit) == (3, 1, 45.5, 0)
    assert (cluster.flap_window, cluster.hold_down, cluster.hold_down_max) == (120.0, 2.0, 2.0)
    assert (cluster.new_call_budget, cluster.effective_new_call_budget) == (0.4, 0.4)
    assert cluster.members[0].backup is True
    dumped = dump_config(config)
    for element in (
        "<rise>3</rise>",
        "<fall>1</fall>",
        "<slow_start>45.5</slow_start>",
        "<flap_limit>0</flap_limit>",
        "<new_call_budget>0.4</new_call_budget>",
        "<backup>yes</backup>",
    ):
        assert element in dumped
    assert parse_config(dumped) == config


def test_backup_no_and_an_empty_budget_are_defaults() -> None:
    config = parse_config(cluster_xml("<new_call_budget></new_call_budget>", "<backup>NO</backup>"))
    assert config == parse_config(cluster_xml())
    assert "backup" not in dump_config(config)


@pytest.mark.parametrize(
    ("elements", "member", "message"),
    [
        ("<rise>0</rise>", "", "cluster 'c': <rise>: must be an integer from 1 to 10, got '0'"),
        ("<fall>11</fall>", "", "cluster 'c': <fall>: must be an integer from 1 to 10, got '11'"),
        ("<fall>2.5</fall>", "", "cluster 'c': <fall>: must be an integer, got '2.5'"),
        (
            "<flap_limit>101</flap_limit>",
            "",
            "cluster 'c': <flap_limit>: must be an integer from 0 to 100, got '101'",
        ),
        (
            "<slow_start>-1</slow_start>",
            "",
            "cluster 'c': <slow_start>: must be a number of seconds from 0 to 3600, got '-1'",
        ),
        (
            "<flap_window>0.5</flap_window>",
            "",
            "cluster 'c': <flap_window>: must be a number of seconds from 1 to 3600, got '0.5'",
        ),
        (
            "<hold_down>30</hold_down><hold_down_max>20</hold_down_max>",
            "",
            "cluster 'c': <hold_down_max>: must not be below <hold_down> 30, got 20",
        ),
        (
            "<new_call_budget>0.5</new_call_budget>",
            "",
            "cluster 'c': <new_call_budget>: must be below <member_timeout> 0.5, got 0.5",
        ),
        (
            "<member_timeout>0.2</member_timeout><new_call_budget>0.3</new_call_budget>",
            "",
            "cluster 'c': <new_call_budget>: must be below <member_timeout> 0.2, got 0.3",
        ),
        (
            "<new_call_budget>0.01</new_call_budget>",
            "",
            "cluster 'c': <new_call_budget>: must be a number of seconds from 0.05 to 10, "
            "got '0.01'",
        ),
        (
            "",
            "<backup>maybe</backup>",
            "cluster 'c', rtpproxy 'm': <backup>: must be yes or no, got 'maybe'",
        ),
        ("", "<backup/>", "cluster 'c', rtpproxy 'm': <backup>: must be yes or no, got ''"),
    ],
)
def test_a_bad_value_is_one_line_naming_element_and_value(
    elements: str, member: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(cluster_xml(elements, member))
    assert str(caught.value) == message


def test_admin_create_and_add_take_the_same_elements() -> None:
    cluster = cluster_from_fields(
        "c", {"address": "udp:127.0.0.1:1", "rise": "4", "slow_start": "10", "fall": "1"}
    )
    assert (cluster.rise, cluster.fall, cluster.slow_start) == (4, 1, 10.0)
    with pytest.raises(ConfigError) as caught:
        cluster_from_fields("c", {"address": "udp:127.0.0.1:1", "new_call_budget": "0.6"})
    assert str(caught.value) == (
        "cluster 'c': <new_call_budget>: must be below <member_timeout> 0.5, got 0.6"
    )
    member = member_from_fields(
        {"name": "b", "protocol": "udp", "address": "1.2.3.4", "backup": "yes"}
    )
    assert member.backup is True


def test_member_changes_apply_and_refuse() -> None:
    member = member_from_fields({"name": "m", "protocol": "udp", "address": "1.2.3.4:5"})
    changes = member_changes_from_fields({"weight": "7", "backup": "yes"}, "c", "m")
    assert changes == MemberChanges(weight=7, backup=True)
    assert changes.given() == {"weight": 7, "backup": True}
    changed = changes.apply(member)
    assert (changed.weight, changed.capacity, changed.backup) == (7, 4000, True)
    assert changed.address == member.address and changed.name == member.name
    assert MemberChanges(weight=100).apply(member) is member  # nothing differs
    with pytest.raises(ConfigError) as caught:
        member_changes_from_fields({}, "c", "m")
    assert str(caught.value) == (
        "cluster 'c', rtpproxy 'm': nothing to change: give weight, capacity or backup"
    )


# --- warnings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("elements", "warned"),
    [
        ("", []),
        ("<member_timeout>0.9</member_timeout>", []),  # 0.9 itself is fine, budget 0.54
        ("<member_timeout>0.95</member_timeout>", ["<member_timeout>: 0.95 s"]),
        (
            "<member_timeout>2</member_timeout>",
            ["<member_timeout>: 2 s", "new call budget 1.2 s (60% of <member_timeout>)"],
        ),
        (
            "<member_timeout>2</member_timeout><new_call_budget>0.5</new_call_budget>",
            ["<member_timeout>: 2 s"],
        ),
        (
            "<member_timeout>2</member_timeout><new_call_budget>0.95</new_call_budget>",
            ["<member_timeout>: 2 s", "<new_call_budget>: 0.95 s"],
        ),
    ],
)
def test_timings_close_to_the_sip_retransmit_are_warned(elements: str, warned: list[str]) -> None:
    warnings = config_warnings(parse_config(cluster_xml(elements)))
    assert len(warnings) == len(warned)
    for line, start in zip(warnings, warned, strict=True):
        assert line.startswith(f"cluster 'c': {start} is above 0.9 s: "), line
        assert "\n" not in line


def test_check_prints_warnings_on_stderr_and_succeeds(tmp_path: Path) -> None:
    path = tmp_path / "slow.xml"
    path.write_text(
        cluster_xml("<member_timeout>1.5</member_timeout><new_call_budget>0.2</new_call_budget>")
    )
    result = CliRunner().invoke(app, ["serve", "--check", "-c", str(path)])
    assert result.exit_code == 0
    assert "member_timeout: 1.5 s, new call budget: 0.2 s" in result.stdout
    assert result.stderr.splitlines() == [
        "rtpcluster: warning: cluster 'c': <member_timeout>: 1.5 s is above 0.9 s: SIP servers "
        "send a command again after 1 s, so a member that does not answer is given up only "
        "after that"
    ]


def test_summary_shows_health_slow_start_and_backup() -> None:
    text = summary(
        parse_config(
            cluster_xml(
                "<slow_start>30</slow_start><flap_limit>0</flap_limit>", "<backup>yes</backup>"
            )
        )
    )
    assert "  member_timeout: 0.5 s, new call budget: 0.3 s (60% of it)" in text
    assert "  health: rise 2, fall 2, flap damping off" in text
    assert "  slow_start: 30 s" in text
    assert "status=ACTIVE backup=yes" in text
    default = summary(parse_config(cluster_xml()))
    assert "flap damping 5 in 60 s, hold down 10 s doubling to 300 s" in default
    assert "  slow_start: off" in default and "backup" not in default
