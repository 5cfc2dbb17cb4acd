"""SessionTable: which member holds each call.

Two generations of plain dicts instead of per-entry timestamps: a lookup checks the
young generation, then the old one (and promotes a hit); every ``idle_timeout / 2``
the old generation is dropped and the young one becomes old. A binding with no
command for between ``idle_timeout / 2`` and ``idle_timeout`` is forgotten. Every
operation is O(1) and an entry costs one dict slot and its key string.
"""

from __future__ import annotations

from collections import Counter
from typing import Generic, TypeVar

M = TypeVar("M")


class SessionTable(Generic[M]):
    __slots__ = ("_old", "_young", "idle_timeout", "max_entries")

    def __init__(self, idle_timeout: float = 3600.0, max_entries: int = 2_000_000) -> None:
        self.idle_timeout = idle_timeout
        self.max_entries = max_entries
        self._young: dict[str, M] = {}
        self._old: dict[str, M] = {}

    def __len__(self) -> int:
        return len(self._young) + len(self._old)

    def get(self, call_id: str) -> M | None:
        member = self._young.get(call_id)
        if member is None:
            member = self._old.pop(call_id, None)
            if member is not None:
                self._young[call_id] = member
                if len(self._young) >= self.max_entries:
                    self.rotate()
        return member

    def bind(self, call_id: str, member: M) -> None:
        self._old.pop(call_id, None)
        self._young[call_id] = member
        if len(self._young) >= self.max_entries:
            self.rotate()

    def unbind(self, call_id: str) -> None:
        self._young.pop(call_id, None)
        self._old.pop(call_id, None)

    def rotate(self) -> int:
        """Age the table by one generation; returns how many bindings were forgotten."""
        dropped = len(self._old)
        self._old = self._young
        self._young = {}
        return dropped

    def clear(self) -> None:
        self._young.clear()
        self._old.clear()

    def drop_member(self, member: M) -> int:
        """Forget every call bound to ``member`` (it left the cluster)."""
        dropped = 0
        for generation in (self._young, self._old):
            stale = [cid for cid, owner in generation.items() if owner is member]
            for cid in stale:
                del generation[cid]
            dropped += len(stale)
        return dropped

    def counts(self) -> Counter[int]:
        """Number of bound calls per member, keyed by ``id(member)`` (admin only: O(n))."""
        counter: Counter[int] = Counter()
        for generation in (self._young, self._old):
            counter.update(id(owner) for owner in generation.values())
        return counter
