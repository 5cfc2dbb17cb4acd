"""A human-readable account of a configuration, for ``rtpcluster serve --check``."""

from __future__ import annotations

from rtpcluster.config.models import ClusterConfig, Config, MemberProtocol


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
        f"  listen: {', '.join(str(endpoint) for endpoint in cluster.listen)}",
        f"  capacity_limit: {cluster.capacity_limit.value}",
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
        )
    return lines
