"""Typed, immutable model of the cluster configuration.

Every field validator also accepts the text form of its value (``"100"``, ``"active"``,
``"127.0.0.1:5000"``), so the XML reader and the admin ``modify ... add k=v`` command
both feed element texts straight in and get the same normalisation and messages.
Models are frozen: derive changed copies with ``model_copy(update=...)`` and typed
values (``model_copy`` does not validate).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from rtpcluster.config import values
from rtpcluster.endpoint import Endpoint, Kind
from rtpcluster.store.url import StoreUrlError, parse_store_url

EndpointValue = Annotated[
    Endpoint,
    PlainValidator(values.endpoint),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "examples": ["udp:127.0.0.1:22222"]}),
]
"""An Endpoint field: given as an Endpoint or as ``kind:address`` text, dumped as text."""


TIMER_BOUNDS: Mapping[str, tuple[float, float]] = {
    # An online member answers one ``Ib`` per interval. Below 0.1 s (10 a second per
    # member) the load figures get no fresher, as they change with call set-up, and a
    # tiny value keeps a core busy with heartbeats; above 60 s a dead member that carries
    # no calls is noticed minutes late, and a drain waits minutes for the two heartbeats
    # without a session that end it.
    "heartbeat_interval": (0.1, 60.0),
    # An offline member is probed (``V``, then ``VF``) once per interval: 0.1 s bounds
    # that to 10 probes a second per member; above 60 s a member back from a restart
    # waits more than a minute before it takes calls again.
    "offline_probe_interval": (0.1, 60.0),
    # The budget of one command to a member, retransmits included. The member client's
    # timer ticks every 10 ms and its first retransmit is due after 30 ms at the
    # earliest: below 50 ms a lost datagram is never sent again. Above 10 s a SIP
    # server has long given up (Kamailio: 5 tries of 1 s by default) while its
    # transaction and our reply-cache entry wait.
    "member_timeout": (0.05, 10.0),
    # A call-id with no command for this long is forgotten (a later command for it
    # asks every member). Below 60 s, RTPproxy's own default session lifetime, calls
    # between re-INVITEs would be forgotten all the time; above a day the table keeps
    # calls that every member has long dropped.
    "session_idle_timeout": (60.0, 86400.0),
    # How long a new call waits on the member it was placed on before it is placed on
    # another one. The same floor as member_timeout (a lost datagram must be resent at
    # least once); it must also stay below member_timeout (checked with it, below).
    "new_call_budget": (0.05, 10.0),
    # Slow start: 0 is off. Above an hour a recovered member would stay under-used
    # through a whole busy hour, and by then its heartbeat load figures steer it anyway.
    "slow_start": (0.0, 3600.0),
    # Flap damping. A flap (out, then back) takes at least fall heartbeats and rise
    # probes: below 1 s no member can flap twice in a window. Above an hour a member
    # its operator restarts a few times a day would be held down.
    "flap_window": (1.0, 3600.0),
    # The first hold-down. Below 1 s it holds nothing (an offline member is probed only
    # every offline_probe_interval, 2 s by default); above an hour a member that was
    # fixed waits for an operator.
    "hold_down": (1.0, 3600.0),
    # Where the doubling hold-down stops (not below hold_down, checked below): a day.
    "hold_down_max": (1.0, 86400.0),
}
"""Lowest and highest accepted value, in seconds, of each timer of ``<rtp_cluster>``."""

COUNT_BOUNDS: Mapping[str, tuple[int, int]] = {
    # Good heartbeats (probes, for an offline member) in a row before a member that was
    # taken out takes calls again. More than ten is better left to the flap damping.
    "rise": (1, 10),
    # Failed heartbeats or commands in a row before an online member is taken out. 1
    # takes it out for one lost answer; above ten a dead member without traffic stays
    # listed online for over ten heartbeat intervals.
    "fall": (1, 10),
    # Times out within flap_window that hold a member down; 0 turns damping off. Past
    # 100 in one window it would never trigger at the timers' own bounds.
    "flap_limit": (0, 100),
}
"""Lowest and highest accepted value of each whole-number setting of ``<rtp_cluster>``."""

NEW_CALL_SHARE = 0.6
"""Without ``<new_call_budget>``, a new call waits this share of ``member_timeout`` on
one member (0.3 s of the default 0.5 s) before it is placed on another."""

SLOW_TIMER_WARNING = 0.9
"""Seconds of member_timeout or new-call budget above which ``--check`` and the log warn.

