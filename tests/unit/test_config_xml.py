"""Reading, writing and rejecting XML configuration files."""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

import pytest

from rtpcluster.config import (
    CapacityLimit,
    ClusterConfig,
    Config,
    ConfigError,
    DisconnectNotify,
    ListenOptions,
    MemberConfig,
    MemberProtocol,
    MemberStatus,
    dump_config,
    load_config,
    parse_config,
    save_config,
    summary,
)
from rtpcluster.transport.endpoint import Endpoint, Kind

EXAMPLES = Path(__file__).resolve().parents[2] / "config"

ORIGINAL = """\
<rtp_cluster_config>
  <rtp_cluster>
    <name>basic_network</name>
    <protocol>UDP</protocol>
    <address>127.0.0.1:32324</address>
    <rtpproxy>
      <name>RTPPROXY0</name><protocol>UNIX</protocol><address>/var/run/rtpp0.sock</address>
      <weight>100</weight><capacity>2500</capacity><status>ACTIVE</status>
      <wan_address>1.2.3.4</wan_address><lan_address>127.0.0.1</lan_address>
    </rtpproxy>
    <rtpproxy>
      <name>RTPPROXY1</name><protocol>udp</protocol><address>127.0.0.1:32323</address>
      <weight>100</weight><capacity>2500</capacity><status>suspended</status>
    </rtpproxy>
    <rtpproxy>
      <name>RTPPROXY2</name><protocol>UDP6</protocol><address>localhost:32322</address>
      <weight>100</weight><capacity>2500</capacity><status>ACTIVE</status>
    </rtpproxy>
    <rtpproxy>
      <name>RTPPROXY3</name><protocol>UDP6</protocol><address>[::1]:32323</address>
      <weight>100</weight><capacity>2500</capacity><status>Active</status>
    </rtpproxy>
  </rtp_cluster>
</rtp_cluster_config>
"""


def test_original_file_loads_with_case_insensitive_values() -> None:
    config = parse_config(ORIGINAL)
    (cluster,) = config.clusters
    assert cluster.name == "basic_network"
    assert cluster.listen == [Endpoint(Kind.UDP, "127.0.0.1", 32324)]
    assert cluster.capacity_limit is CapacityLimit.SOFT
    assert cluster.disconnect_notify is None
    assert [m.name for m in cluster.members] == ["RTPPROXY0", "RTPPROXY1", "RTPPROXY2", "RTPPROXY3"]
    rtpp0, rtpp1, rtpp2, rtpp3 = cluster.members
    assert rtpp0.protocol is MemberProtocol.UNIX
    assert rtpp0.address == Endpoint(Kind.UNIX, path="/var/run/rtpp0.sock")
    assert (rtpp0.wan_address, rtpp0.lan_address) == ("1.2.3.4", "127.0.0.1")
    assert rtpp1.status is MemberStatus.SUSPENDED
    assert rtpp2.address == Endpoint(Kind.UDP6, "localhost", 32322)
    assert rtpp3.address == Endpoint(Kind.UDP6, "::1", 32323)
    assert rtpp3.status is MemberStatus.ACTIVE
    assert (rtpp3.weight, rtpp3.capacity) == (100, 2500)


def test_defaults_of_omitted_elements() -> None:
    config = parse_config(
        "<rtp_cluster_config><rtp_cluster><name>c</name><protocol>udp</protocol>"
        "<address>10.0.0.1</address><rtpproxy><name>m</name><protocol>udp</protocol>"
        "<address>10.0.0.2</address></rtpproxy></rtp_cluster></rtp_cluster_config>"
    )
    cluster = config.clusters[0]
    assert cluster.listen == [Endpoint(Kind.UDP, "10.0.0.1", 22222)]
    assert (cluster.heartbeat_interval, cluster.offline_probe_interval) == (1.0, 2.0)
    assert (cluster.member_timeout, cluster.session_idle_timeout) == (0.5, 3600.0)
    member = cluster.members[0]
    assert member.address == Endpoint(Kind.UDP, "10.0.0.2", 22222)
    assert (member.weight, member.capacity, member.status) == (100, 4000, MemberStatus.ACTIVE)


