"""Property tests: any valid Config survives dump -> parse; value parsers agree with str()."""

from __future__ import annotations

import ipaddress
import os
import pwd

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
    cluster_from_fields,
    dump_config,
    member_changes_from_fields,
    member_from_fields,
    parse_config,
    values,
)
from rtpcluster.config.models import (
    COUNT_BOUNDS,
    DRAIN_TIMEOUT_BOUNDS,
    TIMER_BOUNDS,
    drain_timeout,
)
from rtpcluster.transport.endpoint import Endpoint, Kind

NAMES = st.text(alphabet=st.sampled_from("abcXYZ019_-.:<>&'\"éü"), min_size=1, max_size=12)
PORTS = st.integers(min_value=1, max_value=65535)
IPV4 = st.ip_addresses(v=4).map(str)
IPV6 = st.ip_addresses(v=6).map(str)
HOSTNAMES = st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z][a-z0-9]{0,5}){0,2}", fullmatch=True)
PATHS = st.from_regex(r"/[A-Za-z0-9_.-]{1,10}(/[A-Za-z0-9_.-]{1,10}){0,2}", fullmatch=True)


def seconds_of(timer: str) -> st.SearchStrategy[float]:
    """Any value the timer accepts (its bounds included)."""
    low, high = TIMER_BOUNDS[timer]
    return st.floats(min_value=low, max_value=high)


def count_of(setting: str) -> st.SearchStrategy[int]:
    """Any value the whole-number setting accepts (its bounds included)."""
    low, high = COUNT_BOUNDS[setting]
    return st.integers(min_value=low, max_value=high)


def seconds_outside(low: float, high: float) -> st.SearchStrategy[float]:
    """Values below ``low``, above ``high``, and the non-finite ones."""
    return st.one_of(
        st.floats(max_value=low, exclude_max=True),
        st.floats(min_value=high, exclude_min=True),
        st.sampled_from([0.0, -0.0, float("nan"), float("inf"), float("-inf"), 1e-9]).filter(
            lambda value: not low <= value <= high
        ),
    )


def endpoints(kind: Kind) -> st.SearchStrategy[Endpoint]:
    if kind.is_path:
        return PATHS.map(lambda path: Endpoint(kind, path=path))
    hosts = st.one_of(IPV6 if kind.is_inet6 else IPV4, HOSTNAMES)
    return st.builds(lambda host, port: Endpoint(kind, host, port), hosts, PORTS)


ANY_ENDPOINT = st.sampled_from(list(Kind)).flatmap(endpoints)


@st.composite
def members(draw: st.DrawFn, name: str) -> MemberConfig:
    protocol = draw(st.sampled_from(list(MemberProtocol)))
    embedded = protocol is MemberProtocol.EMBEDDED
    address = draw(ANY_ENDPOINT if embedded else endpoints(Kind(protocol.value)))
    port_min = draw(st.none() | PORTS) if embedded else None
    port_max = draw(st.none() | st.integers(port_min or 1, 65535)) if embedded else None
    return MemberConfig(
        name=name,
        protocol=protocol,
        address=address,
        weight=draw(st.integers(1, 10**6)),
        capacity=draw(st.integers(1, 10**6)),
        status=draw(st.sampled_from(list(MemberStatus))),
        wan_address=draw(st.none() | IPV4 | IPV6),
        lan_address=draw(st.none() | IPV4),
        cmd_out_address=draw(
            st.none() | IPV4 | st.builds(lambda ip, port: f"[{ip}]:{port}", IPV6, PORTS)
        ),
        rtp_port_min=port_min,
        rtp_port_max=port_max,
        backup=draw(st.booleans()),
    )


OWNERS = st.sampled_from([f"{os.getuid()}:{os.getgid()}", pwd.getpwuid(os.getuid()).pw_name])


@st.composite
def listen_options(draw: st.DrawFn, endpoint: Endpoint) -> ListenOptions | None:
    """Attributes a ``<listen>`` of this kind may carry (or none)."""
    if endpoint.kind.is_datagram or draw(st.booleans()):
        return None
    path = endpoint.kind.is_path
    return ListenOptions(
        mode=draw(st.none() | st.integers(0, 0o777)) if path else None,
        owner=draw(st.none() | OWNERS) if path else None,
        max_connections=draw(st.none() | st.integers(1, 65536)),
        idle_timeout=draw(st.none() | st.floats(1, 86400)),
    )


