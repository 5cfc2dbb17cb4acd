"""What the Router decides for a command: plain values that an executor carries out.

A decision says everything needed to carry it out and nothing about how: which member
gets which command text, how long it may take, and what follows when the member is
silent. The Router makes them (:mod:`rtpcluster.cluster.router`), the executors carry
them out (:mod:`rtpcluster.cluster.executors`) and record what happened through
:class:`~rtpcluster.cluster.outcomes.Outcomes`.

========================= ====================================================================
decision                  carried out as
========================= ====================================================================
:class:`Answer`           answer ``text`` now
:class:`RefuseNewCall`    a new call no member may take: answer ``text`` (E998, E999, E997)
:class:`KeepDelete`       a ``D`` for a member that is not online: kept for it, answered ``0``
:class:`Forward`          send ``command`` to ``member``; its reply is the answer; when it is
                          silent, ``on_silence``
:class:`PlaceNewCall`     offer the new call to ``member``; a positive reply binds the call;
                          when it is silent, fail over (``Router.fail_over``)
:class:`Broadcast`        ask every member of ``asks``; ``Router.combine`` makes the next
                          decision from the answers, by ``rule``, and says what they taught
                          (the ``Effect`` values)
:class:`ReadStore`        read the call's member from the shared session store;
                          ``Router.after_read`` makes the next decision from what it names
========================= ====================================================================

Slot classes, not frozen ones: a frozen dataclass costs 0.4 us more to build, on every
command of the hot path. They are never changed after they are made.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rtpcluster.cluster.member import Member
    from rtpcluster.protocol import Command


class OnSilence(Enum):
    """What follows when the member a command went to does not answer in time."""

    ANSWER_E997 = "answer E997: the member did not answer"
    DEFER_AND_ANSWER_0 = "keep the delete for the member, forget the call, answer 0"
    FAIL_OVER = "place the new call on another member; keep a delete of the offer"


@dataclass(slots=True)
class Answer:
    text: str  # the whole reply, newline included


@dataclass(slots=True)
class RefuseNewCall:
    text: str  # E998 (all full, hard limit), E999 (none online), E997 (all tried were silent)


@dataclass(slots=True)
class KeepDelete:
    member: Member  # the call's member, not online now
    command: str  # the D as it is delivered once the member answers again
    call_id: str | None  # the call to forget now (None: a Dw, which ends nothing)


@dataclass(slots=True)
class Forward:
    member: Member
    command: Command  # as this member must see it (lan address, notify target)
    timeout: float
    on_silence: OnSilence  # ANSWER_E997, or DEFER_AND_ANSWER_0 for a D
    ends_call: str | None  # the call to forget once the member confirms the end (D, Q && D)
    wan: str | None  # the address a U/L reply gets instead of the member's own


@dataclass(slots=True)
class PlaceNewCall:
    member: Member  # picked once by the Balancer
    command: Command  # as this member must see it
    request: Command  # as the client sent it: a failover prepares it for the next member
    call_id: str
    timeout: float  # shorter than member_timeout, to leave time for another member
    wan: str | None
    tried: tuple[Member, ...] = ()  # members that were silent on this offer before
    on_silence: OnSilence = OnSilence.FAIL_OVER


@dataclass(slots=True)
class FindOwner:
    """A command for a call nobody here knows: exactly one positive answer finds it."""

    request: Command
    call_id: str
    probe_op: str  # the op the members were asked (a U is asked as an L)


@dataclass(slots=True)
class AllSupport:
    """``VF date``: ``1`` only if every online member supports it."""

    date: str
    known: tuple[bool, ...]  # what the members not asked answered before


@dataclass(slots=True)
class SumStats:
    """``G``: the members' values summed, a silent member's last good ones in its place."""

    names: tuple[str, ...]
    verbose: bool


@dataclass(slots=True)
class DeleteAll:
    """``X``: every member deletes every session; the cluster forgets every call."""


CombineRule = FindOwner | AllSupport | SumStats | DeleteAll


@dataclass(slots=True)
class Broadcast:
    asks: tuple[tuple[Member, str], ...]  # who is asked what (one reply line each)
    timeout: float
    rule: CombineRule


@dataclass(slots=True)
class ReadStore:
    """A call this process does not know: read its member from the shared session store
    before anything else (a broadcast lookup, or placing an offer that may belong to a
    call made through another rtpcluster)."""

    request: Command
    call_id: str


Decision = Answer | RefuseNewCall | KeepDelete | Forward | PlaceNewCall | Broadcast | ReadStore


# --- what a broadcast's answers taught, for Outcomes to apply ---------------------------------


@dataclass(slots=True)
class OwnerFound:
    call_id: str
    member: Member
    bind: bool  # False for a D (or Q && D) that ended the call it found


@dataclass(slots=True)
class OwnerStored:
    """The session store named the call's member: bound here; nothing to write back."""

    call_id: str
    member: Member


@dataclass(slots=True)
class OwnerNotFound:
    call_id: str


@dataclass(slots=True)
class CapabilityLearned:
    member: Member
    date: str
    supported: bool


@dataclass(slots=True)
class StatsLearned:
    member: Member
    values: dict[str, int | float]


@dataclass(slots=True)
class AllCallsForgotten:
    pass


Effect = (
    OwnerFound | OwnerStored | OwnerNotFound | CapabilityLearned | StatsLearned | AllCallsForgotten
)
