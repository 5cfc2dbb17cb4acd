"""Read and write the XML configuration file (the original RTP Cluster's format).

Reading goes through xmltodict into plain dicts, then element by element into the
builders, so every problem is reported with the cluster, member and element it concerns.
Unknown elements are refused: a misspelt ``<wieght>`` would otherwise be a silent default.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from xml.parsers import expat

import xmltodict
from pydantic import ValidationError

from rtpcluster.config.build import (
    CLUSTER_SETTINGS,
    CLUSTER_TIMERS,
    MEMBER_KEYS,
    build_cluster,
    build_config,
    capacity_limit_type,
    member_context,
    validated,
)
from rtpcluster.config.errors import ConfigError, ElementError, describe
from rtpcluster.config.models import (
    CapacityLimit,
    ClusterConfig,
    Config,
    DisconnectNotify,
    ListenOptions,
    MemberConfig,
    MemberProtocol,
)
from rtpcluster.transport.endpoint import Endpoint, Kind

ROOT = "rtp_cluster_config"
_REPEATED = ("rtp_cluster", "rtpproxy", "listen")
_CLUSTER_ELEMENTS = (
    "name",
    "protocol",
    "address",
    "listen",
    "capacity_limit",
    "disconnect_notify",
    *CLUSTER_SETTINGS,
    "rtpproxy",
)
_NOTIFY_ELEMENTS = ("inbound_address", "dest_socket_prefix", "key_file")
_SETTING_DEFAULTS = {name: ClusterConfig.model_fields[name].default for name in CLUSTER_SETTINGS}


def parse_config(text: str | bytes, source: str = "<config>") -> Config:
    """Parse the XML text of a configuration; ``source`` names it in syntax errors."""
    try:
        document = xmltodict.parse(text, force_list=_REPEATED, disable_entities=True)
    except expat.ExpatError as exc:
        reason = expat.ErrorString(exc.code)
        raise ConfigError(
            f"{source}:{exc.lineno}:{exc.offset + 1}: malformed XML: {reason}"
        ) from None
    except ValueError as exc:  # xmltodict refuses entity declarations
        raise ConfigError(f"{source}: XML refused: {exc}") from None
    root = next(iter(document))
    if root != ROOT:
        raise ConfigError(f"{source}: root element is <{root}>, expected <{ROOT}>")
    try:
        top = _children(document[root], ROOT, ("rtp_cluster", "http", "session_store"))
        http = _text(top["http"], "http") if "http" in top else None
        session_store = None
        if "session_store" in top:
            session_store = _text(top["session_store"], "session_store")
    except ElementError as exc:
        raise ConfigError(str(exc)) from None
    clusters = [
        _cluster(node, position) for position, node in enumerate(top.get("rtp_cluster", []), 1)
    ]
    return build_config(clusters, http, session_store)


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and parse a configuration file."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{os.fspath(path)}: cannot read: {exc.strerror or exc}") from None
    return parse_config(data, source=os.fspath(path))


def dump_config(config: Config) -> str:
    """The configuration as XML that :func:`parse_config` reads back to an equal Config.

    Elements of the original format are always written; our additions only when they
    differ from their defaults, so a plain cluster stays readable by the original.
    """
    top: dict[str, object] = {}
    if config.http is not None:
        top["http"] = config.http.address
    if config.session_store != Config.model_fields["session_store"].default:
        top["session_store"] = config.session_store
    top["rtp_cluster"] = [_cluster_tree(cluster) for cluster in config.clusters]
    document = {ROOT: top}
    xml: str = xmltodict.unparse(document, pretty=True, indent="  ", short_empty_elements=True)
    return xml + "\n"


def save_config(config: Config, path: str | os.PathLike[str]) -> None:
    """Write the configuration atomically: a reader sees the old file or the new one."""
    target = Path(path)
    text = dump_config(config).encode("utf-8")
    try:
        mode = target.stat().st_mode & 0o7777
    except OSError:
        mode = 0o644
    try:
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    except OSError as exc:
        raise ConfigError(f"{target}: cannot write: {exc.strerror or exc}") from None
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, target)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise ConfigError(f"{target}: cannot write: {exc.strerror or exc}") from None


# --- reading ---------------------------------------------------------------------------


def _cluster(node: object, position: int) -> ClusterConfig:
    name = _peek_name(node)
    context = f"cluster {name!r}" if name else f"cluster #{position}"
    try:
        children = _children(node, "rtp_cluster", _CLUSTER_ELEMENTS)
        scalars = {
            key: _text(children[key], key)
            for key in ("name", "protocol", "address", *CLUSTER_SETTINGS)
            if key in children
        }
        listen_elements = [_listen(item) for item in children.get("listen", [])]
        listen = [text for text, _ in listen_elements]
        listen_options = {text: options for text, options in listen_elements if options}
        capacity_limit = None
        if "capacity_limit" in children:
            capacity_limit = _capacity_limit(children["capacity_limit"])
    except ElementError as exc:
        raise ConfigError(f"{context}: {exc}") from None
    notify = None
    if "disconnect_notify" in children:
        notify = _disconnect_notify(children["disconnect_notify"], context)
    members = [
        _member(item, context, index) for index, item in enumerate(children.get("rtpproxy", []), 1)
    ]
    return build_cluster(
        context,
        name=scalars.get("name"),
        protocol=scalars.get("protocol"),
        address=scalars.get("address"),
        listen=listen,
        capacity_limit=capacity_limit,
        disconnect_notify=notify,
        settings={key: scalars[key] for key in CLUSTER_SETTINGS if key in scalars},
        members=members,
        listen_options=listen_options,
    )


def _member(node: object, cluster_context: str, position: int) -> MemberConfig:
    context = member_context(cluster_context, _peek_name(node), position)
    try:
        children = _children(node, "rtpproxy", MEMBER_KEYS)
        texts = {key: _text(value, key) for key, value in children.items()}
    except ElementError as exc:
        raise ConfigError(f"{context}: {exc}") from None
    return validated(MemberConfig, texts, context)


def _disconnect_notify(node: object, cluster_context: str) -> DisconnectNotify:
    context = f"{cluster_context}, disconnect_notify"
    try:
        children = _children(node, "disconnect_notify", _NOTIFY_ELEMENTS)
        texts = {key: _text(value, key) for key, value in children.items()}
    except ElementError as exc:
        raise ConfigError(f"{context}: {exc}") from None
    return validated(DisconnectNotify, texts, context)


def _listen(node: object) -> tuple[str, ListenOptions | None]:
    """A ``<listen>``: its endpoint text and its attributes (None without any)."""
    if not isinstance(node, Mapping):
        return _text(node, "listen"), None
    attributes: dict[str, str] = {}
    for key, value in node.items():
        if key == "#text":
            continue
        if not key.startswith("@"):
            raise ElementError("listen", "expected text only, got child elements")
        if key[1:] not in ListenOptions.model_fields:
            known = ", ".join(ListenOptions.model_fields)
            raise ElementError("listen", f"unknown attribute {key[1:]!r} (known: {known})")
        attributes[key[1:]] = value
    try:
        options = ListenOptions.model_validate(attributes)
    except ValidationError as exc:
        attribute, _, message = describe(exc).partition(">: ")
        raise ElementError(f"listen {attribute.lstrip('<')}", message) from None
    return _text(node.get("#text"), "listen"), options


def _capacity_limit(node: object) -> str:
    if not isinstance(node, Mapping) or set(node) != {"@type"}:
        raise ElementError("capacity_limit", 'expected <capacity_limit type="soft|hard"/>')
    return capacity_limit_type(node["@type"])


def _children(node: object, element: str, allowed: tuple[str, ...]) -> Mapping[str, Any]:
    """The child elements of a container element, refusing text, attributes and strangers."""
    if node is None:
        return {}
    if not isinstance(node, Mapping):
        raise ElementError(element, f"expected child elements, got text {node!r}")
    for key in node:
        if key.startswith("@"):
            raise ElementError(element, f"unexpected attribute {key[1:]!r}")
        if key == "#text":
            raise ElementError(element, f"unexpected text {node[key]!r}")
        if key not in allowed:
            raise ElementError(key, "unknown element")
    return node


def _text(node: object, element: str) -> str:
    """The text of a leaf element given once; an empty element is ``""``."""
    if node is None:
        return ""
    if isinstance(node, str):
        return node
    if isinstance(node, list):
        raise ElementError(element, f"given {len(node)} times, expected once")
    raise ElementError(element, "expected text only, got attributes or child elements")


def _peek_name(node: object) -> str | None:
    """The ``<name>`` text of a container, if readable, to name it in error messages."""
    if isinstance(node, Mapping) and isinstance(node.get("name"), str):
        return str(node["name"]).strip() or None
    return None


# --- writing ---------------------------------------------------------------------------


def _cluster_tree(cluster: ClusterConfig) -> dict[str, object]:
    first, *others = cluster.listen
    tree: dict[str, object] = {"name": cluster.name}
    if str(first) in cluster.listen_options:
        others = cluster.listen  # <protocol>/<address> take no attributes: all are <listen>
    else:
        tree.update(protocol=first.kind.value, address=first.address)
    if others:
        tree["listen"] = [_listen_tree(endpoint, cluster.listen_options) for endpoint in others]
    tree["capacity_limit"] = {"@type": CapacityLimit(cluster.capacity_limit).value}
    if cluster.disconnect_notify is not None:
        inbound = cluster.disconnect_notify.inbound_address
        notify = {
            "inbound_address": inbound.address if inbound.kind is Kind.TCP else str(inbound),
            "dest_socket_prefix": cluster.disconnect_notify.dest_socket_prefix,
        }
        if cluster.disconnect_notify.key_file is not None:
            notify["key_file"] = cluster.disconnect_notify.key_file
        tree["disconnect_notify"] = notify
    for key, default in _SETTING_DEFAULTS.items():
        value = getattr(cluster, key)
        if value != default:
            tree[key] = repr(value) if key in CLUSTER_TIMERS else str(value)
    if cluster.members:
        tree["rtpproxy"] = [_member_tree(member) for member in cluster.members]
    return tree


def _listen_tree(endpoint: Endpoint, options: Mapping[str, ListenOptions]) -> object:
    given = options.get(str(endpoint))
    if given is None:
        return str(endpoint)
    tree = {f"@{key}": str(value) for key, value in given if value is not None}
    if given.mode is not None:
        tree["@mode"] = f"{given.mode:04o}"
    if given.idle_timeout is not None:
        tree["@idle_timeout"] = repr(given.idle_timeout)
    tree["#text"] = str(endpoint)
    return tree


def _member_tree(member: MemberConfig) -> dict[str, str]:
    embedded = member.protocol is MemberProtocol.EMBEDDED
    tree = {
        "name": member.name,
        "protocol": member.protocol.value,
        "address": str(member.address) if embedded else member.address.address,
        "weight": str(member.weight),
        "capacity": str(member.capacity),
        "status": member.status.value,
    }
    optional = {
        "wan_address": member.wan_address,
        "lan_address": member.lan_address,
        "cmd_out_address": member.cmd_out_address,
        "rtp_port_min": member.rtp_port_min,
        "rtp_port_max": member.rtp_port_max,
    }
    tree.update({key: str(value) for key, value in optional.items() if value is not None})
    if member.backup:
        tree["backup"] = "yes"
    return tree
