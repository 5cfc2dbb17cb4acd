"""Settings that are valid but probably not what the operator wants: warnings, not errors.

``rtpcluster serve --check`` prints them and ``rtpcluster serve`` logs them at start, so a
timing that works against the SIP server's retransmits is seen before calls suffer.
"""

from __future__ import annotations

from rtpcluster.config.models import NEW_CALL_SHARE, SLOW_TIMER_WARNING, ClusterConfig, Config


def config_warnings(config: Config) -> list[str]:
    """One line per questionable setting, naming the cluster, the element and the value."""
    return [line for cluster in config.clusters for line in _cluster_warnings(cluster)]


def _cluster_warnings(cluster: ClusterConfig) -> list[str]:
    where = f"cluster {cluster.name!r}"
    retry = f"above {SLOW_TIMER_WARNING:g} s: SIP servers send a command again after 1 s"
    lines = []
    if cluster.member_timeout > SLOW_TIMER_WARNING:
        lines.append(
            f"{where}: <member_timeout>: {cluster.member_timeout:g} s is {retry}, "
            "so a member that does not answer is given up only after that"
        )
    budget = cluster.effective_new_call_budget
    if budget > SLOW_TIMER_WARNING:
        given = f"<new_call_budget>: {budget:g} s"
        if cluster.new_call_budget is None:
            given = f"new call budget {budget:g} s ({NEW_CALL_SHARE:.0%} of <member_timeout>)"
        lines.append(
            f"{where}: {given} is {retry}, so a new call on a silent member moves to "
            "another one only after that"
        )
    return lines
