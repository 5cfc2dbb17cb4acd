"""Build models from element texts, turning every failure into a one-line ConfigError.

The XML reader and the admin commands (``modify <cluster> add k=v,...``,
``create <cluster> k=v,...``) share these builders, so a value means the same and fails
with the same message whichever way it arrives.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from rtpcluster.config import values
from rtpcluster.config.errors import ConfigError, ElementError, describe
from rtpcluster.config.models import (
    CapacityLimit,
    ClusterConfig,
    Config,
    DisconnectNotify,
    ListenOptions,
    MemberChanges,
    MemberConfig,
)
from rtpcluster.transport.endpoint import Endpoint, EndpointError, Kind

ModelT = TypeVar("ModelT", bound=BaseModel)

MEMBER_KEYS = tuple(MemberConfig.model_fields)
"""Keys of ``member_from_fields`` = element names inside ``<rtpproxy>``."""

CLUSTER_TIMERS = (
    "heartbeat_interval",
    "offline_probe_interval",
    "member_timeout",
    "new_call_budget",
    "session_idle_timeout",
    "slow_start",
    "flap_window",
    "hold_down",
    "hold_down_max",
)
"""The elements of ``<rtp_cluster>`` that hold seconds (see ``TIMER_BOUNDS``)."""
CLUSTER_COUNTS = ("rise", "fall", "flap_limit")
"""The elements of ``<rtp_cluster>`` that hold whole numbers (see ``COUNT_BOUNDS``)."""
CLUSTER_SETTINGS = (*CLUSTER_TIMERS, *CLUSTER_COUNTS)
"""Elements of ``<rtp_cluster>`` holding one number each, changeable without a restart."""
CLUSTER_KEYS = ("protocol", "address", "capacity_limit", *CLUSTER_SETTINGS)
"""Keys of ``cluster_from_fields``."""
MEMBER_CHANGE_KEYS = tuple(MemberChanges.model_fields)
"""Keys of ``member_changes_from_fields``: what ``modify <cluster> set`` may change."""


def validated(model: type[ModelT], data: Mapping[str, object], context: str) -> ModelT:
    """``model.model_validate(data)``, with a failure as ``ConfigError("<context>: ...")``."""
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(_join(context, describe(exc))) from None


def member_context(cluster_context: str, name: str | None, position: int | None = None) -> str:
    """``cluster 'c1', rtpproxy 'rp2'`` (or ``rtpproxy #2`` while its name is unknown)."""
    if name:
        return f"{cluster_context}, rtpproxy {name!r}"
    if position is not None:
        return f"{cluster_context}, rtpproxy #{position}"
    return f"{cluster_context}, new rtpproxy"


def member_from_fields(fields: Mapping[str, str], cluster: str = "?") -> MemberConfig:
    """A member from ``key -> text`` exactly as the ``<rtpproxy>`` element texts would be.

    Keys are the element names (``name``, ``protocol``, ``address``, ``weight`` ...);
    ``status`` defaults to ACTIVE. Raises ConfigError naming an unknown key.
    """
    context = member_context(f"cluster {cluster!r}", fields.get("name", "").strip() or None)
    for key in fields:
        if key not in MEMBER_KEYS:
            raise ConfigError(f"{context}: unknown key {key!r} (known: {', '.join(MEMBER_KEYS)})")
    return validated(MemberConfig, fields, context)


def member_changes_from_fields(
    fields: Mapping[str, str], cluster: str, member: str
) -> MemberChanges:
    """What ``modify <cluster> set <member> k=v,...`` changes, read like the elements.

    Raises ConfigError naming the cluster, member and element (or the unknown key).
    """
    context = member_context(f"cluster {cluster!r}", member)
    for key in fields:
        if key not in MEMBER_CHANGE_KEYS:
            known = ", ".join(MEMBER_CHANGE_KEYS)
            raise ConfigError(f"{context}: {key!r} cannot be set (settable: {known})")
    return validated(MemberChanges, fields, context)


def cluster_from_fields(name: str, fields: Mapping[str, str]) -> ClusterConfig:
    """A member-less cluster from ``key -> text``, for the admin ``create`` command.

    ``address`` is a full endpoint spec (``udp:127.0.0.1:22222``), or a bare address
    with ``protocol`` as in the XML; ``capacity_limit``, the timers and the counts
    (``rise``, ``fall``, ``flap_limit``) are optional.
    """
    context = f"cluster {name.strip()!r}"
    for key in fields:
        if key not in CLUSTER_KEYS:
            raise ConfigError(f"{context}: unknown key {key!r} (known: {', '.join(CLUSTER_KEYS)})")
    return build_cluster(
        context,
        name=name,
        protocol=fields.get("protocol"),
        address=fields.get("address"),
        listen=(),
        capacity_limit=fields.get("capacity_limit"),
        disconnect_notify=None,
        settings={key: fields[key] for key in CLUSTER_SETTINGS if key in fields},
        members=(),
    )


def build_cluster(
    context: str,
    *,
    name: str | None,
    protocol: str | None,
    address: str | None,
    listen: Sequence[str],
    capacity_limit: str | None,
    disconnect_notify: DisconnectNotify | None,
    settings: Mapping[str, str],
    members: Sequence[MemberConfig],
    listen_options: Mapping[str, ListenOptions] | None = None,
) -> ClusterConfig:
    """Assemble a cluster: ``protocol``+``address`` become the first listener.

    ``settings`` holds the texts of the timer and count elements (``CLUSTER_SETTINGS``);
    ``listen_options`` the attributes of ``<listen>`` elements, by their text.
    """
    try:
        endpoints = [_listener(text) for text in listen]
        primary = _primary_listener(protocol, address)
    except ElementError as exc:
        raise ConfigError(_join(context, str(exc))) from None
    data: dict[str, object] = {
        "listen": [primary, *endpoints] if primary else endpoints,
        "members": list(members),
        **settings,
    }
    if listen_options:
        data["listen_options"] = dict(listen_options)
    if name is not None:
        data["name"] = name
    if capacity_limit is not None:
        data["capacity_limit"] = capacity_limit
    if disconnect_notify is not None:
        data["disconnect_notify"] = disconnect_notify
    return validated(ClusterConfig, data, context)


def build_config(
    clusters: Sequence[ClusterConfig],
    http: str | None = None,
    session_store: str | None = None,
) -> Config:
    data: dict[str, object] = {"clusters": list(clusters), "http": http}
    if session_store is not None:
        data["session_store"] = session_store
    return validated(Config, data, "")


def capacity_limit_type(value: object) -> str:
    """Check a ``type`` attribute of ``<capacity_limit>``, returning it for the model."""
    try:
        return values.choice(value, CapacityLimit).value
    except ValueError as exc:
        raise ElementError("capacity_limit type", str(exc)) from None


def _primary_listener(protocol: str | None, address: str | None) -> Endpoint | None:
    """The listener the original format names with ``<protocol>`` and ``<address>``."""
    if address is None:
        if protocol is not None:
            raise ElementError("address", "missing required element (given <protocol>)")
        return None
    if protocol is None:  # a full spec such as udp:127.0.0.1:22222 (or a unix path)
        return _listener(address, element="address")
    try:
        kind = values.choice(protocol, Kind)
    except ValueError as exc:
        raise ElementError("protocol", str(exc)) from None
    try:
        return values.endpoint_of_kind(address, kind)
    except ValueError as exc:
        raise ElementError("address", str(exc)) from None


def _listener(text: str, element: str = "listen") -> Endpoint:
    try:
        return Endpoint.parse(text)
    except EndpointError as exc:
        raise ElementError(element, str(exc)) from None


def _join(context: str, message: str) -> str:
    return f"{context}: {message}" if context else message