@st.composite
def clusters(draw: st.DrawFn, name: str, listen: list[Endpoint]) -> ClusterConfig:
    member_names = draw(st.lists(NAMES, unique=True, max_size=3))
    notify = draw(
        st.none()
        | st.builds(
            DisconnectNotify,
            inbound_address=st.one_of(endpoints(Kind.TCP), endpoints(Kind.TCP6)),
            dest_socket_prefix=PATHS,
        )
    )
    options = {str(endpoint): draw(listen_options(endpoint)) for endpoint in listen}
    member_timeout = draw(seconds_of("member_timeout"))
    budget_low, _ = TIMER_BOUNDS["new_call_budget"]
    new_call_budget = draw(
        st.none() | st.floats(min_value=budget_low, max_value=member_timeout, exclude_max=True)
        if member_timeout > budget_low
        else st.none()
    )
    hold_down = draw(st.sampled_from([10.0]) | seconds_of("hold_down"))
    hold_down_max = draw(
        st.sampled_from([max(300.0, hold_down)])
        | st.floats(min_value=hold_down, max_value=TIMER_BOUNDS["hold_down_max"][1])
    )
    return ClusterConfig(
        name=name,
        listen=listen,
        listen_options={spec: given for spec, given in options.items() if given is not None},
        capacity_limit=draw(st.sampled_from(list(CapacityLimit))),
        disconnect_notify=notify,
        members=_one_per_address([draw(members(member)) for member in member_names]),
        heartbeat_interval=draw(seconds_of("heartbeat_interval")),
        offline_probe_interval=draw(st.sampled_from([2.0]) | seconds_of("offline_probe_interval")),
        member_timeout=member_timeout,
        new_call_budget=new_call_budget,
        session_idle_timeout=draw(st.sampled_from([3600.0]) | seconds_of("session_idle_timeout")),
        rise=draw(count_of("rise")),
        fall=draw(count_of("fall")),
        slow_start=draw(st.sampled_from([0.0]) | seconds_of("slow_start")),
        flap_limit=draw(count_of("flap_limit")),
        flap_window=draw(st.sampled_from([60.0]) | seconds_of("flap_window")),
        hold_down=hold_down,
        hold_down_max=hold_down_max,
    )


def _one_per_address(drawn: list[MemberConfig]) -> list[MemberConfig]:
    """The members, leaving out any whose address an earlier one has (the config refuses it)."""
    seen: set[tuple[object, ...]] = set()
    kept = []
    for member in drawn:
        address = member.address
        key: tuple[object, ...] = (address.kind, address.host.lower(), address.port)
        if address.kind.is_path:  # unix: and cunix: on one path are one socket
            key = ("path", os.path.normpath(address.path))
        if key not in seen:
            seen.add(key)
            kept.append(member)
    return kept


def _socket(endpoint: Endpoint) -> tuple[object, ...]:
    """Listeners that would bind the same socket (unix and cunix share paths)."""
    if endpoint.kind.is_path:
        return ("path", endpoint.path)
    return (endpoint.kind, endpoint.host, endpoint.port)


@st.composite
def configs(draw: st.DrawFn) -> Config:
    names = draw(st.lists(NAMES, unique=True, max_size=3))
    listeners = draw(
        st.lists(ANY_ENDPOINT, min_size=2 * len(names), max_size=2 * len(names), unique_by=_socket)
    )
    result = []
    for index, name in enumerate(names):
        count = draw(st.integers(1, 2))
        result.append(draw(clusters(name, listeners[2 * index : 2 * index + count])))
    return Config(clusters=result)


@settings(max_examples=60, deadline=None)
@given(configs())
def test_dump_then_parse_gives_the_same_config(config: Config) -> None:
    assert parse_config(dump_config(config)) == config


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_member_fields_from_a_member_build_it_again(data: st.DataObject) -> None:
    member = data.draw(members(data.draw(NAMES)))
    fields = {
        key: _text_of(value) for key, value in member.model_dump().items() if value is not None
    }
    fields["protocol"] = fields["protocol"].upper()
    fields["status"] = fields["status"].lower()
    assert member_from_fields(fields) == member


