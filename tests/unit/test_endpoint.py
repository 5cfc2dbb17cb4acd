"""Endpoint.parse: every kind, IPv6 forms, defaults, and errors that are always EndpointError."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtpcluster.endpoint import DEFAULT_PORT, Endpoint, EndpointError, Kind

# --- every kind ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "host", "port"),
    [
        ("udp:127.0.0.1:22300", Kind.UDP, "127.0.0.1", 22300),
        ("udp:127.0.0.1", Kind.UDP, "127.0.0.1", DEFAULT_PORT),
        ("tcp:10.0.0.2:5", Kind.TCP, "10.0.0.2", 5),
        ("tcp:10.0.0.2", Kind.TCP, "10.0.0.2", DEFAULT_PORT),
        ("udp6:[::1]:22224", Kind.UDP6, "::1", 22224),
        ("udp6:[::1]", Kind.UDP6, "::1", DEFAULT_PORT),
        ("udp6:::1:22224", Kind.UDP6, "::1", 22224),
        ("udp6:::1", Kind.UDP6, "::1", DEFAULT_PORT),
        ("udp6:2001:db8::7", Kind.UDP6, "2001:db8::7", DEFAULT_PORT),
        ("udp6:[2001:db8::7]:65535", Kind.UDP6, "2001:db8::7", 65535),
        ("tcp6:[fe80::1]:1", Kind.TCP6, "fe80::1", 1),
        ("tcp6:::", Kind.TCP6, "::", DEFAULT_PORT),
        ("udp:rtpproxy.example.com:7000", Kind.UDP, "rtpproxy.example.com", 7000),
        ("udp:localhost", Kind.UDP, "localhost", DEFAULT_PORT),
        ("udp:media-1_a.lan:9", Kind.UDP, "media-1_a.lan", 9),
        ("udp6:localhost:22224", Kind.UDP6, "localhost", 22224),
        ("udp:*", Kind.UDP, "*", DEFAULT_PORT),
        ("udp:*:22222", Kind.UDP, "*", 22222),
        ("UDP:1.2.3.4:5", Kind.UDP, "1.2.3.4", 5),
        ("  tcp:1.2.3.4:5\n", Kind.TCP, "1.2.3.4", 5),
    ],
)
def test_inet_kinds(text: str, kind: Kind, host: str, port: int) -> None:
    ep = Endpoint.parse(text)
    assert (ep.kind, ep.host, ep.port, ep.path) == (kind, host, port, "")
    assert ep.sockaddr == (host, port)


@pytest.mark.parametrize(
    ("text", "kind", "path"),
    [
        ("unix:/var/run/rtpproxy.sock", Kind.UNIX, "/var/run/rtpproxy.sock"),
        ("cunix:/var/run/rtpproxy.sock", Kind.CUNIX, "/var/run/rtpproxy.sock"),
        ("unix:relative.sock", Kind.UNIX, "relative.sock"),
        ("cunix:/a dir/with:colons", Kind.CUNIX, "/a dir/with:colons"),
        ("/var/run/bare.sock", Kind.UNIX, "/var/run/bare.sock"),
    ],
)
def test_path_kinds(text: str, kind: Kind, path: str) -> None:
    ep = Endpoint.parse(text)
    assert (ep.kind, ep.path, ep.host, ep.port) == (kind, path, "", 0)
    assert ep.address == path


def test_default_kind_applies_to_bare_addresses_only() -> None:
    assert Endpoint.parse("1.2.3.4:5", default_kind="udp") == Endpoint(Kind.UDP, "1.2.3.4", 5)
    assert Endpoint.parse("[::1]:5", default_kind=Kind.TCP6) == Endpoint(Kind.TCP6, "::1", 5)
    assert Endpoint.parse("/x.sock", default_kind="CUNIX") == Endpoint(Kind.CUNIX, path="/x.sock")
    # an explicit kind wins over the default
    assert Endpoint.parse("tcp:1.2.3.4", default_kind="udp").kind is Kind.TCP


def test_kind_properties() -> None:
    assert {k for k in Kind if k.is_datagram} == {Kind.UDP, Kind.UDP6}
    assert {k for k in Kind if k.is_path} == {Kind.UNIX, Kind.CUNIX}
    assert {k for k in Kind if k.is_inet6} == {Kind.UDP6, Kind.TCP6}


@pytest.mark.parametrize(
    ("ep", "text"),
    [
        (Endpoint(Kind.UDP, "127.0.0.1", 22222), "udp:127.0.0.1:22222"),
        (Endpoint(Kind.UDP6, "::1", 5), "udp6:[::1]:5"),
        (Endpoint(Kind.TCP, "*", 7), "tcp:*:7"),
        (Endpoint(Kind.CUNIX, path="/r.sock"), "cunix:/r.sock"),
    ],
)
def test_str(ep: Endpoint, text: str) -> None:
    assert str(ep) == text


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "127.0.0.1:22222",  # no kind, not a path
        "foo:bar",
        "unix:",
        "cunix:",
        "unix:/a\x00b",
        "udp:",
        "udp:1.2.3.4:0",
        "udp:1.2.3.4:65536",
        "udp:1.2.3.4:",
        "udp:1.2.3.4:port",
        "udp:1.2.3.4:\u0661\u0662",  # non-ASCII digits
        "udp:1.2.3.4:-1",
        "udp::5",
        "udp:[::1]",  # IPv6 on an IPv4 kind
        "udp:::1",
        "tcp:2001:db8::1",
        "udp6:1.2.3.4",  # IPv4 on an IPv6 kind
        "udp6:[1.2.3.4]:5",
        "udp6:[::1",
        "udp6:[::1]x",
        "udp6:[::1]:",
        "udp6:[nothex]:5",
        "udp6:a:b:c",
        "udp:exa mple.com",
        "udp:a..b",
        "udp:a.",
        "udp:" + "a" * 64,
        "udp:" + ".".join(["a" * 60] * 5),
    ],
)
def test_bad_input_raises_endpoint_error(text: str) -> None:
    with pytest.raises(EndpointError):
        Endpoint.parse(text)


def test_unknown_default_kind() -> None:
    with pytest.raises(EndpointError, match="unknown protocol"):
        Endpoint.parse("1.2.3.4:5", default_kind="sctp")


def test_endpoint_error_is_a_value_error() -> None:
    assert issubclass(EndpointError, ValueError)


@given(st.text(max_size=60), st.sampled_from([None, "udp", "udp6", "unix", "tcp6", "bogus"]))
def test_arbitrary_text_parses_or_raises_endpoint_error(text: str, default: str | None) -> None:
    try:
        ep = Endpoint.parse(text, default_kind=default)
    except EndpointError:
        return
    assert isinstance(ep.kind, Kind)
    if ep.kind.is_path:
        assert ep.path and "\x00" not in ep.path
    else:
        assert 0 < ep.port < 65536 and ep.host


address_like = st.text(st.sampled_from("0123456789abcdef:.[]*/%x- "), max_size=30)
kinds = st.sampled_from([k.value for k in Kind])


@given(kinds, address_like)
def test_address_like_text_parses_or_raises_endpoint_error(kind: str, rest: str) -> None:
    try:
        ep = Endpoint.parse(f"{kind}:{rest}")
    except EndpointError:
        return
    assert ep.kind is Kind(kind)


# --- round trip --------------------------------------------------------------------------------

ports = st.integers(1, 65535)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
label = st.from_regex(r"[a-z][a-z0-9_-]{0,11}", fullmatch=True)  # never an IPv4 address
hostnames = st.lists(label, min_size=1, max_size=4).map(".".join)
paths = st.text(
    st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), min_size=1, max_size=30
).filter(lambda p: p == p.strip())


@st.composite
def endpoints(draw: st.DrawFn) -> Endpoint:
    kind = draw(st.sampled_from(list(Kind)))
    if kind.is_path:
        return Endpoint(kind, path=draw(paths))
    v4_or_name = st.one_of(ipv4, hostnames, st.just("*"))
    host = draw(ipv6 | hostnames if kind.is_inet6 else v4_or_name)
    return Endpoint(kind, host=host, port=draw(ports))


@given(endpoints())
def test_round_trip_from_endpoint(ep: Endpoint) -> None:
    assert Endpoint.parse(str(ep)) == ep


@given(st.one_of(st.text(max_size=40), kinds.flatmap(lambda k: address_like.map(f"{k}:".__add__))))
def test_round_trip_from_text(text: str) -> None:
    try:
        ep = Endpoint.parse(text)
    except EndpointError:
        return
    if not ep.kind.is_path and "%" in ep.host:
        return  # scope ids: see test_scoped_ipv6_with_bracket_round_trip
    again = Endpoint.parse(str(ep))
    assert again == ep
    assert str(again) == str(ep)


@given(ipv6, ports)
def test_bare_and_bracketed_ipv6_agree_when_the_port_is_given(host: str, port: int) -> None:
    bracketed = Endpoint.parse(f"udp6:[{host}]:{port}")
    assert bracketed == Endpoint(Kind.UDP6, host, port)
    assert Endpoint.parse(f"udp6:{host}:{port}") == bracketed
    assert Endpoint.parse(f"udp6:[{host}]") == Endpoint(Kind.UDP6, host, DEFAULT_PORT)


def test_scoped_ipv6_with_bracket_is_refused() -> None:
    with pytest.raises(EndpointError):
        Endpoint.parse("udp6:fe80::1%]")
