"""Member: one RTPproxy of a cluster, its configuration and what we know of it now.

A member's life is one state machine (:class:`MemberState`, the allowed moves in
:data:`TRANSITIONS`); each move is a method named after its reason, and all of them go
through :meth:`Member._change`, which logs the move once with its cause and tells the
supervisor. What the operator sees is derived from it: ``status`` (ACTIVE, SUSPENDED,
DRAINING) and ``online``.

======== ===================================================== ============================
state    what it means                                           left by
======== ===================================================== ============================
probing  added or reconnected; not yet answered ``V`` and the   answered_probe -> online;
         required capability; gets nothing                       remove, drain -> removed
online   answers; serves its calls, takes new ones unless        fall failures/lost ->
         suspended                                               offline; drain -> draining;
                                                                 restart -> probing
offline  stopped answering (heartbeats, forwarded commands or    rise good probes, hold-down
         its connection); probed until it answers; its calls     over -> online; restart ->
         stay bound (a ``D`` is kept for it)                     probing; remove, drain ->
                                                                 removed
draining leaving: answers, serves its calls, takes no new ones   drained (two heartbeats
                                                                 without a session, its
                                                                 deadline, stopped
                                                                 answering) -> removed;
                                                                 resume/suspend/reconfigure
                                                                 -> online; restart ->
                                                                 probing
removed  gone from the cluster: its calls are forgotten          (final)
======== ===================================================== ============================

When a member goes offline and when it comes back is its :class:`~rtpcluster.cluster.
damping.Damping`'s verdict: every heartbeat, probe round and command result is reported
to it, and the moves between online and offline follow what it returns (``fall``
failures in a row out, ``rise`` good probes in a row back, held down while it flaps).
So a member is online (or draining) exactly while its damping says it is up.

``suspended`` is not a state: an operator's pause holds while the member goes offline
and comes back, so it is a flag beside the state, changed through the same method.
That method also counts the member's online/offline changes and its downtime
(:class:`~rtpcluster.cluster.counters.MemberCounters`, ``counters``).

Slow start: each time a member starts taking new calls again (back online, resumed, a
drain ended, added to a running cluster) its weight is ramped over the cluster's
``slow_start`` (:func:`~rtpcluster.cluster.balancer.effective_weight`); only the first
move online of a member its cluster started with is not ramped.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

import trio

from rtpcluster.cluster.balancer import effective_weight
from rtpcluster.cluster.counters import MemberCounters
from rtpcluster.cluster.damping import Damping, DampingSettings, Transition
from rtpcluster.config.models import MemberConfig, MemberStatus
from rtpcluster.transport.member_client import MemberClient, make_client

if TYPE_CHECKING:
    from rtpcluster.config.models import ClusterConfig

log = logging.getLogger(__name__)

#: What ``modify <cluster> set`` and a reload change on a running member at once,
#: without a move: its connection, health, ramp and calls stay as they are.
PLACEMENT_FIELDS = ("weight", "capacity", "backup")
# Deletes kept for a member that does not answer: how many, and for how long. 100,000 is
# 25 times a member's default capacity (4,000 sessions): every call on it can end while
# it is away, several times over. About 240 bytes each with a 36-character call-id and two
# tags (the command string, its tuple, a deque and a set slot; tracemalloc): 24 MB full.
DEFERRED_MAX = 100_000
DEFERRED_TTL = 3600.0


class DeferredDeletes:
    """Deletes kept for a member that did not answer, delivered oldest first.

    Each command is kept once: a second copy of the same delete (same modifiers, call-id
    and tags) is the same delete. The Router keeps only deletes for calls it bound to the
    member and for offers it left unanswered there, so a full queue means that many real
    calls; a delete that finds it full is dropped, not an older one, and counted in
    :attr:`dropped`. Read like a deque: ``deferred[0]`` is the oldest ``(deadline,
    command)``, ``popleft()`` removes it.
    """

    __slots__ = ("_commands", "_queue", "dropped", "max_entries", "ttl")

    def __init__(self, max_entries: int = DEFERRED_MAX, ttl: float = DEFERRED_TTL) -> None:
        self.max_entries = max_entries
        self.ttl = ttl
        self._queue: deque[tuple[float, str]] = deque()  # (deadline, command), oldest first
        self._commands: set[str] = set()  # the commands in the queue
        self.dropped = 0  # deletes refused because the queue was full

    def __len__(self) -> int:
        return len(self._queue)

    def __bool__(self) -> bool:
        return bool(self._queue)

    def __getitem__(self, index: int) -> tuple[float, str]:
        return self._queue[index]

    def add(self, command: str, now: float) -> bool:
        """Keep ``command`` until ``now + ttl``; False if it was kept already or is dropped."""
        if command in self._commands:
            return False
        if len(self._queue) >= self.max_entries:
            self.dropped += 1
            return False
        self._queue.append((now + self.ttl, command))
        self._commands.add(command)
        return True

    def popleft(self) -> tuple[float, str]:
        entry = self._queue.popleft()
        self._commands.discard(entry[1])
        return entry


class MemberState(StrEnum):
    PROBING = "probing"
    ONLINE = "online"
    OFFLINE = "offline"
    DRAINING = "draining"
    REMOVED = "removed"


PROBING, ONLINE, OFFLINE, DRAINING, REMOVED = MemberState

#: The moves a member may make; anything else is a fault of ours (MemberStateError).
TRANSITIONS: Mapping[MemberState, frozenset[MemberState]] = {
    PROBING: frozenset({ONLINE, REMOVED}),
    ONLINE: frozenset({OFFLINE, DRAINING, PROBING}),
    OFFLINE: frozenset({ONLINE, PROBING, REMOVED}),
    DRAINING: frozenset({ONLINE, PROBING, REMOVED}),
    REMOVED: frozenset(),
}


class MemberStateError(RuntimeError):
    """A move the transition table forbids: a fault in the cluster, never in input."""


class Asked(StrEnum):
    """What a member was asked, for the cause of its going offline."""

    HEARTBEAT = "heartbeat"
    COMMAND = "forwarded command"
    DELETE = "deferred delete"


@dataclass(frozen=True, slots=True)
class MemberPolicy:
    """The cluster's settings a member applies itself: damping and slow start."""

    damping: DampingSettings = field(default_factory=DampingSettings)
    slow_start: float = 0.0  # seconds of the weight ramp; 0: off

    @classmethod
    def of(cls, cluster: ClusterConfig) -> MemberPolicy:
        return cls(DampingSettings.of(cluster), cluster.slow_start)


