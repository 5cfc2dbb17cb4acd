"""Outcomes: the bookkeeping after a decision, the same for both executors.

Each method is one outcome, called exactly once when it happens, by whichever executor
carried the decision out: it binds or forgets the call, keeps a delete, counts the
member's answer or silence (on the Member, the one place that counts them) and a new
call's placement, and returns the reply text where there is one. A counter of an outcome
belongs in its method and nowhere else: each send to a member counts in its
``counters.commands``, each new call and each lookup by broadcast in the cluster's
(:mod:`rtpcluster.cluster.counters`).

Every change of a call's binding is told to the session store here too, in the same
method (plain calls that queue a write, never blocking; no-ops for the memory store): a
bind when a new call is placed or a broadcast found its member, a refresh when a bound
call's member answered it, an unbind when its ``D`` ended it (or was kept for a member
that is away).
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from rtpcluster.cluster import decisions
from rtpcluster.cluster.counters import ClusterCounters, member_result
from rtpcluster.cluster.member import REMOVED, Asked, Member
from rtpcluster.cluster.router import TIMEOUT_REPLY, confirms_end, shape_reply
from rtpcluster.cluster.sessions import SessionTable
from rtpcluster.cluster.store_reads import OfferReads
from rtpcluster.protocol import is_error, is_positive
from rtpcluster.store import MemoryStore, SessionStore

_KEPT_REPLY = "0\n"


class Outcomes:
    def __init__(
        self,
        sessions: SessionTable[Member],
        clock: Callable[[], float] = trio.current_time,
        counters: ClusterCounters | None = None,
        *,
        store: SessionStore | None = None,
        cluster: str = "",
        offer_reads: OfferReads | None = None,
    ) -> None:
        """``store``: where bindings are shared (the memory store: nowhere), under the
        name of ``cluster``; ``offer_reads``: the cluster's offer window, told when a
        read found a call made elsewhere."""
        self._sessions = sessions
        self._clock = clock  # when a delete is kept: its deadline counts from then
        self.counters = ClusterCounters() if counters is None else counters
        self._store = store or MemoryStore()
        self._refreshes = self._store.remote  # skipped on the hot path when nothing is shared
        self._cluster = cluster
        self._offer_reads = offer_reads

    # --- a command forwarded to the call's member -----------------------------------------

    def forwarded(self, decision: decisions.Forward, reply: str) -> str:
        """The member answered a forwarded command."""
        member = decision.member
        _answered(member, reply)
        command = decision.command
        if decision.ends_call is not None and confirms_end(command.op, reply):
            self._sessions.unbind(decision.ends_call)
            self._store.unbind(self._cluster, decision.ends_call)
        elif self._refreshes and command.call_id is not None and not is_error(reply):
            self._store.refresh(self._cluster, command.call_id, member.name)
        return shape_reply(reply, decision.wan)

    def forward_unanswered(self, decision: decisions.Forward) -> str:
        """The member did not answer a forwarded command in time."""
        member = decision.member
        _silent(member)
        if decision.on_silence is decisions.OnSilence.DEFER_AND_ANSWER_0:
            return self._keep_delete(member, decision.command.serialize(), decision.ends_call)
        return TIMEOUT_REPLY

    def delete_kept(self, decision: decisions.KeepDelete) -> str:
        """A D for a member that is not online, kept for it without asking it."""
        return self._keep_delete(decision.member, decision.command, decision.call_id)

    def _keep_delete(self, member: Member, command: str, call_id: str | None) -> str:
        """Deliver the delete later; the SIP server gets ``0`` now and will not ask again,
        so the call is forgotten here as if the member had confirmed (a retransmit over
        UDP gets the cached ``0``)."""
        member.defer(command, self._clock())
        if call_id is not None:
            self._sessions.unbind(call_id)
            self._store.unbind(self._cluster, call_id)
        return _KEPT_REPLY

    # --- a new call -----------------------------------------------------------------------

    def offer_sent(self, decision: decisions.PlaceNewCall) -> None:
        """A new call offered to a member: it counts in the member's load at once."""
        decision.member.new_call_offered()

    def call_placed(self, decision: decisions.PlaceNewCall, reply: str) -> str:
        """The member answered the offer (``decision.tried``: after others were silent)."""
        member = decision.member
        _answered(member, reply)
        positive = is_positive("U", reply)
        if positive and member.state is not REMOVED:
            self._sessions.bind(decision.call_id, member)
            self._store.bind(self._cluster, decision.call_id, member.name)
        else:
            member.new_call_not_taken()
        counters = self.counters
        if not positive:
            counters.new_calls_refused += 1  # the member's E reply is the client's
        elif decision.tried:
            counters.new_calls_failover += 1
        else:
            counters.new_calls_placed += 1
        return shape_reply(reply, decision.wan)

    def offer_unanswered(self, decision: decisions.PlaceNewCall, timed_out: bool) -> None:
        """The member left the offer unanswered; the Router's fail-over comes next.

        A member that timed out may still create the session late: a delete of it is
        kept for that member. One that could not be reached at all created nothing.
        """
        member = decision.member
        member.new_call_not_taken()
        _silent(member)
        from_tag = decision.request.from_tag
        if timed_out and from_tag is not None:
            member.defer(f"D {decision.call_id} {from_tag}", self._clock())

    def call_refused(self, decision: decisions.RefuseNewCall) -> str:
        """No member could take the new call."""
        self.counters.new_calls_refused += 1
        return decision.text

    # --- a broadcast ----------------------------------------------------------------------

    def asked(self, member: Member, reply: str | None) -> None:
        """One member's answer to a broadcast (None: silent)."""
        if reply is None:
            _silent(member)
        else:
            _answered(member, reply)

    def learned(self, effect: decisions.Effect) -> None:
        """What the answers of a broadcast taught (see Router.combine)."""
        if isinstance(effect, decisions.OwnerFound):
            self.counters.broadcast_found += 1
            if not effect.bind:  # a D found the call and ended it
                self._store.unbind(self._cluster, effect.call_id)
            elif effect.member.state is not REMOVED:
                self._sessions.bind(effect.call_id, effect.member)
                self._store.bind(self._cluster, effect.call_id, effect.member.name)
        elif isinstance(effect, decisions.OwnerStored):
            self._sessions.bind(effect.call_id, effect.member)  # the store has it already
            if self._offer_reads is not None:
                self._offer_reads.found_elsewhere()
        elif isinstance(effect, decisions.OwnerNotFound):
            self.counters.broadcast_not_found += 1  # the call is nowhere: nothing to keep
        elif isinstance(effect, decisions.CapabilityLearned):
            effect.member.capabilities[effect.date] = effect.supported
        elif isinstance(effect, decisions.StatsLearned):
            effect.member.stats_cache.update(effect.values)
        elif isinstance(effect, decisions.AllCallsForgotten):
            # The store's keys of these calls are left to their TTL: a read of one names
            # a member that no longer has the call, which answers as it would anyway.
            self._sessions.clear()


def _answered(member: Member, reply: str) -> None:
    """A command sent to ``member`` got ``reply``: counted, and its run of failures ends."""
    member.record_answer()
    member.counters.commands[member_result(reply)] += 1


def _silent(member: Member) -> None:
    """A command sent to ``member`` got no reply in time (or could not be sent)."""
    member.counters.commands["timeout"] += 1
    member.record_silence(Asked.COMMAND)
