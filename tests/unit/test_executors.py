"""The executors and their bookkeeping: what each outcome leaves behind, counted once.

Members here talk to hand-written fakes: a scripted client (for the task executor) and
the fake UDP member of test_member_client (for the inline one, through a real
UdpMemberClient). What is tested is this module's bookkeeping, not a transport.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Callable, Sequence

import pytest
import trio
import trio.testing

from rtpcluster.cluster.executors import InlineExecutor, TaskExecutor
from rtpcluster.cluster.member import OFFLINE, ONLINE, Member
from rtpcluster.cluster.outcomes import Outcomes
from rtpcluster.cluster.router import Router
from rtpcluster.cluster.sessions import SessionTable
from rtpcluster.config import ClusterConfig, MemberConfig
from rtpcluster.endpoint import Endpoint
from rtpcluster.transport.member_client import (
    MemberTimeout,
    MemberUnavailable,
    UdpMemberClient,
)
from tests.unit.test_member_client import FakeUdpMember

_port = itertools.count(24000)

Script = Callable[[str], str | BaseException]


class ScriptedClient:
    """A stream-like member client: each request gets what ``script`` says for it."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.sent: list[str] = []

    @property
    def rtt(self) -> float | None:
        return None

    async def request(self, command: str, timeout: float, lines: int = 1) -> str:
        self.sent.append(command)
        await trio.lowlevel.checkpoint()
        answer = self.script(command)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()

    def close(self) -> None:
        pass


def silent(command: str) -> BaseException:
    return MemberTimeout(f"no reply to {command}")


def unreachable(command: str) -> BaseException:
    return MemberUnavailable(f"cannot send {command}")


def member(name: str, client: object) -> Member:
    config = MemberConfig.model_validate(
        {"name": name, "protocol": "udp", "address": f"127.0.0.1:{next(_port)}"}
    )
    m = Member(config, client, cluster="c1")  # type: ignore[arg-type]
    m.answered_probe()
    return m


def kept(m: Member) -> list[str]:
    """The deletes kept for ``m``, oldest first."""
    return [m.deferred[i][1] for i in range(len(m.deferred))]


class Rig:
    def __init__(self, members: Sequence[Member], rng: float = 0.0) -> None:
        config = ClusterConfig(name="c1", listen=[Endpoint.parse("udp:127.0.0.1:1")])
        self.sessions: SessionTable[Member] = SessionTable()
        fixed = random.Random(0)
        fixed.random = lambda: rng  # type: ignore[method-assign]
        self.router = Router(config, lambda: list(members), self.sessions, fixed)
        outcomes = Outcomes(self.sessions)
        self.counters = outcomes.counters
        self.tasks = TaskExecutor(self.router, outcomes)
        self.inline = InlineExecutor(self.router, outcomes, self.tasks)

    def new_calls(self) -> tuple[int, int, int]:
        """(placed, failover, refused) so far."""
        c = self.counters
        return (c.new_calls_placed, c.new_calls_failover, c.new_calls_refused)


def sent(m: Member) -> dict[str, int]:
    """What ``m`` was sent, by result (zeros left out)."""
    return {result: n for result, n in m.counters.commands.items() if n}


# --- the task executor -----------------------------------------------------------------------


async def test_a_silent_member_is_failed_over_once_and_its_offer_kept_for_deletion() -> None:
    a = member("a", ScriptedClient(silent))
    b = member("b", ScriptedClient(lambda _: "35000 127.0.0.1"))
    rig = Rig([a, b], rng=0.0)  # picks a first
    assert await rig.tasks.handle(b"U c1 127.0.0.1 4000 f") == "35000 127.0.0.1\n"
    assert rig.sessions.get("c1") is b
    assert (a.placed_since_report, b.placed_since_report) == (0, 1)
    assert (a.failures, b.failures) == (1, 0)
    # a may still create the session late: a delete of that offer is kept for it
    assert kept(a) == ["D c1 f"]
    assert a.client.sent == b.client.sent == ["U c1 127.0.0.1 4000 f"]  # type: ignore[attr-defined]
    # counted once each: a failover, a silence on a, an answer from b
    assert rig.new_calls() == (0, 1, 0)
    assert (sent(a), sent(b)) == ({"timeout": 1}, {"ok": 1})


