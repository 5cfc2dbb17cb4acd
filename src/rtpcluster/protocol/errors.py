"""Error codes of the RTPproxy control protocol and of the cluster itself.

An RTPproxy answers a bad command with ``E<code>``; the cluster uses the same
shape for its own refusals (E993..E999).  Every parser in this package raises
only :class:`ProtocolError`, so a caller can always turn a failure into a reply.
"""

from __future__ import annotations

# RTPproxy's own codes (>= 2.0), for the commands the cluster refuses or answers itself.
E_UNKNOWN_COMMAND = 0  # CMDUNKN: unknown command letter
E_NARGS = 1  # PARSE_NARGS: wrong number of arguments
E_MODIFIERS = 2  # PARSE_MODS: modifiers on a command that takes none (V, VF, S, X)
E_SUBCOMMAND = 3  # PARSE_SUBC: && on a command without subcommands
E_SYNTAX = 5  # PARSE_1: empty command, too many tokens or sections, NUL byte
E_STATS_MODIFIERS = 9  # PARSE_5: a G modifier other than v
E_INFO_MODIFIERS = 18  # PARSE_7: an I modifier other than b and l
E_SESSION_UNKNOWN = 50  # SESUNKN: no such session

# The cluster's own codes. E993 to E999 are the original RTP Cluster's (E994 and E996 it
# used internally, for time-outs, and never sent). E990 is ours: outside RTPproxy's codes
# (below 100) and the original's, so no client takes it for a member's answer or a time-out.
E_INTERNAL = 990  # the cluster failed on this command (a fault of ours, logged with its cause)
E_STATS_NONE = 993  # G: no member returned usable statistics
E_BROADCAST = 995  # a call nobody here knows: not exactly one member has it
E_MEMBER_TIMEOUT = 997  # the member the command was routed to did not answer
E_NO_PICK = 998  # a new call, but no member may take it (all full, hard capacity limit)
E_NO_MEMBER = 999  # no member is online

#: Longest command text RTPproxy accepts: its input buffer is 8 KiB including the NUL.
MAX_COMMAND_BYTES = 8191


def error_reply(code: int) -> str:
    """The reply line ``E<code>`` with its newline."""
    return f"E{code}\n"


class ProtocolError(Exception):
    """A command or reply that breaks the protocol; ``reply`` is what to answer."""

    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(message or f"E{code}")
        self.code = code
        self.message = message

    @property
    def reply(self) -> str:
        """The wire reply for this error, without cookie or newline."""
        return f"E{self.code}"

    def __repr__(self) -> str:
        return f"ProtocolError({self.code!r}, {self.message!r})"