Kamailio's and OpenSIPS's rtpproxy modules send a command again after 1 s without an
answer (``rtpproxy_tout``). A member wait close to that leaves the first copy too little
time to fail over and answer before the second one arrives, and a new call whose budget
runs past it is answered after the SIP server has already sent it again."""

DRAIN_TIMEOUT_BOUNDS = (0.0, 86400.0)
"""``modify <cluster> delete <member> timeout=S``: 0 removes it at the next upkeep
(about a second); a drain meant to last longer than a day is one without a timeout."""


def drain_timeout(value: object) -> float | None:
    """The ``timeout=`` of ``modify <cluster> delete``: not given, or seconds in bounds."""
    return None if value is None else values.seconds(value, *DRAIN_TIMEOUT_BOUNDS)


class MemberStatus(StrEnum):
    ACTIVE = "ACTIVE"
    SUSPENDED = "SUSPENDED"
    DRAINING = "DRAINING"  # takes no new calls; removed once its calls are gone


class CapacityLimit(StrEnum):
    SOFT = "soft"  # all members full: place the call on the least loaded one anyway
    HARD = "hard"  # all members full: refuse the call (E998)


class MemberProtocol(StrEnum):
    UDP = "udp"
    UDP6 = "udp6"
    UNIX = "unix"
    CUNIX = "cunix"
    TCP = "tcp"
    TCP6 = "tcp6"
    EMBEDDED = "embedded"  # an RTPproxy run in-process (rtp-io); address is its listener


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MemberConfig(_Frozen):
    """One ``<rtpproxy>``: a member RTPproxy and how to reach it."""

    name: str
    protocol: MemberProtocol
    address: EndpointValue
    weight: int = 100
    capacity: int = 4000
    status: MemberStatus = MemberStatus.ACTIVE
    wan_address: str | None = None
    lan_address: str | None = None
    cmd_out_address: str | None = None
    rtp_port_min: int | None = None
    rtp_port_max: int | None = None
    backup: bool = False  # takes new calls only when no other member can

    _name = field_validator("name", mode="before")(values.name)
    _weight = field_validator("weight", "capacity", mode="before")(values.positive_integer)
    _backup = field_validator("backup", mode="before")(values.yes_no)

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol(cls, value: object) -> MemberProtocol:
        return values.choice(value, MemberProtocol)

    @field_validator("status", mode="before")
    @classmethod
    def _status(cls, value: object) -> MemberStatus:
        return values.choice(value, MemberStatus)

    @field_validator("address", mode="before")
    @classmethod
    def _address(cls, value: object, info: ValidationInfo) -> Endpoint:
        protocol = info.data.get("protocol")
        if protocol is None:  # its own error is reported first
            raise ValueError("cannot be read without a valid <protocol>")
        if protocol is not MemberProtocol.EMBEDDED:
            return values.endpoint_of_kind(value, Kind(protocol.value))
        if isinstance(value, str) and not values.has_kind_prefix(value):
            raise ValueError(
                f"an embedded RTPproxy's address needs its kind, "
                f"e.g. udp:127.0.0.1:22301, got {value!r}"
            )
        return values.endpoint(value)

    @field_validator("wan_address", "lan_address", mode="before")
    @classmethod
    def _ip(cls, value: object) -> str | None:
        given = values.optional(value)
        return None if given is None else values.ip_address(given)

    @field_validator("cmd_out_address", mode="before")
    @classmethod
    def _ip_port(cls, value: object) -> str | None:
        given = values.optional(value)
        return None if given is None else values.ip_address_with_port(given)

    @field_validator("rtp_port_min", "rtp_port_max", mode="before")
    @classmethod
    def _port(cls, value: object) -> int | None:
        given = values.optional(value)
        return None if given is None else values.port_number(given)

    @model_validator(mode="after")
    def _port_range(self) -> MemberConfig:
        given = [port for port in (self.rtp_port_min, self.rtp_port_max) if port is not None]
        if given and self.protocol is not MemberProtocol.EMBEDDED:
            element = "rtp_port_min" if self.rtp_port_min is not None else "rtp_port_max"
            raise ValueError(f"<{element}>: only allowed with protocol embedded")
        if len(given) == 2 and given[0] > given[1]:
            raise ValueError(
                f"<rtp_port_min>: must not be above <rtp_port_max> {given[1]}, got {given[0]}"
            )
        return self


class MemberChanges(_Frozen):
    """``modify <cluster> set <member> weight=N,capacity=M,backup=yes|no``: what to change.

    Exactly these three settings can change on a running member without touching its
    connection or its calls; a field left None stays as it is. Values are read like the
    ``<rtpproxy>`` elements of the same name.
    """

    weight: int | None = None
    capacity: int | None = None
    backup: bool | None = None

    @field_validator("weight", "capacity", mode="before")
    @classmethod
    def _positive(cls, value: object) -> int | None:
        return None if value is None else values.positive_integer(value)

    @field_validator("backup", mode="before")
    @classmethod
    def _backup(cls, value: object) -> bool | None:
        return None if value is None else values.yes_no(value)

    @model_validator(mode="after")
    def _something(self) -> MemberChanges:
        if self.weight is None and self.capacity is None and self.backup is None:
            raise ValueError("nothing to change: give weight, capacity or backup")
        return self

    def given(self) -> dict[str, object]:
        """The fields to change, by name (those left None are not in it)."""
        return {key: value for key, value in self if value is not None}

    def apply(self, member: MemberConfig) -> MemberConfig:
        """``member`` with these changes; the same object when nothing differs."""
        changed = {k: v for k, v in self.given().items() if getattr(member, k) != v}
        return member.model_copy(update=changed) if changed else member


class DisconnectNotify(_Frozen):
    """``<disconnect_notify>``: relay RTPproxy's session-timeout notifications.

    Members connect to ``inbound_address`` (TCP); each notification is written to the
    unix socket ``dest_socket_prefix`` + the suffix the SIP server asked for. Tags are
    signed with a key of this process, or the one kept in ``key_file`` so that calls set
    up before a restart are still notified.
    """

    inbound_address: EndpointValue
    dest_socket_prefix: str
    key_file: str | None = None

    @field_validator("dest_socket_prefix", "key_file", mode="before")
    @classmethod
    def _absolute_path(cls, value: object) -> str:
        path = values.text(value)
        if not path.startswith("/"):
            raise ValueError(f"must be an absolute path, got {path!r}")
        return path

    @field_validator("inbound_address", mode="before")
    @classmethod
    def _inbound(cls, value: object) -> Endpoint:
        endpoint = values.endpoint_with_port(value, Kind.TCP)
        if endpoint.kind not in (Kind.TCP, Kind.TCP6):
            raise ValueError(f"must be a TCP address host:port, got {str(endpoint)!r}")
        return endpoint


class ListenOptions(_Frozen):
    """The attributes of a ``<listen>``; None keeps the listener's default.

    ``mode`` and ``owner`` (unix/cunix) decide who may connect; ``max_connections``
    and ``idle_timeout`` (every stream kind) bound what connections may hold.
    """

    mode: int | None = None
    owner: str | None = None
    max_connections: int | None = None
    idle_timeout: float | None = None

    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, value: object) -> int | None:
        given = values.optional(value)
        return None if given is None else values.file_mode(given)

    @field_validator("owner", mode="before")
    @classmethod
    def _owner(cls, value: object) -> str | None:
        given = values.optional(value)
        return None if given is None else values.socket_owner(given)

    @field_validator("max_connections", mode="before")
    @classmethod
    def _max_connections(cls, value: object) -> int | None:
        given = values.optional(value)
        if given is None:
            return None
        return int(values.bounded(values.positive_integer(given), 1, 65536, value))

    @field_validator("idle_timeout", mode="before")
    @classmethod
    def _idle_timeout(cls, value: object) -> float | None:
        given = values.optional(value)
        return None if given is None else values.seconds(given, 1, 86400)


class ClusterConfig(_Frozen):
    """One ``<rtp_cluster>``: its control sockets, policy, timers and members."""

    name: str
    listen: list[EndpointValue]
    capacity_limit: CapacityLimit = CapacityLimit.SOFT
    disconnect_notify: DisconnectNotify | None = None
    members: list[MemberConfig] = Field(default_factory=list)
    heartbeat_interval: float = 1.0
    offline_probe_interval: float = 2.0
    member_timeout: float = 0.5  # budget of one command to a member, retransmits included
    session_idle_timeout: float = 3600.0  # forget a call-id with no command for this long
    # How long a new call waits on one member before it is placed on another; None:
    # NEW_CALL_SHARE of member_timeout (see effective_new_call_budget).
    new_call_budget: float | None = None
    rise: int = 2  # good answers in a row before a member taken out takes calls again
    fall: int = 2  # failures in a row (heartbeats or commands) that take a member out
    slow_start: float = 0.0  # seconds over which a member back online ramps up; 0: off
    # Flap damping: a member taken out flap_limit times within flap_window seconds is
    # held out for hold_down seconds, doubled at each further hold up to hold_down_max.
    # 5 in 60 s: at the default timers one flap takes at least about 3.5 s (2 failed
    # heartbeats to go, 2 probes a heartbeat apart to come back), so 5 in a minute is a
    # member failing every 12 s or faster, while a restart or a network blip (one or two
    # flaps) is never held.
    # 10 s doubling to 5 min: 10, 20, 40, 80, 160, 300 s: a hopeless member costs a few
    # failed commands per 5 minutes; a repaired one is back within 5 minutes unaided.
    flap_limit: int = 5
    flap_window: float = 60.0
    hold_down: float = 10.0
    hold_down_max: float = 300.0
    # <listen> attributes by str(endpoint); listeners without any are left out.
    listen_options: dict[str, ListenOptions] = Field(default_factory=dict)

    _name = field_validator("name", mode="before")(values.name)

    @field_validator(*TIMER_BOUNDS, mode="before")
    @classmethod
    def _timer(cls, value: object, info: ValidationInfo) -> float | None:
        assert info.field_name is not None
        if info.field_name == "new_call_budget" and values.optional(value) is None:
            return None  # <new_call_budget/>: the share of member_timeout
        return values.seconds(value, *TIMER_BOUNDS[info.field_name])

    @field_validator(*COUNT_BOUNDS, mode="before")
    @classmethod
    def _count(cls, value: object, info: ValidationInfo) -> int:
        assert info.field_name is not None
        return values.count(value, *COUNT_BOUNDS[info.field_name])

    @property
    def effective_new_call_budget(self) -> float:
        """Seconds a new call waits on one member: the budget given, or its default."""
        if self.new_call_budget is not None:
            return self.new_call_budget
        return self.member_timeout * NEW_CALL_SHARE

    @field_validator("capacity_limit", mode="before")
    @classmethod
    def _capacity_limit(cls, value: object) -> CapacityLimit:
        return values.choice(value, CapacityLimit)

    @field_validator("listen_options", mode="after")
    @classmethod
    def _listen_options(cls, value: dict[str, ListenOptions]) -> dict[str, ListenOptions]:
        """Keyed by the endpoint's own text; a listener without attributes has no entry."""
        return {str(values.endpoint(k)): v for k, v in value.items() if v != ListenOptions()}

    @model_validator(mode="after")
    def _consistent(self) -> ClusterConfig:
        if not self.listen:
            raise ValueError("no control socket: give <protocol> and <address>, or a <listen>")
        seen: set[tuple[str, ...]] = set()
        for endpoint in self.listen:
            if _socket_key(endpoint) in seen:
                raise ValueError(f"<listen>: duplicate endpoint {str(endpoint)!r}")
            seen.add(_socket_key(endpoint))
        _check_listen_options(self.listen, self.listen_options)
        if self.new_call_budget is not None and self.new_call_budget >= self.member_timeout:
            raise ValueError(
                f"<new_call_budget>: must be below <member_timeout> {self.member_timeout:g}, "
                f"got {self.new_call_budget:g}"
            )
        if self.hold_down_max < self.hold_down:
            raise ValueError(
                f"<hold_down_max>: must not be below <hold_down> {self.hold_down:g}, "
                f"got {self.hold_down_max:g}"
            )
        names: set[str] = set()
        for member in self.members:
            if member.name in names:
                raise ValueError(f"duplicate rtpproxy name {member.name!r}")
            names.add(member.name)
        addresses: dict[tuple[str, ...], MemberConfig] = {}
        for member in self.members:
            first = addresses.setdefault(_member_socket_key(member.address), member)
            if first is not member:
                raise ValueError(
                    f"rtpproxy {member.name!r}: <address>: {address_text(member)!r} "
                    f"is already the address of rtpproxy {first.name!r}"
                )
        return self


