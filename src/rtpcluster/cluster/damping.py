"""Rise, fall and flap damping: when a member's answers take it out and bring it back.

Pure and table-driven, like ``protocol/``: no clock, no trio. The owner (the member's
lifecycle) reports every result that says whether the member answers, with the time:
``on_success(now)`` for a good heartbeat or probe round, ``on_reply(now)`` for a
command's reply, ``on_failure(now)`` for a failed or unanswered heartbeat, probe or
command, ``on_lost(now)`` for a connection that failed (out at once). Each returns the
:class:`Transition` to carry out, or None. A reply counts
only while the member is up (it resets ``fall``): replies that come in after it was
taken out belong to commands sent before, and ``rise`` counts heartbeats and probes.
Heartbeats keep their interval while they fail, so ``fall`` failures take about ``fall``
heartbeat intervals (less when commands fail too).

- A member that has not answered since it was added comes up at its first good answer
  (members that start with the service, and ones added at run time, are not kept out
  for ``rise`` probes: nothing is known against them).
- An up member goes out at exactly ``fall`` failures in a row; any success in between
  starts the count again. A lost connection takes it out at once (it counts as an out
  for the flap damping like any other).
- A member that was taken out comes back after ``rise`` good answers in a row, and not
  before its hold-down (if any) has ended: the answer that brings it back is at or after
  :attr:`Damping.held_until`.
- Flapping: when a member goes out for the ``flap_limit``-th time within
  ``flap_window`` seconds, it is held down: kept out for ``hold_down`` seconds, twice
  that at the next hold-down, and so on up to ``hold_down_max``. While the last
  ``flap_limit`` outs stay within a window, each further out holds it down again. A
  member that stayed up for ``hold_down_max`` before it went out starts again from
  ``hold_down``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rtpcluster.config.models import ClusterConfig


class Transition(StrEnum):
    """What the owner does after a result."""

    UP = "up"  # it may take calls: its first answer, or rise in a row after being out
    DOWN = "down"  # fall failures in a row: take it out
    HELD_DOWN = "held down"  # taken out, and flapping: out at least until held_until


@dataclass(frozen=True, slots=True)
class DampingSettings:
    """The cluster's ``<rise>``, ``<fall>`` and flap settings (defaults as in the config)."""

    rise: int = 2
    fall: int = 2
    flap_limit: int = 5  # 0: never held down
    flap_window: float = 60.0
    hold_down: float = 10.0
    hold_down_max: float = 300.0

    def __post_init__(self) -> None:
        if self.rise < 1 or self.fall < 1 or self.flap_limit < 0:
            raise ValueError(f"rise and fall must be >= 1, flap_limit >= 0: {self}")
        if not 0.0 < self.hold_down <= self.hold_down_max or self.flap_window <= 0.0:
            raise ValueError(f"need 0 < hold_down <= hold_down_max, flap_window > 0: {self}")

    @classmethod
    def of(cls, cluster: ClusterConfig) -> DampingSettings:
        return cls(
            rise=cluster.rise,
            fall=cluster.fall,
            flap_limit=cluster.flap_limit,
            flap_window=cluster.flap_window,
            hold_down=cluster.hold_down,
            hold_down_max=cluster.hold_down_max,
        )


class _Phase(Enum):
    NEW = "new"  # no good answer since it was added
    UP = "up"  # takes calls (as far as its answers go)
    OUT = "out"  # taken out by fall failures; rise good answers bring it back


class _Result(Enum):
    GOOD = "good"  # heartbeat or probe round answered
    REPLY = "reply"  # a command answered
    FAILED = "failed"  # anything unanswered or wrong
    LOST = "lost"  # its connection failed: nothing sent to it can be answered


