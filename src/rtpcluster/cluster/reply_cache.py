"""ReplyCache: answers UDP retransmits without sending the command to a member again.

Keyed by the client's cookie and source address. Two generations rotated every
``lifetime`` seconds, so a reply is kept between one and two lifetimes. A cookie whose
command is still being worked on maps to :data:`IN_FLIGHT`; a retransmit of it is
absorbed (the reply to the first copy answers both).
"""

from __future__ import annotations

from typing import Any, Final

IN_FLIGHT: Final = b""


class ReplyCache:
    __slots__ = ("_old", "_young", "lifetime")

    def __init__(self, lifetime: float = 30.0) -> None:
        self.lifetime = lifetime
        self._young: dict[tuple[bytes, Any], bytes] = {}
        self._old: dict[tuple[bytes, Any], bytes] = {}

    def __len__(self) -> int:
        return len(self._young) + len(self._old)

    def begin(self, key: tuple[bytes, Any]) -> bytes | None:
        """Mark ``key`` in flight and return None, or return what is known of it.

        The result is the cached reply for a finished command, or :data:`IN_FLIGHT`
        for one still being worked on.
        """
        known = self._young.get(key)
        if known is None:
            known = self._old.get(key)
            if known is None:
                self._young[key] = IN_FLIGHT
                return None
        return known

    def finish(self, key: tuple[bytes, Any], reply: bytes) -> None:
        self._old.pop(key, None)
        self._young[key] = reply

    def abandon(self, key: tuple[bytes, Any]) -> None:
        """Forget an in-flight key whose command produced no reply at all."""
        for generation in (self._young, self._old):
            if generation.get(key) == IN_FLIGHT:
                del generation[key]

    def rotate(self) -> None:
        self._old = self._young
        self._young = {}