def http_endpoint(value: object) -> Endpoint:
    """``<http>`` / ``--http``: ``HOST:PORT`` or ``[V6]:PORT`` of the HTTP endpoint."""
    text = value.strip() if isinstance(value, str) else value
    ipv6 = isinstance(text, str) and (text.startswith("[") or text.count(":") > 1)
    endpoint = values.endpoint_with_port(text, Kind.TCP6 if ipv6 else Kind.TCP)
    if endpoint.kind not in (Kind.TCP, Kind.TCP6) or not str(text).endswith(str(endpoint.port)):
        # the second: a bare IPv6 address such as ::1 reads as one without a port
        raise ValueError(f"must be host:port, got {text!r}")
    if endpoint.host == "*":
        raise ValueError("use 0.0.0.0 or [::] to listen on every address, not *")
    return endpoint


class Config(_Frozen):
    """The whole ``<rtp_cluster_config>``."""

    clusters: list[ClusterConfig]
    http: EndpointValue | None = None  # <http>HOST:PORT</http>: the HTTP endpoint, off if unset
    session_store: str = "memory"  # <session_store>: memory, redis://, rediss://, unix://

    @field_validator("http", mode="before")
    @classmethod
    def _http(cls, value: object) -> Endpoint | None:
        given = values.optional(value)
        return None if given is None else http_endpoint(given)

    @field_validator("session_store", mode="before")
    @classmethod
    def _session_store(cls, value: object) -> str:
        try:
            return parse_store_url(values.text(value)).render()
        except StoreUrlError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _unique(self) -> Config:
        names: set[str] = set()
        owners: dict[tuple[str, ...], str] = {}
        for cluster in self.clusters:
            if cluster.name in names:
                raise ValueError(f"duplicate cluster name {cluster.name!r}")
            names.add(cluster.name)
            for endpoint in cluster.listen:
                owner = owners.setdefault(_socket_key(endpoint), cluster.name)
                if owner != cluster.name:
                    raise ValueError(
                        f"cluster {cluster.name!r}: <listen>: endpoint {str(endpoint)!r} "
                        f"is already used by cluster {owner!r}"
                    )
        return self