async def test_an_unreachable_member_gets_no_delete_kept_for_an_offer_it_never_saw() -> None:
    a = member("a", ScriptedClient(unreachable))
    b = member("b", ScriptedClient(lambda _: "35000"))
    rig = Rig([a, b], rng=0.0)
    assert await rig.tasks.handle(b"U c1 127.0.0.1 4000 f") == "35000\n"
    assert len(a.deferred) == 0


async def test_every_member_silent_on_a_new_call_is_e997_and_takes_them_offline(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    a, b = member("a", ScriptedClient(silent)), member("b", ScriptedClient(silent))
    rig = Rig([a, b])
    assert await rig.tasks.handle(b"U c1 127.0.0.1 4000 f") == "E997\n"
    assert await rig.tasks.handle(b"U c2 127.0.0.1 4000 f") == "E997\n"
    assert a.state is b.state is OFFLINE
    assert rig.new_calls() == (0, 0, 2)
    assert sent(a) == sent(b) == {"timeout": 2}
    assert a.counters.state_changes == b.counters.state_changes == 2  # online, then offline
    moves = [r.getMessage() for r in caplog.records if "offline" in r.getMessage()]
    assert sorted(moves) == [
        "c1: member a: offline (no answer to 2 forwarded commands in a row)",
        "c1: member b: offline (no answer to 2 forwarded commands in a row)",
    ]
    assert all(r.levelno == logging.WARNING for r in caplog.records if "offline" in r.message)


async def test_a_delete_its_member_does_not_answer_is_kept_and_the_call_forgotten() -> None:
    a = member("a", ScriptedClient(silent))
    rig = Rig([a])
    rig.sessions.bind("c1", a)
    assert await rig.tasks.handle(b"D c1 f t") == "0\n"
    assert rig.sessions.get("c1") is None
    assert kept(a) == ["D c1 f t"]
    rig.sessions.bind("c2", a)
    assert await rig.tasks.handle(b"L c2 127.0.0.1 4002 f t") == "E997\n"
    assert rig.sessions.get("c2") is a  # only a delete forgets the call
    assert a.state is OFFLINE  # two in a row unanswered


async def test_a_confirmed_delete_forgets_the_call_and_an_answer_ends_a_run_of_failures() -> None:
    replies = iter([MemberTimeout("lost"), "0"])
    a = member("a", ScriptedClient(lambda _: next(replies)))
    rig = Rig([a])
    rig.sessions.bind("c1", a)
    rig.sessions.bind("c2", a)
    assert await rig.tasks.handle(b"L c1 127.0.0.1 4002 f t") == "E997\n"
    assert a.failures == 1
    assert await rig.tasks.handle(b"D c2 f t") == "0\n"
    assert (a.failures, a.state) == (0, ONLINE)
    assert rig.sessions.get("c2") is None and len(a.deferred) == 0


async def test_a_call_found_by_asking_around_is_bound_to_the_member_that_has_it() -> None:
    a = member("a", ScriptedClient(lambda _: "0"))
    b = member("b", ScriptedClient(lambda _: "35000"))
    rig = Rig([a, b])
    assert await rig.tasks.handle(b"L c1 127.0.0.1 4002 f t") == "35000\n"
    assert rig.sessions.get("c1") is b
    assert await rig.tasks.handle(b"Q c9 f t") == "E995\n"  # 0 is no Q answer, for nobody
    assert (rig.counters.broadcast_found, rig.counters.broadcast_not_found) == (1, 1)
    assert sent(a) == sent(b) == {"ok": 2}  # each asked once per broadcast


async def test_a_member_refusing_a_new_call_counts_an_error_and_a_refused_call() -> None:
    a = member("a", ScriptedClient(lambda _: "E71"))
    rig = Rig([a])
    assert await rig.tasks.handle(b"U c1 127.0.0.1 4000 f") == "E71\n"
    assert rig.new_calls() == (0, 0, 1)
    assert sent(a) == {"error": 1} and a.failures == 0  # it answered
    assert await rig.tasks.handle(b"U c2 127.0.0.1 4000 f") == "E71\n"
    assert rig.sessions.get("c1") is rig.sessions.get("c2") is None


async def test_no_member_online_refuses_a_new_call_without_sending_anything() -> None:
    a = member("a", ScriptedClient(lambda _: "35000"))
    a.lost("test: connection failed")
    rig = Rig([a])
    assert await rig.tasks.handle(b"U c1 127.0.0.1 4000 f") == "E999\n"
    assert rig.new_calls() == (0, 0, 1)
    assert sent(a) == {}


async def test_a_fault_of_ours_is_e990_and_logged_not_a_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken = member("broken", ScriptedClient(lambda _: RuntimeError("bug")))
    rig = Rig([broken])
    rig.sessions.bind("c1", broken)
    assert await rig.tasks.handle(b"L c1 127.0.0.1 4002 f t") == "E990\n"
    [fault] = [r for r in caplog.records if "internal error while routing" in r.getMessage()]
    assert getattr(fault, "call_id", None) == "c1"  # the JSON log's call_id key
    assert broken.failures == 0  # not counted against the member


async def test_malformed_commands_get_the_rtpproxy_error_from_both_executors() -> None:
    rig = Rig([])
    replies: list[str] = []
    for text, code in ((b"Z c1", "E0\n"), (b"U c1", "E1\n"), (b"", "E5\n")):
        assert await rig.tasks.handle(text) == code
        rig.inline.dispatch(text, replies.append, lambda: None)
    assert replies == ["E0\n", "E1\n", "E5\n"]


# --- the inline executor ---------------------------------------------------------------------


def _never_abandoned() -> None:
    raise AssertionError("handed to a task: the task executor is not running here")


async def test_udp_commands_are_carried_out_without_a_task() -> None:
    """The task executor is not running: a decision handed to it would be abandoned."""
    fakes = [FakeUdpMember(lambda command: "35000"), FakeUdpMember(lambda command: "0")]
    async with trio.open_nursery() as nursery:
        clients = []
        for fake in fakes:
            await nursery.start(fake.run)
            client = UdpMemberClient(fake.endpoint)
            await nursery.start(client.run)
            clients.append(client)
        a, b = member("a", clients[0]), member("b", clients[1])
        rig = Rig([a, b], rng=0.0)
        replies: list[str] = []
        answered = trio.Event()

        def respond(reply: str) -> None:
            replies.append(reply)
            answered.set()

        rig.inline.dispatch(b"U c1 127.0.0.1 4000 f", respond, _never_abandoned)  # new call
        await answered.wait()
        answered = trio.Event()
        rig.inline.dispatch(b"L c1 127.0.0.1 4002 f t", respond, _never_abandoned)  # bound
        await answered.wait()
        rig.inline.dispatch(b"V", respond, _never_abandoned)  # answered here, at once
        assert replies == ["35000\n", "35000\n", "20040107\n"]
        assert rig.sessions.get("c1") is a and a.placed_since_report == 1
        assert rig.new_calls() == (1, 0, 0)
        assert (sent(a), sent(b)) == ({"ok": 2}, {})
        nursery.cancel_scope.cancel()


async def test_a_member_without_callbacks_gets_its_command_from_a_task() -> None:
    stream = member("s", ScriptedClient(lambda _: "35000"))
    rig = Rig([stream])
    replies: list[str] = []
    answered = trio.Event()

    def respond(reply: str) -> None:
        replies.append(reply)
        answered.set()

    async with trio.open_nursery() as nursery:
        await nursery.start(rig.tasks.run)
        rig.inline.dispatch(b"U c1 127.0.0.1 4000 f", respond, _never_abandoned)
        assert replies == []  # not answered inline
        await answered.wait()
        assert replies == ["35000\n"]
        assert rig.sessions.get("c1") is stream
        nursery.cancel_scope.cancel()


async def test_a_task_cancelled_before_it_answers_abandons_its_command() -> None:
    async def never(command: str, timeout: float, lines: int = 1) -> str:
        await trio.sleep_forever()
        raise AssertionError

    hung = member("h", ScriptedClient(lambda _: "x"))
    hung.client.request = never  # type: ignore[method-assign]
    rig = Rig([hung])
    abandoned = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(rig.tasks.run)
        rig.inline.dispatch(b"U c1 127.0.0.1 4000 f", lambda _: None, abandoned.set)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert abandoned.is_set()