def _text_of(value: object) -> str:
    """A model value as an element (or admin field) text: ``yes``/``no`` for a bool."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(getattr(value, "value", value))


@given(st.integers())
def test_integer_reads_its_decimal_form(number: int) -> None:
    assert values.integer(str(number)) == number
    assert values.integer(f" +{number} ".replace("+-", "-")) == number


@given(st.text(alphabet=st.sampled_from("0129+- .x\u0663\u00b2"), max_size=6))
def test_integer_accepts_only_ascii_decimal_numbers(text: str) -> None:
    try:
        number = values.integer(text)
    except ValueError as exc:
        assert str(exc) == f"must be an integer, got {text!r}"
    else:
        digits = text.strip().removeprefix("+").removeprefix("-")
        assert digits.isascii() and digits.isdigit()
        assert number == int(text)


@given(st.floats(min_value=1e-3, max_value=1e6))
def test_seconds_read_back_from_repr(number: float) -> None:
    assert values.seconds(repr(number), 1e-3, 1e6) == number


TIMERS = st.sampled_from(sorted(TIMER_BOUNDS))


def cluster_xml(timer: str, text: str, others: str = "") -> str:
    return (
        "<rtp_cluster_config><rtp_cluster><name>c</name>"
        "<address>udp:127.0.0.1:22222</address>"
        f"<{timer}>{text}</{timer}>{others}</rtp_cluster></rtp_cluster_config>"
    )


# Elements a timer is checked against, set so that every value within its bounds fits.
ROOM_FOR = {
    "new_call_budget": {"member_timeout": "10"},  # below member_timeout
    "hold_down": {"hold_down_max": "86400"},  # not above hold_down_max
    "hold_down_max": {"hold_down": "1"},  # not below hold_down
}


def within_bounds(timer: str) -> st.SearchStrategy[float]:
    if timer == "new_call_budget":  # strictly below the highest member_timeout
        low, high = TIMER_BOUNDS[timer]
        return st.floats(min_value=low, max_value=high, exclude_max=True)
    return seconds_of(timer)


@given(TIMERS.flatmap(lambda timer: st.tuples(st.just(timer), within_bounds(timer))))
def test_a_timer_within_its_bounds_is_taken_from_file_and_admin(case: tuple[str, float]) -> None:
    timer, number = case
    room = ROOM_FOR.get(timer, {})
    others = "".join(f"<{key}>{text}</{key}>" for key, text in room.items())
    [from_file] = parse_config(cluster_xml(timer, repr(number), others)).clusters
    fields = {"address": "udp:127.0.0.1:22222", timer: repr(number), **room}
    from_admin = cluster_from_fields("c", fields)
    assert getattr(from_file, timer) == getattr(from_admin, timer) == number


COUNTS = st.sampled_from(sorted(COUNT_BOUNDS))


@given(COUNTS.flatmap(lambda name: st.tuples(st.just(name), count_of(name))))
def test_a_count_within_its_bounds_is_taken_from_file_and_admin(case: tuple[str, int]) -> None:
    name, number = case
    [from_file] = parse_config(cluster_xml(name, f" {number} ")).clusters
    from_admin = cluster_from_fields("c", {"address": "udp:127.0.0.1:22222", name: str(number)})
    assert getattr(from_file, name) == getattr(from_admin, name) == number


@given(
    COUNTS.flatmap(
        lambda name: st.tuples(
            st.just(name),
            st.one_of(
                st.integers(max_value=COUNT_BOUNDS[name][0] - 1).map(str),
                st.integers(min_value=COUNT_BOUNDS[name][1] + 1).map(str),
                st.sampled_from(["", "two", "2.0", "1e1", "0x2", "inf"]),
            ),
        )
    )
)
def test_a_count_outside_its_bounds_is_refused_in_one_line(case: tuple[str, str]) -> None:
    name, text = case
    low, high = COUNT_BOUNDS[name]
    with pytest.raises(ConfigError) as from_file:
        parse_config(cluster_xml(name, text))
    with pytest.raises(ConfigError) as from_admin:
        cluster_from_fields("c", {"address": "udp:127.0.0.1:22222", name: text})
    assert str(from_file.value) == str(from_admin.value)
    assert str(from_file.value) in (
        f"cluster 'c': <{name}>: must be an integer from {low} to {high}, got {text!r}",
        f"cluster 'c': <{name}>: must be an integer, got {text!r}",
    )


@given(
    seconds_of("member_timeout"),
    st.floats(min_value=TIMER_BOUNDS["new_call_budget"][0], max_value=10.0),
)
def test_the_new_call_budget_must_be_below_the_member_timeout(
    timeout: float, budget: float
) -> None:
    xml = cluster_xml(
        "member_timeout", repr(timeout), f"<new_call_budget>{budget!r}</new_call_budget>"
    )
    if budget < timeout:
        [cluster] = parse_config(xml).clusters
        assert cluster.effective_new_call_budget == budget
        return
    with pytest.raises(ConfigError) as caught:
        parse_config(xml)
    assert str(caught.value) == (
        f"cluster 'c': <new_call_budget>: must be below <member_timeout> {timeout:g}, "
        f"got {budget:g}"
    )


@given(seconds_of("member_timeout"))
def test_without_a_new_call_budget_a_new_call_waits_as_before(timeout: float) -> None:
    """The router waited 0.6 x member_timeout before the element existed."""
    for xml in (
        cluster_xml("member_timeout", repr(timeout)),
        cluster_xml("member_timeout", repr(timeout), "<new_call_budget/>"),
    ):
        [cluster] = parse_config(xml).clusters
        assert cluster.new_call_budget is None
        assert cluster.effective_new_call_budget == timeout * 0.6


@st.composite
def member_changes(draw: st.DrawFn) -> dict[str, str]:
    """``modify set`` fields: at least one of weight, capacity, backup, as typed."""
    fields = {
        "weight": draw(st.none() | st.integers(1, 10**6).map(str)),
        "capacity": draw(st.none() | st.integers(1, 10**6).map(lambda n: f" {n}")),
        "backup": draw(st.none() | st.sampled_from(["yes", "no", "YES", "No"])),
    }
    given_fields = {key: text for key, text in fields.items() if text is not None}
    return given_fields or {"weight": "1"}


@settings(max_examples=60, deadline=None)
@given(st.data(), member_changes())
def test_member_changes_change_only_what_is_given(
    data: st.DataObject, fields: dict[str, str]
) -> None:
    member = data.draw(members(data.draw(NAMES)))
    changes = member_changes_from_fields(fields, "c", "m")
    changed = changes.apply(member)
    for key in ("weight", "capacity", "backup"):
        expected = _read(key, fields[key]) if key in fields else getattr(member, key)
        assert getattr(changed, key) == expected
    others = {k: v for k, v in member.model_dump().items() if k not in fields}
    assert {k: v for k, v in changed.model_dump().items() if k not in fields} == others
    assert MemberConfig.model_validate(changed.model_dump()) == changed


def _read(key: str, text: str) -> object:
    if key == "backup":
        return text.strip().lower() == "yes"
    return int(text)


@given(
    TIMERS.flatmap(lambda timer: st.tuples(st.just(timer), seconds_outside(*TIMER_BOUNDS[timer])))
)
def test_a_timer_outside_its_bounds_is_refused_in_one_line(case: tuple[str, float]) -> None:
    timer, number = case
    low, high = TIMER_BOUNDS[timer]
    text = repr(number)
    expected = (
        f"cluster 'c': <{timer}>: must be a number of seconds from {low:g} to {high:g}, "
        f"got {text!r}"
    )
    with pytest.raises(ConfigError) as from_file:
        parse_config(cluster_xml(timer, text))
    with pytest.raises(ConfigError) as from_admin:
        cluster_from_fields("c", {"address": "udp:127.0.0.1:22222", timer: text})
    assert str(from_file.value) == str(from_admin.value) == expected


@given(seconds_outside(*DRAIN_TIMEOUT_BOUNDS))
def test_a_drain_timeout_outside_its_bounds_is_refused_in_one_line(number: float) -> None:
    low, high = DRAIN_TIMEOUT_BOUNDS
    with pytest.raises(ValueError) as caught:
        drain_timeout(repr(number))
    assert str(caught.value) == (
        f"must be a number of seconds from {low:g} to {high:g}, got {repr(number)!r}"
    )


@given(st.floats(*DRAIN_TIMEOUT_BOUNDS))
def test_a_drain_timeout_within_its_bounds_is_taken(number: float) -> None:
    assert drain_timeout(repr(number)) == number


@given(st.one_of(IPV4, IPV6), st.none() | PORTS)
def test_ip_address_with_port_accepts_every_literal(ip: str, port: int | None) -> None:
    six = ipaddress.ip_address(ip).version == 6
    text = ip if port is None else (f"[{ip}]:{port}" if six else f"{ip}:{port}")
    assert values.ip_address_with_port(text) == text


@given(st.text(max_size=20))
def test_ip_address_rejects_whatever_ipaddress_rejects(text: str) -> None:
    try:
        ipaddress.ip_address(text.strip())
        valid = True
    except ValueError:
        valid = False
    try:
        values.ip_address(text)
        accepted = True
    except ValueError:
        accepted = False
    assert accepted == valid


@given(st.text(max_size=30))
def test_member_from_fields_raises_only_config_error(address: str) -> None:
    try:
        member_from_fields({"name": "m", "protocol": "udp", "address": address})
    except ConfigError as exc:
        assert "\n" not in str(exc)