class Damping:
    """The answer history of one member and what it means; see the module docstring."""

    __slots__ = (
        "_failures",
        "_next_hold",
        "_outs",
        "_phase",
        "_successes",
        "_up_since",
        "held_until",
        "last_hold",
        "settings",
    )

    def __init__(self, settings: DampingSettings | None = None) -> None:
        self.settings = settings or DampingSettings()
        self._phase = _Phase.NEW
        self._failures = 0  # failures in a row while up
        self._successes = 0  # good answers in a row while out
        self._up_since: float | None = None
        self._outs: deque[float] = deque(maxlen=max(1, self.settings.flap_limit))
        self._next_hold = self.settings.hold_down  # length of the next hold-down
        self.held_until: float | None = None  # end of the current or last hold-down
        self.last_hold: float | None = None  # length of the last hold-down

    # --- what the owner reads -------------------------------------------------------------

    @property
    def up(self) -> bool:
        """Whether, by its answers, the member may take calls."""
        return self._phase is _Phase.UP

    def held_down(self, now: float) -> bool:
        """Whether the member is out and held down at ``now``."""
        return self._phase is _Phase.OUT and self.held_until is not None and now < self.held_until

    @property
    def good_in_a_row(self) -> int:
        """While out: good heartbeats or probes since its last failure (its rise streak)."""
        return self._successes if self._phase is _Phase.OUT else 0

    @property
    def rising(self) -> bool:
        """Out, with good answers in a row since its last failure (on its way back)."""
        return self._phase is _Phase.OUT and self._successes > 0

    def held_down_left(self, now: float) -> float | None:
        """Seconds of hold-down left at ``now`` (for ``ls``); None when not held down."""
        if not self.held_down(now):
            return None
        assert self.held_until is not None
        return self.held_until - now

    # --- results --------------------------------------------------------------------------

    def on_success(self, now: float) -> Transition | None:
        """A good heartbeat or probe round at ``now``."""
        return _ON_RESULT[self._phase, _Result.GOOD](self, now)

    def on_reply(self, now: float) -> Transition | None:
        """A command's reply at ``now`` (counts only while up; never brings it back)."""
        return _ON_RESULT[self._phase, _Result.REPLY](self, now)

    def on_failure(self, now: float) -> Transition | None:
        """A failed or unanswered heartbeat, probe or command at ``now``."""
        return _ON_RESULT[self._phase, _Result.FAILED](self, now)

    def on_lost(self, now: float) -> Transition | None:
        """Its connection failed at ``now``: an up member goes out at once."""
        return _ON_RESULT[self._phase, _Result.LOST](self, now)

    def update_settings(self, settings: DampingSettings) -> None:
        """New settings (a reload): the history is kept, the counts apply from now on.

        A hold-down in progress keeps its end; the next one is no longer than the new
        ``hold_down_max``.
        """
        self.settings = settings
        self._outs = deque(self._outs, maxlen=max(1, settings.flap_limit))
        self._next_hold = min(max(self._next_hold, settings.hold_down), settings.hold_down_max)

    # --- the transition table's rules -------------------------------------------------------

    def _first_answer(self, now: float) -> Transition:
        return self._come_up(now)

    def _nothing(self, now: float) -> None:
        return None

    def _answered(self, now: float) -> None:
        self._failures = 0

    def _failed(self, now: float) -> Transition | None:
        self._failures += 1
        if self._failures < self.settings.fall:
            return None
        return self._go_out(now)

    def _rising(self, now: float) -> Transition | None:
        self._successes += 1
        if self._successes < self.settings.rise or self.held_down(now):
            return None
        return self._come_up(now)

    def _fell_back(self, now: float) -> None:
        self._successes = 0

    # --- helpers of the rules -------------------------------------------------------------

    def _come_up(self, now: float) -> Transition:
        self._phase = _Phase.UP
        self._failures = 0
        self._up_since = now
        return Transition.UP

    def _go_out(self, now: float) -> Transition:
        settings = self.settings
        stable = self._up_since is not None and now - self._up_since >= settings.hold_down_max
        if stable:  # it stayed up as long as the longest hold-down: a clean slate
            self._next_hold = settings.hold_down
        self._phase = _Phase.OUT
        self._successes = 0
        self._up_since = None
        if not settings.flap_limit:
            return Transition.DOWN
        self._outs.append(now)
        if len(self._outs) < settings.flap_limit or now - self._outs[0] > settings.flap_window:
            return Transition.DOWN
        self.last_hold = self._next_hold
        self.held_until = now + self._next_hold
        self._next_hold = min(2.0 * self._next_hold, settings.hold_down_max)
        return Transition.HELD_DOWN


_Rule = Callable[[Damping, float], Transition | None]

# (phase, result) -> what it does; the rules change the phase. No command is sent to a
# member before its first good probe, so a reply in NEW is a late one: it counts nothing.
_ON_RESULT: dict[tuple[_Phase, _Result], _Rule] = {
    (_Phase.NEW, _Result.GOOD): Damping._first_answer,
    (_Phase.NEW, _Result.REPLY): Damping._nothing,
    (_Phase.NEW, _Result.FAILED): Damping._nothing,
    (_Phase.NEW, _Result.LOST): Damping._nothing,
    (_Phase.UP, _Result.GOOD): Damping._answered,
    (_Phase.UP, _Result.REPLY): Damping._answered,
    (_Phase.UP, _Result.FAILED): Damping._failed,
    (_Phase.UP, _Result.LOST): Damping._go_out,
    (_Phase.OUT, _Result.GOOD): Damping._rising,
    (_Phase.OUT, _Result.REPLY): Damping._nothing,
    (_Phase.OUT, _Result.FAILED): Damping._fell_back,
    (_Phase.OUT, _Result.LOST): Damping._fell_back,
}
