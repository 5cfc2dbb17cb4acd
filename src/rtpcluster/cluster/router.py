"""Router: what the cluster does with each control command, decided once.

For a parsed command it returns a decision (:mod:`rtpcluster.cluster.decisions`):
session commands follow the call-id to the member that holds the call; a new call goes
where the Balancer says, picked once; an unknown call is looked for on every member;
statistics are summed; ``V`` is answered here. The rules are those of docs/routing.md.
With a shared session store, a call this process does not know is first read from the
store (:class:`~rtpcluster.cluster.decisions.ReadStore`; offers only while
:class:`~rtpcluster.cluster.store_reads.OfferReads` says so).

It reads the members and the session table and changes neither: binding a call, counting
a placement or a failure is what an executor records afterwards (Outcomes). No sockets,
no trio, no clock: every rule is a unit test without a member.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from rtpcluster.cluster import balancer
from rtpcluster.cluster.decisions import (
    AllCallsForgotten,
    AllSupport,
    Answer,
    Broadcast,
    CapabilityLearned,
    Decision,
    DeleteAll,
    Effect,
    FindOwner,
    Forward,
    KeepDelete,
    OnSilence,
    OwnerFound,
    OwnerNotFound,
    OwnerStored,
    PlaceNewCall,
    ReadStore,
    RefuseNewCall,
    StatsLearned,
    SumStats,
)
from rtpcluster.cluster.member import REMOVED, Member
from rtpcluster.cluster.notify_tags import relay_notify_args
from rtpcluster.cluster.sessions import SessionTable
from rtpcluster.protocol import (
    BASE_CAPABILITIES,
    CAP_WILDCARD_NOTIFY,
    E_BROADCAST,
    E_INFO_MODIFIERS,
    E_MEMBER_TIMEOUT,
    E_MODIFIERS,
    E_NO_MEMBER,
    E_NO_PICK,
    E_STATS_MODIFIERS,
    E_STATS_NONE,
    E_UNKNOWN_COMMAND,
    PROTOCOL_VERSION,
    Command,
    ProtocolError,
    error_reply,
    format_info_reply,
    format_stats_reply,
    is_error,
    is_positive,
    merge_stats,
    parse_stats_reply,
    rewrite_ul_address,
)

if TYPE_CHECKING:
    from rtpcluster.cluster.store_reads import OfferReads
    from rtpcluster.config.models import ClusterConfig

TIMEOUT_REPLY = error_reply(E_MEMBER_TIMEOUT)
_VERSION = Answer(PROTOCOL_VERSION + "\n")
_NO_MEMBER = Answer(error_reply(E_NO_MEMBER))
_ZERO = Answer("0\n")

# Commands that can end a call: D, and Q with a "&& D" subcommand (query and delete).
_DELETING_OPS = frozenset("DQ")


class Router:
    """Decides for the commands of one cluster. Holds no sockets and starts no tasks."""

    def __init__(
        self,
        config: ClusterConfig,
        members: Callable[[], Sequence[Member]],
        sessions: SessionTable[Member],
        rng: random.Random | None = None,
        store_reads: OfferReads | None = None,
    ) -> None:
        """``store_reads``: the store is shared (None: it is not, nothing is read)."""
        self._members = members
        self._sessions = sessions
        self._rng = rng
        self._store_reads = store_reads
        self.apply_settings(config)

    def apply_settings(self, config: ClusterConfig) -> None:
        """Take the timers, the capacity limit and the relay of ``config`` from now on."""
        self.timeout = config.member_timeout
        # How long a new call waits on one member before it is offered to another.
        self.new_call_timeout = config.effective_new_call_budget
        self._hard_limit = config.capacity_limit == "hard"
        self._relay = config.disconnect_notify

    # --- the entry point ---------------------------------------------------------------------

    def decide(self, cmd: Command) -> Decision:
        if cmd.is_session_command:
            call_id = cmd.call_id
            assert call_id is not None
            owner = self._sessions.get(call_id)
            if owner is not None and owner.online:
                return self._forward(owner, cmd)  # the common case, first
            if owner is None or owner.state is REMOVED:
                offer = cmd.op == "U" and cmd.to_tag is None  # a new call, or one again
                reads = self._store_reads
                if reads is not None and (not offer or reads.wanted()):
                    return ReadStore(cmd, call_id)
                return self.place(cmd) if offer else self._find_owner(cmd, call_id)
            return self._call_not_online(cmd, call_id, owner)
        op = cmd.op
        if op == "V":
            return self._version(cmd)
        if op == "I":
            return self._info(cmd)
        if op == "G":
            return self._stats(cmd)
        if op == "X":
            return self._delete_all()
        return Answer(error_reply(E_UNKNOWN_COMMAND))  # parse_command lets no other op pass

    # --- calls ------------------------------------------------------------------------------

    def _unknown_call(self, cmd: Command, call_id: str) -> Decision:
        """A call bound to no member: an offer is a new call, anything else is looked for."""
        return self.place(cmd) if _is_offer(cmd) else self._find_owner(cmd, call_id)

    def _call_not_online(self, cmd: Command, call_id: str, owner: Member) -> Decision:
        """A call bound to a member that is offline or probing."""
        if cmd.op == "D":
            return KeepDelete(owner, cmd.serialize(), call_id if _ends_call(cmd) else None)
        if _is_offer(cmd):
            return self.place(cmd)  # the SIP server offers it anew: place it anew
        return Answer(TIMEOUT_REPLY)

    def after_read(
        self, read: ReadStore, stored: str | None
    ) -> tuple[Decision, tuple[Effect, ...]]:
        """The next decision once the store named member ``stored`` (None: nothing usable).

        A name that is no member of this cluster (or one removed) counts as nothing; a
        member that is not online is treated as the local table treats it. If a command
        for the same call bound it here meanwhile, that binding wins.
        """
        cmd, call_id = read.request, read.call_id
        owner = self._sessions.get(call_id)
        if owner is not None and owner.state is not REMOVED:
            return self._known_call(cmd, call_id, owner), ()
        if stored is not None:
            for member in self._members():
                if member.name == stored and member.state is not REMOVED:
                    found = (OwnerStored(call_id, member),)
                    return self._known_call(cmd, call_id, member), found
        return self._unknown_call(cmd, call_id), ()

    def _known_call(self, cmd: Command, call_id: str, owner: Member) -> Decision:
        if owner.online:
            return self._forward(owner, cmd)
        return self._call_not_online(cmd, call_id, owner)

    def _forward(self, member: Member, cmd: Command) -> Forward:
        op = cmd.op
        return Forward(
            member,
            self._prepare(member, cmd),
            self.timeout,
            OnSilence.DEFER_AND_ANSWER_0 if op == "D" else OnSilence.ANSWER_E997,
            cmd.call_id if op in _DELETING_OPS and _ends_call(cmd) else None,
            _wan(member, cmd),
        )

    def place(self, cmd: Command, tried: tuple[Member, ...] = ()) -> PlaceNewCall | RefuseNewCall:
        """A new call: the member picked once by the Balancer, not one of ``tried``."""
        members = self._members()
        member = balancer.pick(members, self._hard_limit, tried, self._rng)
        if member is None:
            if tried:
                return RefuseNewCall(TIMEOUT_REPLY)  # every member that could was silent
            if not any(m.online for m in members):
                return RefuseNewCall(error_reply(E_NO_MEMBER))
            if any(m.accepts_new_sessions for m in members):
                return RefuseNewCall(error_reply(E_NO_PICK))  # all full, hard limit
            return RefuseNewCall(error_reply(E_NO_MEMBER))  # online, but none takes calls
        call_id = cmd.call_id
        assert call_id is not None
        return PlaceNewCall(
            member,
            self._prepare(member, cmd),
            cmd,
            call_id,
            self.new_call_timeout,
            _wan(member, cmd),
            tried,
        )

    def fail_over(self, silent: PlaceNewCall) -> PlaceNewCall | RefuseNewCall:
        """The rule after a member left a new call unanswered: another member, or E997."""
        return self.place(silent.request, (*silent.tried, silent.member))

    def _find_owner(self, cmd: Command, call_id: str) -> Decision:
        online = [m for m in self._members() if m.online]
        if not online:
            return _NO_MEMBER
        # A U is asked as an L with the tags swapped and no notify arguments: a member
        # that does not have the call must not create it.
        probe = cmd.as_lookup() if cmd.op == "U" else cmd
        asks = tuple((m, self._prepare(m, probe).serialize()) for m in online)
        return Broadcast(asks, self.timeout, FindOwner(cmd, call_id, probe.op))

    # --- per-member rewriting -----------------------------------------------------------------

    def _prepare(self, member: Member, cmd: Command) -> Command:
        """The command as this member must see it: lan address and notify target."""
        if cmd.op not in ("U", "L"):
            return cmd
        lan = member.config.lan_address
        if lan is not None:
            cmd = cmd.with_local_address(lan)
        if cmd.op == "U" and cmd.notify_socket is not None:
            cmd = self._notify_for(member, cmd)
        return cmd

    def _notify_for(self, member: Member, cmd: Command) -> Command:
        """Send notifications to our relay, or strip them where the member cannot reach."""
        if member.config.address.kind.is_path:
            return cmd  # a local member reaches the SIP server's socket itself
        relay = self._relay
        if relay is not None and member.capabilities.get(CAP_WILDCARD_NOTIFY):
            args = relay_notify_args(relay, cmd.notify_socket or "", cmd.notify_tag or "")
            if args is not None:
                return cmd.with_notify(*args)
        return cmd.without_notify()

    # --- cluster-wide commands --------------------------------------------------------------

    def _online(self) -> list[Member]:
        return [m for m in self._members() if m.online]

    def _version(self, cmd: Command) -> Decision:
        if not cmd.is_vf:
            return Answer(error_reply(E_MODIFIERS)) if cmd.modifiers else _VERSION
        online = self._online()
        date = cmd.args[0]
        if not online:
            # A SIP server probes capabilities once, when it starts; answer for the
            # RTPproxy base protocol rather than have it disable the cluster for a minute.
            return Answer("1\n" if date in BASE_CAPABILITIES else "0\n")
        known = tuple(k for m in online if (k := m.capabilities.get(date)) is not None)
        unknown = [m for m in online if m.capabilities.get(date) is None]
        if not unknown:
            return Answer("1\n" if all(known) else "0\n")
        text = cmd.serialize()
        return Broadcast(tuple((m, text) for m in unknown), self.timeout, AllSupport(date, known))

    def _info(self, cmd: Command) -> Answer:
        online = self._online()
        if not online:
            return _NO_MEMBER
        modifiers = cmd.modifiers.lower()
        if modifiers.strip("bl"):
            return Answer(error_reply(E_INFO_MODIFIERS))
        totals = merge_stats(m.info for m in online)
        return Answer(format_info_reply(totals, with_load="l" in modifiers))

    def _stats(self, cmd: Command) -> Decision:
        modifiers = cmd.modifiers.lower()
        if modifiers not in ("", "v"):
            return Answer(error_reply(E_STATS_MODIFIERS))
        online = self._online()
        if not online:
            return _NO_MEMBER
        names = tuple(cmd.args)
        if not names:
            return Answer("\n")
        request = "G " + " ".join(names)  # verbose output is rebuilt here from the values
        return Broadcast(
            tuple((m, request) for m in online), self.timeout, SumStats(names, modifiers == "v")
        )

    def _delete_all(self) -> Decision:
        online = self._online()
        if not online:
            return _NO_MEMBER
        return Broadcast(tuple((m, "X") for m in online), self.timeout, DeleteAll())

    # --- what a broadcast's answers make of it -------------------------------------------------

    def combine(
        self, broadcast: Broadcast, answers: Sequence[str | None]
    ) -> tuple[Decision, tuple[Effect, ...]]:
        """The next decision from the answers (in the order of ``asks``; None: silent)."""
        rule = broadcast.rule
        replies = [(m, r) for (m, _), r in zip(broadcast.asks, answers, strict=True)]
        if isinstance(rule, FindOwner):
            return self._owner_found(rule, replies)
        if isinstance(rule, AllSupport):
            learned = tuple(
                CapabilityLearned(m, rule.date, r.strip() == "1")
                for m, r in replies
                if r is not None
            )
            results = [*rule.known, *(c.supported for c in learned)]
            if not results:
                return Answer(TIMEOUT_REPLY), learned
            return Answer("1\n" if all(results) else "0\n"), learned
        if isinstance(rule, SumStats):
            return self._stats_summed(rule, replies)
        failed = any(r is None for _, r in replies)
        return Answer(TIMEOUT_REPLY if failed else "0\n"), (AllCallsForgotten(),)

    def _owner_found(
        self, rule: FindOwner, replies: list[tuple[Member, str | None]]
    ) -> tuple[Decision, tuple[Effect, ...]]:
        cmd = rule.request
        positive = [(m, r) for m, r in replies if r is not None and is_positive(rule.probe_op, r)]
        if len(positive) == 1:
            owner, reply = positive[0]
            ended = cmd.op in _DELETING_OPS and _ends_call(cmd) and confirms_end(cmd.op, reply)
            found = (OwnerFound(rule.call_id, owner, bind=not ended),)
            if cmd.op == "U":
                return self._forward(owner, cmd), found  # now the U itself, to its member
            return Answer(shape_reply(reply, _wan(owner, cmd))), found
        # A D nobody confirms is not kept for members that did not answer: this process
        # never bound the call to them, and deletes kept for unknown calls would let any
        # client fill their queues. A session left there ends by its own timeout.
        missing = (OwnerNotFound(rule.call_id),)
        if cmd.op == "U" and not positive:
            # RTPproxy never answers "not found" to U: no member has it, so create it.
            return self.place(cmd), missing
        if cmd.op in ("U", "L"):
            return _ZERO, missing
        return Answer(error_reply(E_BROADCAST)), missing

    def _stats_summed(
        self, rule: SumStats, replies: list[tuple[Member, str | None]]
    ) -> tuple[Decision, tuple[Effect, ...]]:
        names = rule.names
        parts: list[dict[str, int | float]] = []
        errors: list[str] = []
        learned: list[Effect] = []
        for member, reply in replies:
            values = None
            if reply is not None:
                if is_error(reply):
                    errors.append(reply)
                    continue
                try:
                    values = parse_stats_reply(names, False, reply.strip())
                except ProtocolError:
                    values = None
            if values is None:
                cached = member.stats_cache
                if all(name in cached for name in names):
                    parts.append({name: cached[name] for name in names})
                continue
            learned.append(StatsLearned(member, values))
            parts.append(values)
        if not parts:
            text = _ensure_newline(errors[0]) if errors else error_reply(E_STATS_NONE)
            return Answer(text), tuple(learned)
        return Answer(format_stats_reply(names, rule.verbose, merge_stats(parts))), tuple(learned)


def _is_offer(cmd: Command) -> bool:
    """A ``U`` without to-tag: the offer that creates a call, or offers it again."""
    return cmd.op == "U" and cmd.to_tag is None


def _wan(member: Member, cmd: Command) -> str | None:
    """The wan address a U/L reply of ``member`` gets, or None to pass it as it is."""
    if cmd.op != "U" and cmd.op != "L":
        return None
    config = member.config
    wan = config.wan_address
    if wan is not None and (config.lan_address is not None or cmd.local_address is None):
        return wan
    return None


def shape_reply(reply: str, wan: str | None) -> str:
    """A member's reply as the client gets it: with its newline, the wan address in."""
    reply = _ensure_newline(reply)
    return reply if wan is None else rewrite_ul_address(reply, wan)


def _ends_call(cmd: Command) -> bool:
    """Does ``cmd``, when it succeeds, end the call on its member?

    RTPproxy's ``D call from [to]`` deletes every session of the call whose tag matches
    either tag (a tag without ``;N`` matches all its media streams): the clients we know
    send D without ``;N``, so that is the whole call. ``Dw``
    only drops the weak side and may leave the session alive, so it ends nothing here.
    A D that left some session of the call behind (one of several from-tags, a ``;N``
    stream) costs a broadcast later: the next command for the call finds it again.
    """
    if cmd.op == "D":
        return "w" not in cmd.modifiers and "W" not in cmd.modifiers
    return cmd.op == "Q" and any(section[0] in ("D", "d") for section in cmd.subcommands)


def confirms_end(op: str, reply: str) -> bool:
    """Did the member confirm that a call-ending ``op`` (a D or Q && D) ended the call?"""
    if is_error(reply):
        return False
    # Q ... && D: a failed subcommand shows as "&& -1" after the counters
    return op == "D" or "&&" not in reply


def _ensure_newline(reply: str) -> str:
    return reply if reply.endswith("\n") else reply + "\n"
