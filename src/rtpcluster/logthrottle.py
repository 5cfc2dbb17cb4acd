"""LogThrottle: at most one log line per key per interval, with the count left out.

A flood of the same failure (a missing notify socket, accept(2) out of descriptors)
must not become a flood of log lines: 100,000 identical warnings are 16 MB of log and
say nothing the first one did not.
"""

from __future__ import annotations

from collections.abc import Hashable

# Keys remembered at most: a flood of distinct keys (forged socket names, say) must not
# grow this table without bound. The oldest key is forgotten first.
MAX_KEYS = 1024


class LogThrottle:
    __slots__ = ("_seen", "interval")

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        # key -> (time of the last line written, occurrences suppressed since)
        self._seen: dict[Hashable, tuple[float, int]] = {}

    def allow(self, key: Hashable, now: float) -> int | None:
        """None: stay quiet. Otherwise log now; the result is how many were suppressed."""
        last = self._seen.get(key)
        if last is not None and now - last[0] < self.interval:
            self._seen[key] = (last[0], last[1] + 1)
            return None
        if last is None and len(self._seen) >= MAX_KEYS:
            del self._seen[next(iter(self._seen))]
        self._seen.pop(key, None)
        self._seen[key] = (now, 0)
        return 0 if last is None else last[1]