def test_doctype_of_the_original_is_accepted() -> None:
    text = '<?xml version="1.0"?>\n<!DOCTYPE rtp_cluster_config SYSTEM "x.dtd">\n' + ORIGINAL
    assert parse_config(text) == parse_config(ORIGINAL)


def test_our_additions_are_read() -> None:
    config = parse_config(
        """<rtp_cluster_config><rtp_cluster>
        <name>c</name><listen>tcp:127.0.0.1:22222</listen><listen>cunix:/run/c.sock</listen>
        <capacity_limit type="HARD"/>
        <disconnect_notify><inbound_address>127.0.0.1:22500</inbound_address>
          <dest_socket_prefix>/var/run/</dest_socket_prefix></disconnect_notify>
        <heartbeat_interval>0.25</heartbeat_interval><offline_probe_interval>5</offline_probe_interval>
        <member_timeout>1e-1</member_timeout><session_idle_timeout>60</session_idle_timeout>
        <rtpproxy><name>e</name><protocol>EMBEDDED</protocol><address>udp:127.0.0.1:22301</address>
          <status>draining</status><rtp_port_min>35000</rtp_port_min>
          <rtp_port_max>35999</rtp_port_max><cmd_out_address>[::1]:4000</cmd_out_address>
        </rtpproxy></rtp_cluster></rtp_cluster_config>"""
    )
    cluster = config.clusters[0]
    assert cluster.listen == [
        Endpoint(Kind.TCP, "127.0.0.1", 22222),
        Endpoint(Kind.CUNIX, path="/run/c.sock"),
    ]
    assert cluster.capacity_limit is CapacityLimit.HARD
    assert cluster.disconnect_notify == DisconnectNotify(
        inbound_address=Endpoint(Kind.TCP, "127.0.0.1", 22500), dest_socket_prefix="/var/run/"
    )
    assert (cluster.heartbeat_interval, cluster.offline_probe_interval) == (0.25, 5.0)
    assert (cluster.member_timeout, cluster.session_idle_timeout) == (0.1, 60.0)
    member = cluster.members[0]
    assert member.protocol is MemberProtocol.EMBEDDED
    assert member.address == Endpoint(Kind.UDP, "127.0.0.1", 22301)
    assert member.status is MemberStatus.DRAINING
    assert (member.rtp_port_min, member.rtp_port_max) == (35000, 35999)
    assert member.cmd_out_address == "[::1]:4000"


def test_protocol_and_address_come_first_among_listeners() -> None:
    config = parse_config(
        "<rtp_cluster_config><rtp_cluster><name>c</name><listen>unix:/run/a.sock</listen>"
        "<protocol>udp6</protocol><address>[::1]:5000</address></rtp_cluster></rtp_cluster_config>"
    )
    assert config.clusters[0].listen == [
        Endpoint(Kind.UDP6, "::1", 5000),
        Endpoint(Kind.UNIX, path="/run/a.sock"),
    ]


def test_empty_root_means_no_clusters() -> None:
    assert parse_config("<rtp_cluster_config/>") == Config(clusters=[])
    assert parse_config(b"<rtp_cluster_config></rtp_cluster_config>").clusters == []


def _original_with(old: str, new: str) -> str:
    assert old in ORIGINAL
    return ORIGINAL.replace(old, new, 1)