def address_text(member: MemberConfig) -> str:
    """A member's address as its ``<address>`` element holds it."""
    if member.protocol is MemberProtocol.EMBEDDED:
        return str(member.address)
    return member.address.address


def same_socket(one: Endpoint, other: Endpoint) -> bool:
    """Whether two listeners would bind the same socket."""
    return _socket_key(one) == _socket_key(other)


def _member_socket_key(endpoint: Endpoint) -> tuple[str, ...]:
    """Two member addresses that name one control socket, as written (not resolved)."""
    if endpoint.kind.is_path:
        return ("path", os.path.normpath(endpoint.path))
    return (endpoint.kind.value, endpoint.host.lower(), str(endpoint.port))


def _check_listen_options(listen: list[Endpoint], options: dict[str, ListenOptions]) -> None:
    kinds = {str(endpoint): endpoint.kind for endpoint in listen}
    for spec, given in options.items():
        kind = kinds.get(spec)
        if kind is None:
            raise ValueError(f"<listen> attributes for {spec!r}, which is not a listener")
        if kind.is_datagram and given != ListenOptions():
            raise ValueError(f"<listen> {spec}: attributes are only for stream sockets")
        if not kind.is_path and (given.mode is not None or given.owner is not None):
            raise ValueError(f"<listen> {spec}: mode and owner are only for unix: and cunix:")


def _socket_key(endpoint: Endpoint) -> tuple[str, ...]:
    """What two listeners must not share: a filesystem path, or kind+host+port."""
    if endpoint.kind.is_path:
        return ("path", endpoint.path)
    return (endpoint.kind.value, endpoint.host, str(endpoint.port))
