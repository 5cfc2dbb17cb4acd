"""A human-readable account of a configuration, for ``rtpcluster serve --check``."""

from __future__ import annotations

from rtpcluster.config.models import NEW_CALL_SHARE, ClusterConfig, Config, MemberProtocol
from rtpcluster.transport.endpoint import Endpoint


def summary(config: Config) -> str:
    """Per cluster: name, listeners, policy and every member with its settings."""
    members = sum(len(cluster.members) for cluster in config.clusters)
    lines = [f"{len(config.clusters)} cluster(s), {members} rtpproxy member(s)"]
    for cluster in config.clusters:
        lines.extend(_cluster_lines(cluster))
    return "\n".join(lines) + "\n"


def _cluster_lines(cluster: ClusterConfig) -> list[str]:
    lines = [
        f"cluster {cluster.name}",
        f"  listen: {', '.join(_listener(cluster, endpoint) for endpoint in cluster.listen)}",
        f"  capacity_limit: {cluster.capacity_limit.value}",
        f"  member_timeout: {cluster.member_timeout:g} s, new call budget: "
        f"{cluster.effective_new_call_budget:g} s"
        + ("" if cluster.new_call_budget is not None else f" ({NEW_CALL_SHARE:.0%} of it)"),
        f"  health: rise {cluster.rise}, fall {cluster.fall}, {_damping(cluster)}",
        f"  slow_start: {f'{cluster.slow_start:g} s' if cluster.slow_start else 'off'}",
    ]
    if cluster.disconnect_notify is not None:
        notify = cluster.disconnect_notify
        lines.append(
            f"  disconnect_notify: {notify.inbound_address} -> {notify.dest_socket_prefix}*"
        )
    if not cluster.members:
        lines.append("  no rtpproxies")
    for member in cluster.members:
        embedded = member.protocol is MemberProtocol.EMBEDDED
        address = str(member.address) if embedded else member.address.address
        lines.append(
            f"  rtpproxy {member.name}: {member.protocol.value} {address} "
            f"weight={member.weight} capacity={member.capacity} status={member.status.value}"
            + (" backup=yes" if member.backup else "")
        )
    return lines


def _listener(cluster: ClusterConfig, endpoint: Endpoint) -> str:
    """``unix:/run/x.sock (mode 0660, owner a:b)``: the endpoint and its attributes."""
    options = cluster.listen_options.get(str(endpoint))
    if options is None:
        return str(endpoint)
    shown = {**dict(options), "mode": None if options.mode is None else f"{options.mode:04o}"}
    given = [f"{key} {value}" for key, value in shown.items() if value is not None]
    return f"{endpoint} ({', '.join(given)})"


def _damping(cluster: ClusterConfig) -> str:
    """``flap damping 5 in 60 s, hold down 10 s doubling to 300 s`` (or ``... off``)."""
    if not cluster.flap_limit:
        return "flap damping off"
    return (
        f"flap damping {cluster.flap_limit} in {cluster.flap_window:g} s, "
        f"hold down {cluster.hold_down:g} s doubling to {cluster.hold_down_max:g} s"
    )
