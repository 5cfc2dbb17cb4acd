"""Executors: they carry out the Router's decisions and record what happened.

:class:`InlineExecutor` serves UDP commands without a task: a decision to forward a
command or to place a new call on a member whose client takes a callback (a UDP member)
is sent at once, and the reply, or its absence at the deadline, comes back through the
callback from the member's receive loop. Everything else (a broadcast, a member reached
over a stream, a fail-over to such a member) it hands to :class:`TaskExecutor`, which
runs a decision in a task, as it runs every stream command in its connection's task.

Both record each outcome through the same :class:`~rtpcluster.cluster.outcomes.Outcomes`
method, and both follow a decision to the next one the Router makes of it (a fail-over,
the U after a broadcast found its call, whatever a read of the session store named)
until there is an answer. A fault of ours while
carrying one out is logged and answered E990; it never reaches a client as a time-out.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable

import trio

from rtpcluster.cluster.decisions import (
    Answer,
    Broadcast,
    Decision,
    Forward,
    KeepDelete,
    PlaceNewCall,
    ReadStore,
    RefuseNewCall,
)
from rtpcluster.cluster.outcomes import Outcomes
from rtpcluster.cluster.router import Router
from rtpcluster.protocol import (
    E_INTERNAL,
    ProtocolError,
    error_reply,
    parse_command,
    reply_lines,
)
from rtpcluster.transport.member_client import MemberError, MemberTimeout, UdpMemberClient

log = logging.getLogger(__name__)

INTERNAL_REPLY = error_reply(E_INTERNAL)

Respond = Callable[[str], None]
Abandon = Callable[[], None]
# The session store's read of one call-id: the member name it holds, or None (a miss, an
# error or its deadline passed; the store bounds the wait itself).
ReadMember = Callable[[str], Awaitable[str | None]]


async def _nothing_stored(call_id: str) -> str | None:
    return None


def _internal_error(what: object, call_id: str | None = None) -> str:
    log.exception("internal error while routing %r", what, extra={"call_id": call_id})
    return INTERNAL_REPLY


def _call_of(decision: Decision) -> str | None:
    """The call a decision is about, for the log line of a fault while carrying it out."""
    if isinstance(decision, PlaceNewCall):
        return decision.call_id
    if isinstance(decision, Forward):
        return decision.command.call_id
    return None


class TaskExecutor:
    """Carries out decisions in a task; :meth:`run` owns the tasks it starts."""

    def __init__(
        self, router: Router, outcomes: Outcomes, read_member: ReadMember = _nothing_stored
    ) -> None:
        """``read_member``: the cluster's read of the session store (a ReadStore decision)."""
        self._router = router
        self._outcomes = outcomes
        self._read_member = read_member
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The nursery of the commands that need a task of their own; until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    async def handle(self, data: bytes) -> str:
        """Answer one command in the caller's task (a stream command); never raises."""
        try:
            cmd = parse_command(data)
        except ProtocolError as exc:
            return error_reply(exc.code)
        try:
            decision = self._router.decide(cmd)
        except Exception:
            return _internal_error(cmd.serialize()[:200], cmd.call_id)
        return await self.carry_out(decision)

    def start(self, decision: Decision, respond: Respond, abandon: Abandon) -> None:
        """Carry ``decision`` out in a task; its answer goes to ``respond``.

        If the task never answers (the cluster stops), ``abandon`` is called instead.
        """
        if self._nursery is None:
            abandon()
            return
        try:
            self._nursery.start_soon(self._respond_later, decision, respond, abandon)
        except RuntimeError:  # the nursery has closed: the cluster is stopping
            abandon()

    async def _respond_later(self, decision: Decision, respond: Respond, abandon: Abandon) -> None:
        try:
            reply = await self.carry_out(decision)
        except BaseException:
            abandon()
            raise
        respond(reply)

    async def carry_out(self, decision: Decision) -> str:
        """Follow ``decision`` to its answer; never raises for anything a client sent."""
        try:
            return await self._follow(decision)
        except Exception:
            return _internal_error(decision, _call_of(decision))

    async def _follow(self, decision: Decision) -> str:
        router, outcomes = self._router, self._outcomes
        while True:
            if isinstance(decision, Forward):
                command = decision.command
                try:
                    reply = await decision.member.client.request(
                        command.serialize(), decision.timeout, reply_lines(command)
                    )
                except MemberError:
                    return outcomes.forward_unanswered(decision)
                return outcomes.forwarded(decision, reply)
            if isinstance(decision, PlaceNewCall):
                command = decision.command
                outcomes.offer_sent(decision)
                try:
                    reply = await decision.member.client.request(
                        command.serialize(), decision.timeout, reply_lines(command)
                    )
                except MemberError as exc:
                    outcomes.offer_unanswered(decision, isinstance(exc, MemberTimeout))
                    decision = router.fail_over(decision)
                    continue
                return outcomes.call_placed(decision, reply)
            if isinstance(decision, Broadcast):
                answers = await self._ask_all(decision)
                decision, effects = router.combine(decision, answers)
                for effect in effects:
                    outcomes.learned(effect)
                continue
            if isinstance(decision, ReadStore):
                stored = await self._read_member(decision.call_id)
                decision, effects = router.after_read(decision, stored)
                for effect in effects:
                    outcomes.learned(effect)
                continue
            if isinstance(decision, Answer):
                return decision.text
            if isinstance(decision, KeepDelete):
                return outcomes.delete_kept(decision)
            return outcomes.call_refused(decision)

    async def _ask_all(self, broadcast: Broadcast) -> list[str | None]:
        """Every member's answer, in the order asked; None where it was silent."""
        answers: list[str | None] = [None] * len(broadcast.asks)

        async def ask(index: int) -> None:
            member, text = broadcast.asks[index]
            with contextlib.suppress(MemberError):  # silent: stays None
                answers[index] = await member.client.request(text, broadcast.timeout)

        async with trio.open_nursery() as nursery:
            for index in range(len(broadcast.asks)):
                nursery.start_soon(ask, index)
        for (member, _), reply in zip(broadcast.asks, answers, strict=True):
            self._outcomes.asked(member, reply)
        return answers