R0 = "cluster 'basic_network', rtpproxy 'RTPPROXY0'"
R3 = "cluster 'basic_network', rtpproxy 'RTPPROXY3'"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            _original_with("<weight>100</weight>", "<weight>0</weight>"),
            f"{R0}: <weight>: must be > 0, got '0'",
        ),
        (
            _original_with("<weight>100</weight>", "<weight>-5</weight>"),
            f"{R0}: <weight>: must be > 0, got '-5'",
        ),
        (
            _original_with("<weight>100</weight>", "<weight>1.5</weight>"),
            f"{R0}: <weight>: must be an integer, got '1.5'",
        ),
        (
            _original_with("<capacity>2500</capacity>", "<capacity>0</capacity>"),
            f"{R0}: <capacity>: must be > 0, got '0'",
        ),
        (
            _original_with("<protocol>UNIX</protocol>", "<protocol>sctp</protocol>"),
            f"{R0}: <protocol>: must be one of udp, udp6, unix, cunix, tcp, tcp6, embedded, "
            "got 'sctp'",
        ),
        (
            _original_with("<protocol>UDP</protocol>", "<protocol>http</protocol>"),
            "cluster 'basic_network': <protocol>: must be one of udp, udp6, unix, cunix, tcp, "
            "tcp6, got 'http'",
        ),
        (
            _original_with("[::1]:32323", "[::1]:70000"),
            f"{R3}: <address>: bad port in '[::1]:70000'",
        ),
        (
            _original_with("[::1]:32323", "[::g]:32323"),
            f"{R3}: <address>: bad bracketed IPv6 address '[::g]:32323'",
        ),
        (
            _original_with("<address>/var/run/rtpp0.sock</address>", "<address></address>"),
            f"{R0}: <address>: empty address",
        ),
        (
            _original_with("<address>/var/run/rtpp0.sock</address>", ""),
            f"{R0}: <address>: missing required element",
        ),
        (
            _original_with("<address>127.0.0.1:32324</address>", "<address>1.2.3.4:x</address>"),
            "cluster 'basic_network': <address>: bad port in '1.2.3.4:x'",
        ),
        (
            _original_with("<address>127.0.0.1:32323</address>", "<address>[::1]:1</address>"),
            "cluster 'basic_network', rtpproxy 'RTPPROXY1': <address>: "
            "udp address '::1' is IPv6 (use udp6:)",
        ),
        (
            _original_with(
                "<address>/var/run/rtpp0.sock</address>", "<address>udp:1.2.3.4</address>"
            ),
            f"{R0}: <address>: address 'udp:1.2.3.4:22222' does not match protocol unix",
        ),
        (
            _original_with("<name>RTPPROXY0</name>", ""),
            "cluster 'basic_network', rtpproxy #1: <name>: missing required element",
        ),
        (
            _original_with("<name>basic_network</name>", ""),
            "cluster #1: <name>: missing required element",
        ),
        (
            _original_with("<name>basic_network</name>", "").replace("2500", "many", 1),
            "cluster #1, rtpproxy 'RTPPROXY0': <capacity>: must be an integer, got 'many'",
        ),
        (
            _original_with("<name>RTPPROXY1</name>", "<name>RTPPROXY0</name>"),
            "cluster 'basic_network': duplicate rtpproxy name 'RTPPROXY0'",
        ),
        (
            _original_with("<status>ACTIVE</status>", "<status>paused</status>"),
            f"{R0}: <status>: must be one of ACTIVE, SUSPENDED, DRAINING, got 'paused'",
        ),
        (
            _original_with("<protocol>UDP</protocol>", '<capacity_limit type="medium"/>'),
            "cluster 'basic_network': <capacity_limit type>: must be one of soft, hard, "
            "got 'medium'",
        ),
        (
            _original_with("<protocol>UDP</protocol>", "<capacity_limit>hard</capacity_limit>"),
            "cluster 'basic_network': <capacity_limit>: "
            'expected <capacity_limit type="soft|hard"/>',
        ),
        (
            _original_with("<wan_address>1.2.3.4</wan_address>", "<wan_address>me</wan_address>"),
            f"{R0}: <wan_address>: must be an IPv4 or IPv6 address, got 'me'",
        ),
        (
            _original_with(
                "<wan_address>1.2.3.4</wan_address>",
                "<cmd_out_address>1.2.3.4:0</cmd_out_address>",
            ),
            f"{R0}: <cmd_out_address>: must be an IP address or IP:port, got '1.2.3.4:0'",
        ),
        (
            _original_with("<weight>100</weight>", "<wieght>100</wieght>"),
            f"{R0}: <wieght>: unknown element",
        ),
        (
            _original_with("<weight>100</weight>", "<weight>1</weight><weight>2</weight>"),
            f"{R0}: <weight>: given 2 times, expected once",
        ),
        (
            _original_with("<weight>100</weight>", '<weight unit="x">100</weight>'),
            f"{R0}: <weight>: expected text only, got attributes or child elements",
        ),
        (
            _original_with(
                "<wan_address>1.2.3.4</wan_address>", "<rtp_port_min>100</rtp_port_min>"
            ),
            f"{R0}: <rtp_port_min>: only allowed with protocol embedded",
        ),
        (
            _original_with("<name>RTPPROXY0</name>", "<name>RTP PROXY</name>"),
            "cluster 'basic_network', rtpproxy 'RTP PROXY': <name>: "
            "must not contain spaces or control characters, got 'RTP PROXY'",
        ),
        (
            _original_with("<protocol>UDP</protocol>\n    <address>127.0.0.1:32324</address>", ""),
            "cluster 'basic_network': no control socket: give <protocol> and <address>, "
            "or a <listen>",
        ),
        (
            _original_with("<address>127.0.0.1:32324</address>", "<listen>udp:1.2.3.4:0</listen>"),
            "cluster 'basic_network': <listen>: bad port in '1.2.3.4:0'",
        ),
        (
            _original_with("<address>127.0.0.1:32324</address>", "<listen>1.2.3.4:5</listen>"),
            "cluster 'basic_network': <listen>: address '1.2.3.4:5' has no protocol "
            "(udp:, unix:, ...)",
        ),
        (
            _original_with(
                "</rtp_cluster>", "<heartbeat_interval>0</heartbeat_interval></rtp_cluster>"
            ),
            "cluster 'basic_network': <heartbeat_interval>: must be a number of seconds "
            "from 0.1 to 60, got '0'",
        ),
        (
            _original_with(
                "</rtp_cluster>",
                "<rtpproxy><name>again</name><protocol>cunix</protocol>"
                "<address>/var/run/./rtpp0.sock</address></rtpproxy></rtp_cluster>",
            ),
            "cluster 'basic_network': rtpproxy 'again': <address>: '/var/run/./rtpp0.sock' "
            "is already the address of rtpproxy 'RTPPROXY0'",
        ),
        (
            _original_with(
                "</rtp_cluster>",
                "<rtpproxy><name>again</name><protocol>udp</protocol>"
                "<address>127.0.0.1:32323</address></rtpproxy></rtp_cluster>",
            ),
            "cluster 'basic_network': rtpproxy 'again': <address>: '127.0.0.1:32323' "
            "is already the address of rtpproxy 'RTPPROXY1'",
        ),
        (
            _original_with(
                "</rtp_cluster>", "<heartbeat_interval>1e-9</heartbeat_interval></rtp_cluster>"
            ),
            "cluster 'basic_network': <heartbeat_interval>: must be a number of seconds "
            "from 0.1 to 60, got '1e-9'",
        ),
        (
            _original_with("</rtp_cluster>", "<member_timeout>soon</member_timeout></rtp_cluster>"),
            "cluster 'basic_network': <member_timeout>: must be a number of seconds "
            "from 0.05 to 10, got 'soon'",
        ),
        (
            _original_with(
                "<rtp_cluster>",
                "<rtp_cluster><disconnect_notify><inbound_address>127.0.0.1</inbound_address>"
                "<dest_socket_prefix>/r/</dest_socket_prefix></disconnect_notify>",
            ),
            "cluster 'basic_network', disconnect_notify: <inbound_address>: "
            "must be host:port, got '127.0.0.1'",
        ),
        (
            _original_with(
                "<rtp_cluster>",
                "<rtp_cluster><disconnect_notify><inbound_address>1.2.3.4:5</inbound_address>"
                "</disconnect_notify>",
            ),
            "cluster 'basic_network', disconnect_notify: <dest_socket_prefix>: "
            "missing required element",
        ),
        (
            "<rtp_cluster_config><rtp_cluster><name>a</name><listen>udp:1.1.1.1:1</listen>"
            "</rtp_cluster><rtp_cluster><name>a</name><listen>udp:1.1.1.1:2</listen>"
            "</rtp_cluster></rtp_cluster_config>",
            "duplicate cluster name 'a'",
        ),
        (
            "<rtp_cluster_config><rtp_cluster><name>a</name><listen>unix:/r/x</listen>"
            "</rtp_cluster><rtp_cluster><name>b</name><listen>cunix:/r/x</listen>"
            "</rtp_cluster></rtp_cluster_config>",
            "cluster 'b': <listen>: endpoint 'cunix:/r/x' is already used by cluster 'a'",
        ),
        (
            "<rtp_cluster_config><rtp_cluster><name>a</name><listen>udp:1.1.1.1:1</listen>"
            "<listen>udp:1.1.1.1:1</listen></rtp_cluster></rtp_cluster_config>",
            "cluster 'a': <listen>: duplicate endpoint 'udp:1.1.1.1:1'",
        ),
        (
            "<rtp_cluster_config><cluster/></rtp_cluster_config>",
            "<cluster>: unknown element",
        ),
        (
            "<rtp_cluster_config>text</rtp_cluster_config>",
            "<rtp_cluster_config>: expected child elements, got text 'text'",
        ),
        ("<rtpcluster/>", "f.xml: root element is <rtpcluster>, expected <rtp_cluster_config>"),
        (
            '<!DOCTYPE r [<!ENTITY x "y">]><rtp_cluster_config/>',
            "f.xml: XML refused: entities are disabled",
        ),
    ],
)
def test_bad_config_gives_one_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="f.xml")
    assert str(caught.value) == message
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "position"),
    [
        ("<rtp_cluster_config>\n  <rtp_cluster>\n  </rtp_clusterx>", "3:5"),
        ("<rtp_cluster_config>\n<a>&bogus;</a>", "2:4"),
        ("", "1:1"),
    ],
)
def test_malformed_xml_names_line_and_column(text: str, position: str) -> None:
    with pytest.raises(ConfigError, match=rf"^f\.xml:{position}: malformed XML: \S"):
        parse_config(text, source="f.xml")


