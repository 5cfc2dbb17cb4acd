"""Error codes of the RTPproxy control protocol and of the cluster itself.

An RTPproxy answers a bad command with ``E<code>``; the cluster uses the same
shape for its own refusals (E993..E999).  Every parser in this package raises
only :class:`ProtocolError`, so a caller can always turn a failure into a reply.
"""

from __future__ import annotations

E_UNKNOWN_COMMAND = 0
E_NARGS = 1
E_MODIFIERS = 2
E_SUBCOMMAND = 3
E_SYNTAX = 5
E_SESSION_UNKNOWN = 50
E_STATS_NONE = 993
E_BROADCAST = 995
E_MEMBER_TIMEOUT = 997
E_NO_PICK = 998
E_NO_MEMBER = 999

#: Longest command text RTPproxy accepts: its input buffer is 8 KiB including the NUL.
MAX_COMMAND_BYTES = 8191


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