class InlineExecutor:
    """Carries out UDP commands without a task where the member's client allows it."""

    def __init__(self, router: Router, outcomes: Outcomes, tasks: TaskExecutor) -> None:
        self._router = router
        self._outcomes = outcomes
        self._tasks = tasks

    def dispatch(self, data: bytes, respond: Respond, abandon: Abandon) -> None:
        """Answer one command through ``respond``, now or later; never raises.

        ``abandon`` is called instead when a task it needed was cancelled (the cluster
        stops) before it answered.
        """
        try:
            cmd = parse_command(data)
        except ProtocolError as exc:
            respond(error_reply(exc.code))
            return
        try:
            decision = self._router.decide(cmd)
        except Exception:
            respond(_internal_error(cmd.serialize()[:200], cmd.call_id))
            return
        self.carry_out(decision, respond, abandon)

    def carry_out(self, decision: Decision, respond: Respond, abandon: Abandon) -> None:
        if isinstance(decision, Forward):
            client = decision.member.client
            if type(client) is UdpMemberClient:
                self._forward(client, decision, respond)
                return
        elif isinstance(decision, PlaceNewCall):
            client = decision.member.client
            if type(client) is UdpMemberClient:
                self._place(client, decision, respond, abandon)
                return
        elif isinstance(decision, Answer):
            respond(decision.text)
            return
        elif isinstance(decision, KeepDelete):
            respond(self._outcomes.delete_kept(decision))
            return
        elif isinstance(decision, RefuseNewCall):
            respond(self._outcomes.call_refused(decision))
            return
        self._tasks.start(decision, respond, abandon)

    def _forward(self, client: UdpMemberClient, decision: Forward, respond: Respond) -> None:
        outcomes = self._outcomes

        def done(reply: str | None) -> None:
            try:
                if reply is None:
                    text = outcomes.forward_unanswered(decision)
                else:
                    text = outcomes.forwarded(decision, reply)
            except Exception:
                text = _internal_error(decision, _call_of(decision))
            respond(text)

        client.submit(decision.command.serialize(), decision.timeout, done)

    def _place(
        self, client: UdpMemberClient, decision: PlaceNewCall, respond: Respond, abandon: Abandon
    ) -> None:
        outcomes = self._outcomes
        outcomes.offer_sent(decision)

        def done(reply: str | None) -> None:
            if reply is not None:
                try:
                    text = outcomes.call_placed(decision, reply)
                except Exception:
                    text = _internal_error(decision, _call_of(decision))
                respond(text)
                return
            try:
                outcomes.offer_unanswered(decision, timed_out=True)
                following = self._router.fail_over(decision)
            except Exception:
                respond(_internal_error(decision, _call_of(decision)))
                return
            self.carry_out(following, respond, abandon)

        client.submit(decision.command.serialize(), decision.timeout, done)