def test_mismatched_tag_reason() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("<rtp_cluster_config>\n</rtp>", source="/etc/x.xml")
    assert str(caught.value) == "/etc/x.xml:2:3: malformed XML: mismatched tag"


def test_load_config_reports_unreadable_files(tmp_path: Path) -> None:
    missing = tmp_path / "missing.xml"
    with pytest.raises(ConfigError, match=r"missing\.xml: cannot read: No such file"):
        load_config(missing)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path)  # a directory


def test_load_config_names_the_file_in_syntax_errors(tmp_path: Path) -> None:
    path = tmp_path / "bad.xml"
    path.write_text("<rtp_cluster_config>\n<rtp_cluster>\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}:3:1: malformed XML: ")


@pytest.mark.parametrize("name", ["rtp_cluster.xml", "embedded.xml"])
def test_example_files_load_and_round_trip(name: str) -> None:
    config = load_config(EXAMPLES / name)
    assert parse_config(dump_config(config)) == config


def test_main_example_shows_the_promised_setup() -> None:
    main, strict = load_config(EXAMPLES / "rtp_cluster.xml").clusters
    assert main.listen == [
        Endpoint(Kind.UDP, "127.0.0.1", 22222),
        Endpoint(Kind.UNIX, path="/var/run/rtpcluster.sock"),
    ]
    addresses = {str(member.address) for member in main.members}
    assert {"udp:127.0.0.1:22301", "udp:127.0.0.1:22302"} <= addresses
    assert any(member.protocol is MemberProtocol.UNIX for member in main.members)
    assert any(member.wan_address and member.lan_address for member in main.members)
    assert strict.capacity_limit is CapacityLimit.HARD
    assert strict.disconnect_notify is not None
    assert [member.name for member in main.members if member.backup] == ["rtpp-spare"]
    assert (main.slow_start, main.new_call_budget, main.rise, main.fall) == (30.0, 0.3, 2, 2)


