"""SessionTable: which member holds each call.

Two generations of plain dicts instead of per-entry timestamps: a lookup checks the
young generation, then the old one (and promotes a hit); every ``idle_timeout / 2``
the old generation is dropped and the young one becomes old. A binding with no
command for between ``idle_timeout / 2`` and ``idle_timeout`` is forgotten.

Bounded: the young generation never holds more than ``max_entries / 2`` calls; one more
ages the table at once (the old generation, the calls idle longest, is forgotten), so
both together stay within ``max_entries``. A forgotten call that is still alive is found
again by asking every member (see docs/routing.md).

Each generation keeps its number of calls per member next to it, updated by every
operation and dropped with the generation, so :meth:`count` never scans. Every operation
is O(1) except :meth:`drop_member` (a member leaving the cluster), which is O(n), and
:meth:`compact` (the upkeep's, after many calls ended). An entry costs one dict slot and
its key string (bytes per call: benchmarks/scale.py).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Generic, TypeVar

M = TypeVar("M")

# 1,000,000 calls: at about 120 bytes each (benchmarks/scale.py) at most 120 MB, and 250
# times the live calls of a member at its default capacity (4,000), so four full clusters
# of 60 such members stay well inside it. Calls leave the table at their D; what stays is
# live calls and calls that ended without one, until they age out.
MAX_ENTRIES = 1_000_000

# A dict keeps the room of entries that left it (about 30 bytes each at a million). A
# generation that takes 8 times what its calls need, and over 1 MiB, is rebuilt by
# compact(): after many calls end at once their room comes back within an upkeep pass,
# not when the generation ages out up to session_idle_timeout later.
_DICT_BYTES_PER_ENTRY = 30
_COMPACT_FACTOR = 8
_COMPACT_MIN_BYTES = 1 << 20


class SessionTable(Generic[M]):
    __slots__ = (
        "_old",
        "_old_counts",
        "_young",
        "_young_counts",
        "early_rotations",
        "idle_timeout",
        "max_entries",
    )

    def __init__(self, idle_timeout: float = 3600.0, max_entries: int = MAX_ENTRIES) -> None:
        if max_entries < 2:
            raise ValueError("a session table holds at least 2 calls (one per generation)")
        self.idle_timeout = idle_timeout
        self.max_entries = max_entries
        self._young: dict[str, M] = {}
        self._old: dict[str, M] = {}
        self._young_counts: dict[M, int] = {}  # calls per member in the young generation
        self._old_counts: dict[M, int] = {}
        self.early_rotations = 0  # ageings forced by max_entries, not by the clock

    def __len__(self) -> int:
        return len(self._young) + len(self._old)

    def count(self, member: M) -> int:
        """Calls bound to ``member``, O(1): what ``ls`` shows as tracked calls."""
        return self._young_counts.get(member, 0) + self._old_counts.get(member, 0)

    def get(self, call_id: str) -> M | None:
        member = self._young.get(call_id)
        if member is None:
            member = self._old.pop(call_id, None)
            if member is not None:
                self._old_counts[member] -= 1
                self._add_young(call_id, member)
        return member

    def bind(self, call_id: str, member: M) -> None:
        if self._old:
            previous = self._old.pop(call_id, None)
            if previous is not None:
                self._old_counts[previous] -= 1
        young = self._young
        previous = young.get(call_id)
        if previous is None:
            if (len(young) + 1) * 2 > self.max_entries:
                self._age_early()
                young = self._young
        elif previous is member:
            return
        else:
            self._young_counts[previous] -= 1
        young[call_id] = member
        counts = self._young_counts
        counts[member] = counts.get(member, 0) + 1

    def unbind(self, call_id: str) -> None:
        member = self._young.pop(call_id, None)
        if member is not None:
            self._young_counts[member] -= 1
            return  # never in both generations
        member = self._old.pop(call_id, None)
        if member is not None:
            self._old_counts[member] -= 1

    def rotate(self) -> int:
        """Age the table by one generation; returns how many bindings were forgotten."""
        dropped = len(self._old)
        self._old = self._young
        self._old_counts = self._young_counts
        self._young = {}
        self._young_counts = {}
        return dropped

    def clear(self) -> None:
        self._young.clear()
        self._old.clear()
        self._young_counts.clear()
        self._old_counts.clear()

    def drop_member(self, member: M) -> int:
        """Forget every call bound to ``member`` (it left the cluster): O(n), once."""
        dropped = 0
        for generation in (self._young, self._old):
            stale = [cid for cid, owner in generation.items() if owner is member]
            for cid in stale:
                del generation[cid]
            dropped += len(stale)
        self._young_counts.pop(member, None)
        self._old_counts.pop(member, None)
        return dropped

    def bindings(self, since_rotation: float) -> Iterator[tuple[str, M, float]]:
        """Every binding, young generation first, with the most its age can be.

        The table keeps no time per call. A young binding had a command since the last
        rotation, ``since_rotation`` seconds ago, so it is at most that old; an old one
        at most ``since_rotation + idle_timeout / 2``. The upper bound is the age by which
        the table itself forgets a call: at ``idle_timeout`` it is gone. O(n) (a state
        file at stop); the table must not change while it is iterated.
        """
        for call_id, member in self._young.items():
            yield call_id, member, since_rotation
        old_age = since_rotation + self.idle_timeout / 2
        for call_id, member in self._old.items():
            yield call_id, member, old_age

    def restore(self, call_id: str, member: M, age: float) -> None:
        """Bind a call handed over from before a restart, ``age`` seconds since its last
        command: into the old generation when that is half the idle timeout or more, so
        it is forgotten as it would have been without the restart (within one more half)."""
        if age < self.idle_timeout / 2:
            self.bind(call_id, member)
            return
        if call_id in self._young or call_id in self._old:
            return  # a binding made since is newer
        if len(self._old) * 2 >= self.max_entries:
            return  # full: the old generation holds as much as the young one may
        self._old[call_id] = member
        counts = self._old_counts
        counts[member] = counts.get(member, 0) + 1

    def compact(self) -> int:
        """Rebuild a generation far bigger than its calls need; returns the bytes given back.

        O(calls in the rebuilt generation), and only after most of its calls left.
        """
        freed = 0
        held = sys.getsizeof(self._young)
        if _oversized(held, len(self._young)):
            self._young = dict(self._young)
            freed += held - sys.getsizeof(self._young)
        held = sys.getsizeof(self._old)
        if _oversized(held, len(self._old)):
            self._old = dict(self._old)
            freed += held - sys.getsizeof(self._old)
        return freed

    def _add_young(self, call_id: str, member: M) -> None:
        """Put a call not in the young generation into it, ageing the table if it is full."""
        if (len(self._young) + 1) * 2 > self.max_entries:
            self._age_early()
        self._young[call_id] = member
        counts = self._young_counts
        counts[member] = counts.get(member, 0) + 1

    def _age_early(self) -> None:
        """The young generation holds half of ``max_entries``: forget the old one now."""
        self.early_rotations += 1
        self.rotate()


def _oversized(held: int, entries: int) -> bool:
    return held > _COMPACT_MIN_BYTES and held > _COMPACT_FACTOR * _DICT_BYTES_PER_ENTRY * entries
