"""Router: what the cluster does with each control command.

It decides; members' clients move the bytes. Session commands follow the call-id to
the member that holds the call; a new call goes where the Balancer says; an unknown
call is looked for on every member; statistics are summed; ``V`` is answered here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import trio

from rtpcluster.cluster import balancer
from rtpcluster.cluster.member import Member
from rtpcluster.cluster.notify import relay_notify_args
from rtpcluster.cluster.sessions import SessionTable
from rtpcluster.protocol import (
    E_BROADCAST,
    E_MEMBER_TIMEOUT,
    E_NO_MEMBER,
    E_NO_PICK,
    E_STATS_NONE,
    Command,
    ProtocolError,
    format_info_reply,
    format_stats_reply,
    is_error,
    is_positive,
    merge_stats,
    parse_command,
    parse_stats_reply,
    rewrite_ul_address,
)
from rtpcluster.transport.member_client import MemberError, MemberTimeout

if TYPE_CHECKING:
    from rtpcluster.config.models import ClusterConfig

log = logging.getLogger(__name__)

PROTOCOL_VERSION = "20040107"
# Capabilities every RTPproxy since 2.0 has, whatever its options (20081224 needs -n).
BASE_CAPABILITIES = frozenset(
    {"20040107", "20050322", "20060704", "20071116", "20071218", "20080403", "20081102"}
)
CAP_WILDCARD_NOTIFY = "20150617"


def _error(code: int) -> str:
    return f"E{code}\n"


class Router:
    """Routes commands for one cluster. Holds no sockets of its own."""

    def __init__(
        self,
        config: ClusterConfig,
        members: Callable[[], Sequence[Member]],
        sessions: SessionTable[Member],
    ) -> None:
        self.config = config
        self._members = members
        self.sessions = sessions
        self.nursery: trio.Nursery | None = None  # for commands that need a task

    @property
    def timeout(self) -> float:
        return self.config.member_timeout

    @property
    def new_session_budget(self) -> float:
        """How long a new call waits on one member before it is placed on another."""
        return self.config.member_timeout * 0.6

    async def handle(self, data: bytes) -> str:
        """Answer one command; never raises for anything a client sent."""
        try:
            cmd = parse_command(data)
        except ProtocolError as exc:
            return _error(exc.code)
        return await self.handle_command(cmd)

    def dispatch(
        self,
        data: bytes,
        respond: Callable[[str], None],
        abandon: Callable[[], None] = lambda: None,
    ) -> None:
        """Answer one command through ``respond``, now or later; never raises.

        The common cases (a command for a call on an online UDP member, a new call, ``V``,
        ``I``) are served without a task: the member's reply comes back through a callback.
        Everything else runs as a task in :attr:`nursery`; if that task is cancelled (the
        cluster stops), ``abandon`` is called instead of ``respond``.
        """
        try:
            cmd = parse_command(data)
        except ProtocolError as exc:
            respond(_error(exc.code))
            return
        if self._try_fast(cmd, respond, abandon):
            return
        assert self.nursery is not None, "Router.nursery is set by the running cluster"
        self.nursery.start_soon(self._respond_later, cmd, respond, abandon)

    async def _respond_later(
        self,
        cmd: Command,
        respond: Callable[[str], None],
        abandon: Callable[[], None],
        silent: Member | None = None,
    ) -> None:
        """Answer in a task; ``silent`` is a member a new call must not be placed on again."""
        try:
            reply = await self.handle_command(cmd, silent)
        except BaseException:
            abandon()
            raise
        respond(reply)

    def _try_fast(
        self, cmd: Command, respond: Callable[[str], None], abandon: Callable[[], None]
    ) -> bool:
        op = cmd.op
        if cmd.is_session_command:
            call_id = cmd.call_id
            assert call_id is not None
            owner = self.sessions.get(call_id)
            if owner is None:
                if op == "U" and cmd.to_tag is None:
                    return self._fast_new_session(cmd, respond, abandon)
                return False
            if not owner.online or owner.removed or not owner.can_submit:
                return False
            self._fast_forward(owner, cmd, respond)
            return True
        if op == "V" and not cmd.is_vf and not cmd.modifiers:
            respond(PROTOCOL_VERSION + "\n")
            return True
        if op == "I":
            respond(self._info(cmd))
            return True
        return False

    def _fast_forward(self, member: Member, cmd: Command, respond: Callable[[str], None]) -> None:
        sent = self._prepare(member, cmd)

        def done(reply: str | None) -> None:
            if reply is not None:
                member.failures = 0
                if cmd.op in _DELETING_OPS and _ended(cmd, reply):
                    self._forget(cmd)
                respond(self._finish(member, cmd, reply))
                return
            member.note_failure()
            if cmd.op == "D":
                respond(self._keep_delete(member, sent))
            else:
                respond(_error(E_MEMBER_TIMEOUT))

        member.submit(sent, self.timeout, done)

    def _fast_new_session(
        self, cmd: Command, respond: Callable[[str], None], abandon: Callable[[], None]
    ) -> bool:
        members = self._members()
        member = balancer.pick(members, self.config.capacity_limit == "hard")
        if member is None or not member.can_submit:
            return False  # the slow path gives the right error
        call_id = cmd.call_id
        assert call_id is not None
        sent = self._prepare(member, cmd)
        member.placed_since_report += 1

        def done(reply: str | None) -> None:
            if reply is None:
                member.placed_since_report -= 1
                member.note_failure()
                if cmd.from_tag is not None:  # it may still create the session late
                    member.defer(f"D {call_id} {cmd.from_tag}", trio.current_time())
                assert self.nursery is not None
                try:
                    self.nursery.start_soon(self._respond_later, cmd, respond, abandon, member)
                except RuntimeError:  # the cluster has stopped
                    abandon()
                return
            member.failures = 0
            if is_positive("U", reply):
                self.sessions.bind(call_id, member)
            else:
                member.placed_since_report -= 1
            respond(self._finish(member, cmd, reply))

        member.submit(sent, self.new_session_budget, done)
        return True

    async def handle_command(self, cmd: Command, silent: Member | None = None) -> str:
        """Answer one parsed command; never raises for anything a client sent.

        ``silent``: a new call (``U`` without to-tag) whose offer that member left
        unanswered; it is placed on another one.
        """
        try:
            if silent is not None:
                return await self._new_session(cmd, [silent])
            if cmd.is_session_command:
                return await self._session_command(cmd)
            op = cmd.op
            if op == "V":
                return await self._version(cmd)
            if op == "I":
                return self._info(cmd)
            if op == "G":
                return await self._stats(cmd)
            if op == "X":
                return await self._delete_all()
            return _error(0)
        except Exception:
            log.exception("internal error while routing %r", cmd.serialize()[:200])
            return _error(E_MEMBER_TIMEOUT)

    # --- sessions ------------------------------------------------------------------------

    async def _session_command(self, cmd: Command) -> str:
        call_id = cmd.call_id
        assert call_id is not None
        owner = self.sessions.get(call_id)
        if owner is not None and owner.removed:
            self.sessions.unbind(call_id)
            owner = None
        if owner is None:
            if cmd.op == "U" and cmd.to_tag is None:
                return await self._new_session(cmd)
            return await self._find_owner(cmd)
        if not owner.online:
            if cmd.op == "D":
                return self._keep_delete(owner, cmd)
            if cmd.op == "U" and cmd.to_tag is None:
                return await self._new_session(cmd)
            return _error(E_MEMBER_TIMEOUT)
        return await self._forward(owner, cmd)

    async def _forward(self, member: Member, cmd: Command) -> str:
        sent = self._prepare(member, cmd)
        try:
            reply = await member.send(sent, self.timeout)
        except MemberError:
            if cmd.op == "D":
                return self._keep_delete(member, sent)
            return _error(E_MEMBER_TIMEOUT)
        if cmd.op in _DELETING_OPS and _ended(cmd, reply):
            self._forget(cmd)
        return self._finish(member, cmd, reply)

    def _keep_delete(self, member: Member, cmd: Command) -> str:
        """A D for a call bound to ``member``, which did not answer: deliver it later.

        The SIP server gets ``0`` now and will not ask again, so the call is forgotten
        here as if the member had confirmed; a retransmit over UDP gets the cached ``0``.
        """
        member.defer(cmd.serialize(), trio.current_time())
        if _ends_call(cmd):
            self._forget(cmd)
        return "0\n"

    def _forget(self, cmd: Command) -> None:
        call_id = cmd.call_id
        assert call_id is not None
        self.sessions.unbind(call_id)

    async def _new_session(self, cmd: Command, tried: list[Member] | None = None) -> str:
        call_id = cmd.call_id
        assert call_id is not None
        members = self._members()
        if not any(m.online for m in members):
            return _error(E_NO_MEMBER)
        tried = tried or []
        hard = self.config.capacity_limit == "hard"
        while True:
            member = balancer.pick(members, hard, tried)
            if member is None:
                if tried:
                    return _error(E_MEMBER_TIMEOUT)
                if any(m.accepts_new_sessions for m in members):
                    return _error(E_NO_PICK)
                return _error(E_NO_MEMBER)
            sent = self._prepare(member, cmd)
            member.placed_since_report += 1
            try:
                reply = await member.send(sent, self.new_session_budget)
            except MemberError as exc:
                member.placed_since_report -= 1
                tried.append(member)
                if isinstance(exc, MemberTimeout) and cmd.from_tag is not None:
                    # It may still create the session late: delete it when it answers.
                    member.defer(f"D {call_id} {cmd.from_tag}", trio.current_time())
                continue
            if is_positive("U", reply):
                self.sessions.bind(call_id, member)
            else:
                member.placed_since_report -= 1
            return self._finish(member, cmd, reply)

    async def _find_owner(self, cmd: Command) -> str:
        """A command for a call nobody here knows: ask every online member."""
        online = [m for m in self._members() if m.online]
        if not online:
            return _error(E_NO_MEMBER)
        probe = cmd.as_lookup() if cmd.op == "U" else cmd
        probe_op = probe.op
        answers: list[tuple[Member, str | None]] = []

        async def ask(member: Member) -> None:
            try:
                answers.append(
                    (member, await member.send(self._prepare(member, probe), self.timeout))
                )
            except MemberError:
                answers.append((member, None))

        async with trio.open_nursery() as nursery:
            for member in online:
                nursery.start_soon(ask, member)
        positive = [(m, r) for m, r in answers if r is not None and is_positive(probe_op, r)]
        call_id = cmd.call_id
        assert call_id is not None
        if len(positive) == 1:
            owner, reply = positive[0]
            if not (cmd.op in _DELETING_OPS and _ended(cmd, reply)):
                self.sessions.bind(call_id, owner)
            if cmd.op == "U":
                return await self._forward(owner, cmd)
            return self._finish(owner, cmd, reply)
        # A D nobody confirms is not kept for members that did not answer: this process
        # never bound the call to them, and deletes kept for unknown calls would let any
        # client fill their queues. A session left there ends by its own timeout.
        if cmd.op == "U" and not positive:
            # RTPproxy never answers "not found" to U: no member has it, so create it.
            return await self._new_session(cmd)
        if cmd.op in ("U", "L"):
            return "0\n"
        return _error(E_BROADCAST)

    # --- per-member rewriting ------------------------------------------------------------

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
        relay = self.config.disconnect_notify
        if relay is not None and member.capabilities.get(CAP_WILDCARD_NOTIFY):
            args = relay_notify_args(relay, cmd.notify_socket or "", cmd.notify_tag or "")
            if args is not None:
                return cmd.with_notify(*args)
        return cmd.without_notify()

    def _finish(self, member: Member, cmd: Command, reply: str) -> str:
        reply = _ensure_newline(reply)
        if cmd.op in ("U", "L"):
            wan = member.config.wan_address
            if wan is not None and (
                member.config.lan_address is not None or cmd.local_address is None
            ):
                reply = rewrite_ul_address(reply, wan)
        return reply

    # --- cluster-wide commands -------------------------------------------------------------

    async def _version(self, cmd: Command) -> str:
        if not cmd.is_vf:
            if cmd.modifiers:
                return _error(2)
            return PROTOCOL_VERSION + "\n"
        online = [m for m in self._members() if m.online]
        date = cmd.args[0]
        if not online:
            # A SIP server probes capabilities once, when it starts; answer for the
            # RTPproxy base protocol rather than have it disable the cluster for a minute.
            return "1\n" if date in BASE_CAPABILITIES else "0\n"
        results: list[bool] = []

        async def ask(member: Member) -> None:
            known = member.capabilities.get(date)
            if known is None:
                try:
                    reply = await member.send(cmd, self.timeout)
                except MemberError:
                    return
                known = reply.strip() == "1"
                member.capabilities[date] = known
            results.append(known)

        async with trio.open_nursery() as nursery:
            for member in online:
                nursery.start_soon(ask, member)
        if not results:
            return _error(E_MEMBER_TIMEOUT)
        return "1\n" if all(results) else "0\n"

    def _info(self, cmd: Command) -> str:
        online = [m for m in self._members() if m.online]
        if not online:
            return _error(E_NO_MEMBER)
        modifiers = cmd.modifiers.lower()
        if modifiers.strip("bl"):
            return _error(18)
        totals = merge_stats(m.info for m in online)
        return format_info_reply(totals, with_load="l" in modifiers)

    async def _stats(self, cmd: Command) -> str:
        modifiers = cmd.modifiers.lower()
        if modifiers not in ("", "v"):
            return _error(9)
        verbose = modifiers == "v"
        names = list(cmd.args)
        online = [m for m in self._members() if m.online]
        if not online:
            return _error(E_NO_MEMBER)
        if not names:
            return "\n"
        request = "G " + " ".join(names)
        parts: list[dict[str, int | float]] = []
        errors: list[str] = []

        async def ask(member: Member) -> None:
            try:
                reply = await member.send(request, self.timeout)
                if is_error(reply):
                    errors.append(reply)
                    return
                values = parse_stats_reply(names, False, reply.strip())
            except (MemberError, ProtocolError):
                cached = member.stats_cache
                if all(name in cached for name in names):
                    parts.append({name: cached[name] for name in names})
                return
            member.stats_cache.update(values)
            parts.append(values)

        async with trio.open_nursery() as nursery:
            for member in online:
                nursery.start_soon(ask, member)
        if not parts:
            return _ensure_newline(errors[0]) if errors else _error(E_STATS_NONE)
        return format_stats_reply(names, verbose, merge_stats(parts))

    async def _delete_all(self) -> str:
        online = [m for m in self._members() if m.online]
        if not online:
            return _error(E_NO_MEMBER)
        failed: list[Member] = []

        async def tell(member: Member) -> None:
            try:
                await member.send("X", self.timeout)
            except MemberError:
                failed.append(member)

        async with trio.open_nursery() as nursery:
            for member in online:
                nursery.start_soon(tell, member)
        self.sessions.clear()
        return _error(E_MEMBER_TIMEOUT) if failed else "0\n"


# Commands that can end a call: D, and Q with a "&& D" subcommand (query and delete).
_DELETING_OPS = frozenset("DQ")


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


def _ended(cmd: Command, reply: str) -> bool:
    """Did the member confirm that ``cmd`` ended the call? (``cmd`` is a D or Q.)"""
    if is_error(reply) or not _ends_call(cmd):
        return False
    # Q ... && D: a failed subcommand shows as "&& -1" after the counters
    return cmd.op == "D" or "&&" not in reply


def _ensure_newline(reply: str) -> str:
    return reply if reply.endswith("\n") else reply + "\n"