def test_embedded_example_is_the_quick_start() -> None:
    (cluster,) = load_config(EXAMPLES / "embedded.xml").clusters
    assert cluster.listen == [Endpoint(Kind.UDP, "127.0.0.1", 22222)]
    assert [
        (m.protocol, str(m.address), m.rtp_port_min, m.rtp_port_max) for m in cluster.members
    ] == [
        (MemberProtocol.EMBEDDED, "udp:127.0.0.1:22301", 35000, 35999),
        (MemberProtocol.EMBEDDED, "udp:127.0.0.1:22302", 36000, 36999),
    ]


def _sample() -> Config:
    member = MemberConfig(
        name="m1", protocol=MemberProtocol.UDP, address=Endpoint(Kind.UDP, "10.0.0.2", 5000)
    )
    cluster = ClusterConfig(
        name="c1",
        listen=[Endpoint(Kind.UDP, "127.0.0.1", 22222), Endpoint(Kind.UNIX, path="/run/c.sock")],
        members=[member],
    )
    return Config(clusters=[cluster])


def test_dump_writes_original_elements_and_omits_our_defaults() -> None:
    text = dump_config(_sample())
    assert "<protocol>udp</protocol>" in text
    assert "<address>127.0.0.1:22222</address>" in text
    assert "<listen>unix:/run/c.sock</listen>" in text
    assert '<capacity_limit type="soft"/>' in text
    for element in ("<weight>100</weight>", "<capacity>4000</capacity>", "<status>ACTIVE"):
        assert element in text
    for absent in ("heartbeat_interval", "member_timeout", "wan_address", "rtp_port_min"):
        assert absent not in text
    for absent in ("new_call_budget", "rise", "fall", "slow_start", "flap", "hold_down", "backup"):
        assert absent not in text


