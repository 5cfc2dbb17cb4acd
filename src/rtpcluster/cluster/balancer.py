"""Balancer: which member gets a new call.

Random pick weighted by ``weight * (1 - utilisation)`` among ACTIVE online members,
so spare capacity attracts calls in proportion to the operator's weights. When every
member is full, a soft limit takes the least loaded one and a hard limit refuses.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Iterable

from rtpcluster.cluster.member import Member


def pick(
    members: Iterable[Member],
    hard_limit: bool,
    exclude: Collection[Member] = (),
    rng: random.Random | None = None,
) -> Member | None:
    """The member for a new session, or None when no member may take it."""
    candidates: list[Member] = []
    shares: list[float] = []
    total = 0.0
    for member in members:
        if not member.accepts_new_sessions or member in exclude:
            continue
        candidates.append(member)
        share = member.weight * (1.0 - member.utilisation)
        if share > 0.0:
            total += share
        shares.append(share)
    if not candidates:
        return None
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
