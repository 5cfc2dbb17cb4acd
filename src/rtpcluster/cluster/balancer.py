"""Balancer: which member gets a new call. Pure: no sockets, no clock, no trio.

The placement rule, in order:

1. Only members that may take calls are candidates: ``accepts_new_sessions`` (online,
   ACTIVE, not removed, and so not held down for flapping either) and not in
   ``exclude`` (a member that just left this very call unanswered).
2. Primary members first; backup members only when no primary can take the call:
   every primary is offline, suspended, draining, excluded, or full under a hard
   capacity limit. Under a soft limit a full primary can still take a call, so the
   backups stay idle while any primary is up: a soft capacity is a planning figure that
   the operator allows to be exceeded, and a backup is kept for when the primaries are
   *gone* (standby site, metered or weaker machine). Whoever wants backups to take the
   overflow of full primaries uses a hard limit; then a full cluster answers ``E998``
   only when the backups are full too.
3. Within the tier, a random pick weighted by ``effective_weight * (1 - utilisation)``,
   so spare capacity attracts calls in proportion to the operator's weights, and a
   member coming back online with slow start gets a ramped share (:func:`effective_weight`).
   When every candidate of the tier is full, a soft limit takes the least utilised one
   and a hard limit goes on to the next tier (after the backups: no member, ``None``).
"""

from __future__ import annotations

import random
from collections.abc import Collection, Iterable
from typing import Protocol, TypeVar

RAMP_START = 0.1
"""Share of its weight a member has at the start of its slow start: 10 %, so that it
takes some calls at once (and shows it works) without being hit by every new call."""


class Candidate(Protocol):
    """What :func:`pick` reads of a member (``Member`` has these)."""

    @property
    def accepts_new_sessions(self) -> bool: ...

    @property
    def backup(self) -> bool: ...

    @property
    def effective_weight(self) -> float:
        """The weight in effect now: its ``weight``, ramped during slow start."""
        ...

    @property
    def utilisation(self) -> float: ...


CandidateT = TypeVar("CandidateT", bound=Candidate)


def effective_weight(
    weight: float, online_since: float | None, now: float, slow_start: float
) -> float:
    """The weight in effect ``now`` for a member online since ``online_since``.

    Linear from :data:`RAMP_START` of ``weight`` when it came online to the full
    ``weight`` after ``slow_start`` seconds. ``online_since`` is None for a member that
    is not ramped (one that started with the service); ``slow_start`` 0 turns it off.
    A clock reading before ``online_since`` counts as the start of the ramp.
    """
    if online_since is None or slow_start <= 0.0:
        return weight
    elapsed = now - online_since
    if elapsed >= slow_start:
        return weight
    progress = max(0.0, elapsed) / slow_start
    return weight * (RAMP_START + (1.0 - RAMP_START) * progress)


def pick(
    members: Iterable[CandidateT],
    hard_limit: bool,
    exclude: Collection[CandidateT] = (),
    rng: random.Random | None = None,
) -> CandidateT | None:
    """The member for a new session, or None when no member may take it."""
    primaries: list[CandidateT] = []
    backups: list[CandidateT] = []
    for member in members:
        if not member.accepts_new_sessions or member in exclude:
            continue
        (backups if member.backup else primaries).append(member)
    for tier in (primaries, backups):
        if tier:
            chosen = _pick_within(tier, hard_limit, rng)
            if chosen is not None:
                return chosen
    return None


def _pick_within(
    candidates: list[CandidateT], hard_limit: bool, rng: random.Random | None
) -> CandidateT | None:
    """The weighted draw among candidates of one tier; None if none can take a call."""
    shares = [member.effective_weight * (1.0 - member.utilisation) for member in candidates]
    total = sum(share for share in shares if share > 0.0)
    if total <= 0.0:
        if hard_limit:
            return None
        return min(candidates, key=lambda m: m.utilisation)
    point = (rng or random).random() * total
    chosen = candidates[0]
    for member, share in zip(candidates, shares, strict=True):
        if share <= 0.0:
            continue
        chosen = member
        point -= share
        if point < 0.0:
            break
    return chosen
