"""The XML configuration: typed models, reading, writing and admin-side builders."""

from rtpcluster.config.advice import config_warnings
from rtpcluster.config.build import (
    cluster_from_fields,
    member_changes_from_fields,
    member_from_fields,
)
from rtpcluster.config.errors import ConfigError
from rtpcluster.config.models import (
    CapacityLimit,
    ClusterConfig,
    Config,
    DisconnectNotify,
    ListenOptions,
    MemberChanges,
    MemberConfig,
    MemberProtocol,
    MemberStatus,
)
from rtpcluster.config.summary import summary
from rtpcluster.config.xmlfile import dump_config, load_config, parse_config, save_config

__all__ = [
    "CapacityLimit",
    "ClusterConfig",
    "Config",
    "ConfigError",
    "DisconnectNotify",
    "ListenOptions",
    "MemberChanges",
    "MemberConfig",
    "MemberProtocol",
    "MemberStatus",
    "cluster_from_fields",
    "config_warnings",
    "dump_config",
    "load_config",
    "member_changes_from_fields",
    "member_from_fields",
    "parse_config",
    "save_config",
    "summary",
]
