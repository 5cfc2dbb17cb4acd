"""ReplyCache: answers UDP retransmits without sending the command to a member again.

Keyed by the client's cookie and source address. Two generations rotated every
``lifetime`` seconds, so a reply is kept between one and two lifetimes. A cookie whose
command is still being worked on maps to :data:`IN_FLIGHT`; a retransmit of it is
absorbed (the reply to the first copy answers both).

Bounded in entries and in bytes: when the young generation holds half of either bound,
it is rotated early, which drops the old generation, the oldest entries. Under a flood
the cache so keeps the most recent commands at most ``max_entries`` and ``max_bytes``,
and a reply lives shorter than ``lifetime``; clients retransmit within a few seconds
(sippy's budget is 3 s, Kamailio's and OpenSIPS's 5 x 1 s), which the defaults still
cover at ten thousand commands a second. Every operation is O(1). ``len(cache)`` and
:attr:`ReplyCache.held_bytes` are the cache's own accounting; the bytes bound holds as
long as one entry is smaller than half of it (a cookie is at most 128 bytes, a reply
a datagram).
"""

from __future__ import annotations

from typing import Any, Final

IN_FLIGHT: Final = b""

# 100,000 entries: at the 10,000 commands/s one process serves (docs/performance.md) a
# generation of 50,000 fills in 5 s, so replies live 5 to 10 s even at full load.
# 16 MiB of cookies and replies: the same entries at 160 bytes each, twice what a typical
# command costs (a 32-byte cookie, kept in the key and in the reply, and a short reply:
# 81 bytes measured). Python's own objects add about 320 bytes per entry (key tuple,
# address tuple and string, two bytes objects, dict slot; tracemalloc): 32 MB at
# ``max_entries``.
MAX_ENTRIES = 100_000
MAX_BYTES = 16 * 1024 * 1024

Key = tuple[bytes, Any]  # (cookie, source address)


class ReplyCache:
    __slots__ = (
        "_half_bytes",
        "_half_entries",
        "_old",
        "_old_bytes",
        "_young",
        "_young_bytes",
        "early_rotations",
        "lifetime",
        "max_bytes",
        "max_entries",
    )

    def __init__(
        self, lifetime: float = 30.0, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES
    ) -> None:
        if max_entries < 2:
            raise ValueError("a reply cache holds at least 2 entries (one per generation)")
        self.lifetime = lifetime
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        # the young generation rotates before it would pass either
        self._half_entries = max_entries // 2
        self._half_bytes = max_bytes // 2
        self._young: dict[Key, bytes] = {}
        self._old: dict[Key, bytes] = {}
        # bytes of cookies and replies held by each generation
        self._young_bytes = 0
        self._old_bytes = 0
        self.early_rotations = 0  # rotations forced by the bounds, not by the clock

    def __len__(self) -> int:
        return len(self._young) + len(self._old)

    @property
    def held_bytes(self) -> int:
        """Bytes of cookies and replies held (Python's per-entry overhead not included)."""
        return self._young_bytes + self._old_bytes

    def begin(self, key: Key) -> bytes | None:
        """Mark ``key`` in flight and return None, or return what is known of it.

        The result is the cached reply for a finished command, or :data:`IN_FLIGHT`
        for one still being worked on.
        """
        young = self._young
        known = young.get(key)
        if known is None:
            known = self._old.get(key)
            if known is None:
                size = len(key[0])
                young_bytes = self._young_bytes + size
                if len(young) >= self._half_entries or young_bytes > self._half_bytes:
                    self._make_room(size)
                    young = self._young
                    young_bytes = size
                young[key] = IN_FLIGHT
                self._young_bytes = young_bytes
                return None
        return known

    def finish(self, key: Key, reply: bytes) -> None:
        young = self._young
        previous = young.get(key)
        if previous is not None:
            young_bytes = self._young_bytes + len(reply) - len(previous)
            if young_bytes <= self._half_bytes:
                young[key] = reply  # the usual case: the in-flight mark becomes the reply
                self._young_bytes = young_bytes
                return
            del young[key]
            self._young_bytes -= len(key[0]) + len(previous)
        else:
            old = self._old.pop(key, None)
            if old is not None:
                self._old_bytes -= len(key[0]) + len(old)
        size = len(key[0]) + len(reply)
        self._make_room(size)
        self._young[key] = reply
        self._young_bytes += size

    def abandon(self, key: Key) -> None:
        """Forget an in-flight key whose command produced no reply at all."""
        if self._young.get(key) == IN_FLIGHT:
            del self._young[key]
            self._young_bytes -= len(key[0])
        elif self._old.get(key) == IN_FLIGHT:
            del self._old[key]
            self._old_bytes -= len(key[0])

    def rotate(self) -> None:
        self._old = self._young
        self._old_bytes = self._young_bytes
        self._young = {}
        self._young_bytes = 0

    def _make_room(self, size: int) -> None:
        """Rotate early if one more entry of ``size`` bytes would fill half a bound.

        The young generation so never holds more than half of either bound, and the old
        one is a former young one: together they stay within the bounds.
        """
        if len(self._young) >= self._half_entries or self._young_bytes + size > self._half_bytes:
            self.early_rotations += 1
            self.rotate()