def test_dump_writes_changed_timers() -> None:
    config = _sample()
    cluster = config.clusters[0].model_copy(update={"member_timeout": 0.25})
    text = dump_config(Config(clusters=[cluster]))
    assert "<member_timeout>0.25</member_timeout>" in text
    assert parse_config(text).clusters[0].member_timeout == 0.25


def test_save_config_replaces_the_file_atomically(tmp_path: Path) -> None:
    path = tmp_path / "rtp_cluster.xml"
    path.write_text("old")
    path.chmod(0o600)
    save_config(_sample(), path)
    assert load_config(path) == _sample()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["rtp_cluster.xml"]


def test_save_config_into_a_missing_directory_fails_cleanly(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot write"):
        save_config(_sample(), tmp_path / "no" / "such.xml")


def test_summary_lists_clusters_listeners_and_members() -> None:
    text = summary(load_config(EXAMPLES / "rtp_cluster.xml"))
    assert text.splitlines()[0] == "2 cluster(s), 6 rtpproxy member(s)"
    assert "cluster main" in text
    assert "  listen: udp:127.0.0.1:22222, unix:/var/run/rtpcluster.sock" in text
    assert "  rtpproxy rtpp2: udp 127.0.0.1:22302 weight=200 capacity=8000 status=ACTIVE" in text
    assert "  rtpproxy inproc1: embedded udp:127.0.0.1:22311 " in text
    assert "  capacity_limit: hard" in text


def _listen(attributes: str, endpoint: str = "unix:/run/c.sock") -> str:
    return (
        f"<rtp_cluster_config><rtp_cluster><name>a</name>"
        f"<listen {attributes}>{endpoint}</listen></rtp_cluster></rtp_cluster_config>"
    )


def test_listen_attributes_are_read_and_written_back() -> None:
    user = pwd.getpwuid(os.getuid()).pw_name
    text = (
        "<rtp_cluster_config><rtp_cluster><name>a</name>"
        "<protocol>udp</protocol><address>127.0.0.1:22222</address>"
        f'<listen mode="660" owner="{user}" max_connections="16">unix:/run/c.sock</listen>'
        '<listen idle_timeout="90">tcp:127.0.0.1:22223</listen>'
        "</rtp_cluster></rtp_cluster_config>"
    )
    cluster = parse_config(text).clusters[0]
    assert cluster.listen_options == {
        "unix:/run/c.sock": ListenOptions(mode=0o660, owner=user, max_connections=16),
        "tcp:127.0.0.1:22223": ListenOptions(idle_timeout=90.0),
    }
    dumped = dump_config(Config(clusters=[cluster]))
    assert f'<listen mode="0660" owner="{user}" max_connections="16">unix:/run/c.sock' in dumped
    assert '<listen idle_timeout="90.0">tcp:127.0.0.1:22223</listen>' in dumped
    assert "<protocol>udp</protocol>" in dumped  # the first listener has no attributes
    assert parse_config(dumped) == Config(clusters=[cluster])
    assert "unix:/run/c.sock (mode 0660, owner " in summary(Config(clusters=[cluster]))


def test_a_first_listener_with_attributes_is_written_as_listen() -> None:
    cluster = parse_config(_listen('mode="0600"')).clusters[0]
    dumped = dump_config(Config(clusters=[cluster]))
    assert "<protocol>" not in dumped and "<address>" not in dumped
    assert '<listen mode="0600">unix:/run/c.sock</listen>' in dumped
    assert parse_config(dumped).clusters[0] == cluster


def test_listen_options_are_keyed_by_the_endpoint_and_empty_ones_dropped() -> None:
    cluster = ClusterConfig(
        name="a",
        listen=[Endpoint(Kind.UNIX, path="/x"), Endpoint(Kind.CUNIX, path="/y")],
        listen_options={" unix:/x ": {"mode": "0600"}, "cunix:/y": {}},
    )
    assert cluster.listen_options == {"unix:/x": ListenOptions(mode=0o600)}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (_listen('mode="999"'), "<listen mode>: must be octal permission bits such as 0660"),
        (_listen('mode="4755"'), "<listen mode>: must be octal permission bits such as 0660"),
        (_listen('owner="no-such-user-x"'), "<listen owner>: no such user: no-such-user-x"),
        (_listen('owner="root:no-such-group-x"'), "<listen owner>: no such group: no-such-group-x"),
        (_listen('max_connections="0"'), "<listen max_connections>: must be > 0, got '0'"),
        (
            _listen('max_connections="100000"'),
            "<listen max_connections>: must be between 1 and 65536, got '100000'",
        ),
        (
            _listen('idle_timeout="0.5"'),
            "<listen idle_timeout>: must be a number of seconds from 1 to 86400, got '0.5'",
        ),
        (_listen('colour="red"'), "<listen>: unknown attribute 'colour' (known: mode, owner,"),
        (
            _listen('max_connections="5"', "udp:127.0.0.1:5000"),
            "<listen> udp:127.0.0.1:5000: attributes are only for stream sockets",
        ),
        (
            _listen('mode="0600"', "tcp:127.0.0.1:5000"),
            "<listen> tcp:127.0.0.1:5000: mode and owner are only for unix: and cunix:",
        ),
    ],
)
def test_bad_listen_attributes_name_the_attribute(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert str(caught.value).startswith(f"cluster 'a': {message}")