#: Told of every move: (member, state before, cause). The supervisor's hook.
ChangeHook = Callable[["Member", MemberState, str], None]


def _ignore_change(member: Member, before: MemberState, cause: str) -> None:
    del member, before, cause


class Member:
    """Live state of one member. Health, executors and supervisor move it by its methods."""

    def __init__(
        self,
        config: MemberConfig,
        client: MemberClient | None = None,
        *,
        cluster: str = "",
        on_change: ChangeHook = _ignore_change,
        policy: MemberPolicy | None = None,
        ramp_first_online: bool = True,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        # ``config`` is the member as configured, with the status it has now: kept in
        # step by _change, so that save and reload compare what runs.
        self.config = config
        self.client: MemberClient = client or make_client(config.address, config.cmd_out_address)
        self.label = f"{cluster}: member {config.name}" if cluster else f"member {config.name}"
        # the keys of a JSON log line about this member (--log-format json)
        self.log_context = {"cluster": cluster or None, "member": config.name}
        self._on_change = on_change
        self.state = PROBING
        self.suspended = config.status is MemberStatus.SUSPENDED
        self.state_changed = trio.Event()  # set (and replaced) on every move
        # Set (and replaced) after every heartbeat and probe round, its move made: what
        # waits for the member's next check (tests) awaits it instead of polling.
        self.checked = trio.Event()
        self.reported_sessions = 0  # "active sessions" of the last heartbeat
        self.placed_since_report = 0  # new sessions we placed since that heartbeat
        self.info: dict[str, int | float] = {}  # last Ib reply
        self.stats_cache: dict[str, int | float] = {}  # last good G value per name
        self.capabilities: dict[str, bool] = {}  # VF date -> supported
        self.failures = 0  # requests unanswered in a row
        self._unanswered: dict[Asked, int] = {}  # the same, by what was asked
        self.deferred = DeferredDeletes(DEFERRED_MAX)  # deletes to deliver when it is back
        self.drain_deadline: float | None = None  # trio time at which a drain ends anyway
        self.zero_heartbeats = 0  # consecutive heartbeats reporting no active session
        self.heartbeats = 0  # heartbeats answered so far
        self._clock = clock  # trio time: damping, ramps and drain deadlines share it
        self.policy = policy or MemberPolicy()
        self.damping = Damping(self.policy.damping)  # when it goes out and comes back
        # Whether its next start of taking new calls is ramped: False for a member its
        # cluster starts with, until its first move online (it is not "coming back").
        self._ramps = ramp_first_online
        self.ramp_since: float | None = None  # clock reading its weight ramp started at
        self.counters = MemberCounters()  # commands sent to it, state changes, downtime

    # --- configuration ------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def weight(self) -> int:
        return self.config.weight

    @property
    def capacity(self) -> int:
        return self.config.capacity

    @property
    def backup(self) -> bool:
        return self.config.backup

    @property
    def effective_weight(self) -> float:
        """The weight in effect now: ramped during its slow start, else ``weight``."""
        since = self.ramp_since
        if since is None:  # the hot path: no clock reading
            return self.config.weight
        return effective_weight(self.config.weight, since, self._clock(), self.policy.slow_start)

    def slow_start_left(self) -> float | None:
        """Seconds until it has its full weight; None when it has it (for ``ls``)."""
        since, ramp = self.ramp_since, self.policy.slow_start
        if since is None or ramp <= 0.0:
            return None
        left = since + ramp - self._clock()
        return left if left > 0.0 else None

    def held_down_left(self) -> float | None:
        """Seconds its flapping keeps it out yet; None when it is not held down."""
        return self.damping.held_down_left(self._clock())

    def apply_policy(self, policy: MemberPolicy) -> None:
        """New damping and slow-start settings (a reload): its history and ramp are kept."""
        self.policy = policy
        self.damping.update_settings(policy.damping)

    def adjust(self, config: MemberConfig, cause: str) -> None:
        """Take weight, capacity and backup of ``config`` at once (``modify set``, reload).

        Not a move: the connection, the damping, a ramp in progress and the calls stay;
        the next new call is placed by the new values, and ``save`` writes them.
        """
        old = self.config
        update = {name: getattr(config, name) for name in PLACEMENT_FIELDS}
        changed = [
            f"{name} {_shown(getattr(old, name))} -> {_shown(value)}"
            for name, value in update.items()
            if getattr(old, name) != value
        ]
        if not changed:
            return
        self.config = old.model_copy(update=update)
        log.info("%s: %s (%s)", self.label, ", ".join(changed), cause)

    # --- derived from the state -----------------------------------------------------------

    @property
    def online(self) -> bool:
        """Answering: it serves the calls bound to it (``ls`` shows it online)."""
        state = self.state
        return state is ONLINE or state is DRAINING

    @property
    def removed(self) -> bool:
        return self.state is REMOVED

    @property
    def status(self) -> MemberStatus:
        """What the operator asked: DRAINING while it drains, else SUSPENDED or ACTIVE."""
        if self.state is DRAINING:
            return MemberStatus.DRAINING
        return MemberStatus.SUSPENDED if self.suspended else MemberStatus.ACTIVE

    @property
    def accepts_new_sessions(self) -> bool:
        return self.state is ONLINE and not self.suspended

    # --- load -----------------------------------------------------------------------------

    @property
    def load(self) -> int:
        return self.reported_sessions + self.placed_since_report

    @property
    def utilisation(self) -> float:
        return self.load / self.capacity

    def new_call_offered(self) -> None:
        """A new call is on its way to it: it counts in the load until a heartbeat has it."""
        self.placed_since_report += 1

    def new_call_not_taken(self) -> None:
        """An offer it refused or left unanswered: it no longer counts in the load."""
        self.placed_since_report -= 1

    # --- answers and silence: the one place they are counted -------------------------------

    def record_answer(self) -> None:
        """It answered a request (any reply, an E one too): the run of failures ends.

        Called for every reply, so it reads no clock unless a run of failures ends: the
        damping's count of failures in a row is this one's (both end together).
        """
        if self.failures:
            self.failures = 0
            self._unanswered.clear()
            self.damping.on_reply(self._clock())

    def record_silence(self, asked: Asked) -> None:
        """A request got no usable answer in time; ``fall`` in a row take it out.

        Only while it answers (online, draining): a command sent before it went out that
        times out afterwards says nothing new, and must not break a rise streak.
        """
        self.failures += 1
        self._unanswered[asked] = self._unanswered.get(asked, 0) + 1
        if self.state is ONLINE or self.state is DRAINING:
            verdict = self.damping.on_failure(self._clock())
            if verdict is not None:
                self._taken_out(verdict, self._silence_cause())
        if asked is Asked.HEARTBEAT:
            self._checked()

    def _checked(self) -> None:
        event, self.checked = self.checked, trio.Event()
        event.set()

    def _silence_cause(self) -> str:
        parts = [f"{n} {asked}{'s' if n > 1 else ''}" for asked, n in self._unanswered.items()]
        return f"no answer to {' and '.join(parts)} in a row"

    def _taken_out(self, verdict: Transition, cause: str) -> None:
        """The damping says out (DOWN or HELD_DOWN): offline, or the end of a drain."""
        if self.state is DRAINING:
            self._change(REMOVED, f"drained: {cause}", warn=True)
            return
        if verdict is Transition.HELD_DOWN:
            settings = self.damping.settings
            outs = settings.flap_limit
            cause += (
                f"; held down for {self.damping.last_hold:g} s: out {outs}"
                f" time{'s' if outs > 1 else ''} within {settings.flap_window:g} s"
            )
        self._change(OFFLINE, cause, warn=True)

    # --- moves ----------------------------------------------------------------------------

    def answered_probe(self) -> None:
        """It answered ``V`` and the required capability: a good probe round.

        A new member is online at once; one that was taken out once its damping says so
        (``rise`` good probes in a row, and its hold-down over).
        """
        self.record_answer()
        verdict = self.damping.on_success(self._clock())
        state = self.state
        if state is PROBING and self.damping.up:
            self._change(ONLINE, "answers V and the capabilities it needs")
        elif state is OFFLINE and verdict is Transition.UP:
            rise = self.damping.settings.rise
            self._change(
                ONLINE, f"answered {rise} probes in a row" if rise > 1 else "answered again"
            )
        self._checked()

    def probe_failed(self) -> None:
        """A probe round went unanswered or wrong: a rise streak starts again."""
        if self.state is OFFLINE or self.state is PROBING:
            self.damping.on_failure(self._clock())
        self._checked()

    @property
    def rising(self) -> bool:
        """Offline with good probes in a row: on its way back (probed more often)."""
        return self.state is OFFLINE and self.damping.rising

    def lost(self, cause: str) -> None:
        """Its connection failed (the client's task ended with an error): out at once."""
        verdict = self.damping.on_lost(self._clock())
        if self.state is ONLINE or self.state is DRAINING:
            self._taken_out(verdict or Transition.DOWN, cause)

    def restart(self, cause: str) -> None:
        """Reached anew (another address): probed again before it gets anything.

        Nothing is known against the new address: the damping starts afresh.
        """
        if self.state is not PROBING and self.state is not REMOVED:
            self.damping = Damping(self.policy.damping)
            self._change(PROBING, cause)

    def suspend(self, cause: str = "suspended by admin") -> None:
        """No new calls; its calls go on. Ends a drain."""
        if self.state is not REMOVED:
            self._change(ONLINE if self.state is DRAINING else self.state, cause, suspended=True)

    def resume(self, cause: str = "resumed by admin") -> None:
        """New calls again. Ends a drain."""
        if self.state is not REMOVED:
            self._change(ONLINE if self.state is DRAINING else self.state, cause, suspended=False)

    def reconfigure(self, config: MemberConfig, cause: str = "configuration changed") -> None:
        """A changed configuration (a reload): its status holds from now; it ends a drain.

        A configured DRAINING is the supervisor's to apply (:meth:`drain`).
        """
        if self.state is REMOVED:
            return
        self.config = config
        state = ONLINE if self.state is DRAINING else self.state
        self._change(state, cause, suspended=config.status is MemberStatus.SUSPENDED)

    def drain(self, deadline: float | None, cause: str = "deleted by admin") -> None:
        """Leave the cluster: once its calls are gone, or at ``deadline`` (trio time).

        A member that does not answer now holds no call it could serve: removed at once.
        """
        state = self.state
        if state is ONLINE or state is DRAINING:
            self.drain_deadline = deadline
            self.zero_heartbeats = 0
            if state is ONLINE:
                self._change(DRAINING, cause)
        elif state is not REMOVED:
            self._change(REMOVED, f"{cause}, while {state}")

    def drain_deadline_reached(self) -> None:
        if self.state is DRAINING:
            self._change(REMOVED, "drained: deadline reached")

    def heartbeat(self, info: dict[str, int | float], placed_before: int) -> None:
        """A heartbeat reply; ``placed_before`` sessions were placed when it was asked.

        Those are in the member's figure now; sessions placed while the heartbeat was
        on its way are not, so they stay counted on top of it. A draining member is
        drained after two heartbeats in a row without a session (one may be stale) and
        no call placed on it since.
        """
        self.record_answer()
        self.heartbeats += 1
        if self.ramp_since is not None and self.slow_start_left() is None:
            self.ramp_since = None  # the ramp is over: the hot path reads no clock again
        self.info = info
        self.reported_sessions = int(info.get("active sessions", 0))
        self.placed_since_report = max(0, self.placed_since_report - placed_before)
        if self.reported_sessions == 0:
            self.zero_heartbeats += 1
        else:
            self.zero_heartbeats = 0
        if self.state is DRAINING and self.zero_heartbeats >= 2 and self.placed_since_report == 0:
            self._change(REMOVED, "drained: two heartbeats without a session")
        self._checked()

    def _change(
        self,
        state: MemberState,
        cause: str,
        *,
        suspended: bool | None = None,
        warn: bool = False,
    ) -> None:
        """The one way the state (or the suspension) changes: checked, logged once, told."""
        before = self.state
        was_online = self.online
        was_suspended = self.suspended
        if suspended is None:
            suspended = was_suspended
        if state is before and suspended is was_suspended:
            return
        if state is not before and state not in TRANSITIONS[before]:
            raise MemberStateError(f"{self.label}: {before} -> {state} ({cause}) is not allowed")
        self.state = state
        self.suspended = suspended
        if state is ONLINE:
            self.failures = 0
            self._unanswered.clear()
        if state is ONLINE and not suspended:
            if before is not ONLINE or was_suspended:  # it takes new calls again
                ramped = self._ramps and self.policy.slow_start > 0.0
                self.ramp_since = self._clock() if ramped else None
        else:
            self.ramp_since = None
        if state is ONLINE:
            self._ramps = True
        if state is not DRAINING:
            self.drain_deadline = None
        status = self.status
        if self.config.status is not status:
            self.config = self.config.model_copy(update={"status": status})
        if self.online is not was_online:
            self.counters.state_changed(not was_online)
        shown = f"{state}, suspended" if suspended and state is not REMOVED else str(state)
        log.log(
            logging.WARNING if warn else logging.INFO,
            "%s: %s (%s)",
            self.label,
            shown,
            cause,
            extra=self.log_context,
        )
        event, self.state_changed = self.state_changed, trio.Event()
        event.set()
        self._on_change(self, before, cause)

    # --- what it is sent ------------------------------------------------------------------

    def replace_client(self, client: MemberClient) -> None:
        """Talk through ``client`` from now on (after a failure, or at a new address).

        The task that ran the old client closes it: a socket is not closed under a task
        that still waits on it.
        """
        self.client = client

    def defer(self, command: str, now: float) -> None:
        """Keep a delete for delivery when the member answers again (once, bounded)."""
        self.deferred.add(command, now)


def _shown(value: object) -> str:
    """A placement setting as the config writes it (``backup`` yes/no)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)
