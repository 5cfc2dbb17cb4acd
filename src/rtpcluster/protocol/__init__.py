"""Sans-I/O RTPproxy control protocol: commands, replies, cookies, framing, stats.

Pure functions and small classes; no sockets, no trio, nothing else of ours.
"""

from rtpcluster.protocol.command import Command, parse_command, split_ul_modifiers
from rtpcluster.protocol.cookie import (
    MAX_COOKIE_BYTES,
    MAX_DATAGRAM_BYTES,
    join_cookie,
    split_cookie,
)
from rtpcluster.protocol.errors import (
    E_BROADCAST,
    E_MEMBER_TIMEOUT,
    E_MODIFIERS,
    E_NARGS,
    E_NO_MEMBER,
    E_NO_PICK,
    E_SESSION_UNKNOWN,
    E_STATS_NONE,
    E_SUBCOMMAND,
    E_SYNTAX,
    E_UNKNOWN_COMMAND,
    MAX_COMMAND_BYTES,
    ProtocolError,
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
    "E_BROADCAST",
    "E_MEMBER_TIMEOUT",
    "E_MODIFIERS",
    "E_NARGS",
    "E_NO_MEMBER",
    "E_NO_PICK",
    "E_SESSION_UNKNOWN",
    "E_STATS_NONE",
    "E_SUBCOMMAND",
    "E_SYNTAX",
    "E_UNKNOWN_COMMAND",
    "INFO_FIELDS",
    "MAX_COMMAND_BYTES",
    "MAX_COOKIE_BYTES",
    "MAX_DATAGRAM_BYTES",
    "Command",
    "LineFramer",
    "ProtocolError",
    "ReplyAssembler",
    "ULReply",
    "error_code",
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
