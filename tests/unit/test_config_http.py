"""The top-level ``<http>`` element and ``--http``: HOST:PORT of the HTTP endpoint.

It sits beside ``<session_store>`` (tests/unit/test_store_config.py); both survive ``save``.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtpcluster.config import ConfigError, dump_config, parse_config
from rtpcluster.config.models import http_endpoint
from rtpcluster.service import ServeOptions, Service
from rtpcluster.transport.endpoint import Kind

CLUSTER = """<rtp_cluster><name>c1</name><protocol>udp</protocol>
<address>127.0.0.1:22222</address></rtp_cluster>"""


def config(http: str) -> str:
    return f"<rtp_cluster_config>{http}{CLUSTER}</rtp_cluster_config>"


def test_absent_means_off() -> None:
    assert parse_config(config("")).http is None


def test_read_and_written_back() -> None:
    parsed = parse_config(config("<http>127.0.0.1:9100</http>"))
    assert parsed.http is not None and str(parsed.http) == "tcp:127.0.0.1:9100"
    text = dump_config(parsed)
    assert "<http>127.0.0.1:9100</http>" in text
    assert parse_config(text) == parsed


def test_an_old_file_is_written_without_it() -> None:
    assert "<http>" not in dump_config(parse_config(config("")))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("127.0.0.1", "<http>: must be host:port, got '127.0.0.1'"),
        ("127.0.0.1:0", "<http>: bad port in '127.0.0.1:0'"),
        ("127.0.0.1:70000", "<http>: bad port in '127.0.0.1:70000'"),
        ("*:9100", "<http>: use 0.0.0.0 or [::] to listen on every address, not *"),
        ("unix:/tmp/x", "<http>: must be host:port, got 'unix:/tmp/x'"),
        ("udp:127.0.0.1:9100", "<http>: must be host:port, got 'udp:127.0.0.1:9100'"),
        ("::1", "<http>: must be host:port, got '::1'"),
    ],
)
def test_a_bad_value_is_one_line_naming_element_and_value(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(config(f"<http>{value}</http>"))
    assert str(caught.value) == message


def test_given_twice_is_refused() -> None:
    with pytest.raises(ConfigError, match="given 2 times"):
        parse_config(config("<http>127.0.0.1:1</http><http>127.0.0.1:2</http>"))


ports = st.integers(min_value=1, max_value=65535)


@given(st.ip_addresses(), ports, st.booleans())
def test_any_ip_and_port_round_trip(address: object, port: int, bracket: bool) -> None:
    host = str(address)
    ipv6 = ":" in host
    text = f"[{host}]:{port}" if ipv6 and bracket else f"{host}:{port}"
    endpoint = http_endpoint(text)
    assert endpoint.port == port
    assert ipaddress.ip_address(endpoint.host) == address
    assert endpoint.kind is (Kind.TCP6 if ipv6 else Kind.TCP)
    assert http_endpoint(endpoint.address) == endpoint


def test_both_top_level_elements_together_round_trip() -> None:
    both = "<http>127.0.0.1:9100</http><session_store>redis://127.0.0.1:6379/0</session_store>"
    parsed = parse_config(config(both))
    assert parsed.http is not None and parsed.session_store.startswith("redis://")
    assert parse_config(dump_config(parsed)) == parsed


async def test_save_keeps_the_top_level_elements(tmp_path: Path) -> None:
    """What ``save`` writes (the running config) keeps <http> and <session_store>."""
    both = "<http>127.0.0.1:9100</http><session_store>redis://127.0.0.1:6379/0</session_store>"
    parsed = parse_config(config(both))
    service = Service(parsed, ServeOptions(config_path=str(tmp_path / "rtp_cluster.xml")))
    running = service.running_config()
    assert (running.http, running.session_store) == (parsed.http, parsed.session_store)
