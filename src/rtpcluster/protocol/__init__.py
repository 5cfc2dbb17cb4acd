"""Sans-I/O RTPproxy control protocol: commands, replies, cookies, framing, stats.

Pure functions and small classes; no sockets, no trio, nothing else of ours.
"""

from rtpcluster.protocol.capabilities import (
    BASE_CAPABILITIES,
    CAP_MULTI_STREAM,
    CAP_NOTIFY,
    CAP_SUBCOMMANDS,
    CAP_WILDCARD_NOTIFY,
    PROTOCOL_VERSION,
)
from rtpcluster.protocol.command import Command, parse_command, split_ul_modifiers
from rtpcluster.protocol.cookie import (
    MAX_COOKIE_BYTES,
    MAX_DATAGRAM_BYTES,
    join_cookie,
    split_cookie,
)
from rtpcluster.protocol.errors import (
    E_BROADCAST,
    E_INFO_MODIFIERS,
    E_INTERNAL,
    E_MEMBER_TIMEOUT,
    E_MODIFIERS,
    E_NARGS,
    E_NO_MEMBER,
    E_NO_PICK,
    E_SESSION_UNKNOWN,
    E_STATS_MODIFIERS,
    E_STATS_NONE,
    E_SUBCOMMAND,
    E_SYNTAX,
    E_UNKNOWN_COMMAND,
    MAX_COMMAND_BYTES,
    ProtocolError,
    error_reply,
)
from rtpcluster.protocol.framing import LineFramer, ReplyAssembler, reply_lines
from rtpcluster.protocol.reply import (
    ULReply,
    error_code,
    is_error,
    is_positive,
    parse_ul_reply,
    rewrite_ul_address,
)
from rtpcluster.protocol.stats import (
    INFO_FIELDS,
    format_info_reply,
    format_stats_reply,
    merge_stats,
    parse_info_reply,
    parse_stats_reply,
)

__all__ = [
    "BASE_CAPABILITIES",
    "CAP_MULTI_STREAM",
    "CAP_NOTIFY",
    "CAP_SUBCOMMANDS",
    "CAP_WILDCARD_NOTIFY",
    "E_BROADCAST",
    "E_INFO_MODIFIERS",
    "E_INTERNAL",
    "E_MEMBER_TIMEOUT",
    "E_MODIFIERS",
    "E_NARGS",
    "E_NO_MEMBER",
    "E_NO_PICK",
    "E_SESSION_UNKNOWN",
    "E_STATS_MODIFIERS",
    "E_STATS_NONE",
    "E_SUBCOMMAND",
    "E_SYNTAX",
    "E_UNKNOWN_COMMAND",
    "INFO_FIELDS",
    "MAX_COMMAND_BYTES",
    "MAX_COOKIE_BYTES",
    "MAX_DATAGRAM_BYTES",
    "PROTOCOL_VERSION",
    "Command",
    "LineFramer",
    "ProtocolError",
    "ReplyAssembler",
    "ULReply",
    "error_code",
    "error_reply",
    "format_info_reply",
    "format_stats_reply",
    "is_error",
    "is_positive",
    "join_cookie",
    "merge_stats",
    "parse_command",
    "parse_info_reply",
    "parse_stats_reply",
    "parse_ul_reply",
    "reply_lines",
    "rewrite_ul_address",
    "split_cookie",
    "split_ul_modifiers",
]
