"""The Router's decisions, row by row of the routing table in docs/routing.md.

No sockets and no trio: members are Member objects moved through their states by their
own methods, calls are bound in a SessionTable, and each test looks at the decision the
Router returns (and at the decision ``combine`` makes of a broadcast's answers).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import pytest

from rtpcluster.cluster.decisions import (
    AllCallsForgotten,
    AllSupport,
    Answer,
    Broadcast,
    CapabilityLearned,
    DeleteAll,
    FindOwner,
    Forward,
    KeepDelete,
    OnSilence,
    OwnerFound,
    OwnerNotFound,
    PlaceNewCall,
    RefuseNewCall,
    StatsLearned,
    SumStats,
)
from rtpcluster.cluster.member import Member
from rtpcluster.cluster.router import Router
from rtpcluster.cluster.sessions import SessionTable
from rtpcluster.config import ClusterConfig, MemberConfig
from rtpcluster.config.models import DisconnectNotify
from rtpcluster.endpoint import Endpoint
from rtpcluster.protocol import CAP_WILDCARD_NOTIFY, Command, parse_command
from tests.unit.test_balancer import FixedRandom

_port = itertools.count(23000)
ROUTED_OPS = ["U", "L", "D", "P", "S", "R", "C", "Q", "N"]
# One command of each session op for call "c1", as a SIP server sends it.
SESSION_COMMANDS = {
    "U": "U c1 127.0.0.1 4000 f t",
    "L": "L c1 127.0.0.1 4002 f t",
    "D": "D c1 f t",
    "P": "P c1 prompt session f t",
    "S": "S c1 f t",
    "R": "R c1 f t",
    "C": "C c1 udp:127.0.0.1:9 f t",
    "Q": "Q c1 f t",
    "N": "N c1 f t",
}


def make_member(
    name: str,
    *,
    online: bool = True,
    kind: str = "udp",
    weight: int = 100,
    capacity: int = 1000,
    **fields: Any,
) -> Member:
    address = f"/tmp/{name}.sock" if kind in ("unix", "cunix") else f"127.0.0.1:{next(_port)}"
    config = MemberConfig.model_validate(
        {"name": name, "protocol": kind, "address": address, "weight": weight,
         "capacity": capacity, **fields}
    )  # fmt: skip
    member = Member(config, clock=lambda: 0.0)  # no trio run: a clock of its own
    if online:
        member.answered_probe()
    return member


def make_router(
    members: Sequence[Member], rng: float = 0.0, **settings: Any
) -> tuple[Router, SessionTable[Member]]:
    config = ClusterConfig(
        name="c1", listen=[Endpoint.parse("udp:127.0.0.1:1")], member_timeout=0.5, **settings
    )
    sessions: SessionTable[Member] = SessionTable()
    return Router(config, lambda: list(members), sessions, FixedRandom(rng)), sessions


def decide(router: Router, text: str) -> Any:
    return router.decide(parse_command(text))


def offline(member: Member) -> Member:
    member.lost("test: its connection failed")
    return member


# --- U without to-tag, unknown call: a new call -------------------------------------------


def test_a_new_call_is_placed_on_the_balancers_pick_with_the_new_call_budget() -> None:
    a, b = make_member("a", weight=100), make_member("b", weight=300)
    router, sessions = make_router([a, b], rng=0.5)  # 0.5 of 400 falls in b's share
    decision = decide(router, "U c1 127.0.0.1 4000 f")
    assert isinstance(decision, PlaceNewCall)
    assert decision.member is b
    assert decision.timeout == pytest.approx(0.3)  # 60 % of member_timeout
    assert decision.command == decision.request == parse_command("U c1 127.0.0.1 4000 f")
    assert decision.on_silence is OnSilence.FAIL_OVER
    assert decision.tried == ()
    # deciding changes nothing: the executor binds and counts once the member answers
    assert len(sessions) == 0 and b.placed_since_report == 0


def test_a_new_call_waits_the_configured_new_call_budget_and_a_reload_changes_it() -> None:
    a, b = make_member("a"), make_member("b")
    router, _ = make_router([a, b], new_call_budget=0.2)
    assert decide(router, "U c1 127.0.0.1 4000 f").timeout == pytest.approx(0.2)
    router.apply_settings(
        ClusterConfig(
            name="c1", listen=[Endpoint.parse("udp:127.0.0.1:1")], member_timeout=0.5,
            new_call_budget=0.45,
        )
    )  # fmt: skip
    again = decide(router, "U c2 127.0.0.1 4000 f")
    assert again.timeout == pytest.approx(0.45)
    assert router.fail_over(again).timeout == pytest.approx(0.45)  # the next member too


@pytest.mark.parametrize("kind", ["udp", "unix", "cunix", "tcp"])
def test_a_new_call_is_picked_once_whatever_the_members_transport(kind: str) -> None:
    """Regression: a non-UDP pick was picked again, so weights were applied twice."""
    udp, other = make_member("udp", weight=100), make_member("other", kind=kind, weight=300)
    router, _ = make_router([udp, other], rng=0.3)  # 0.3 of 400: in the second share
    decision = decide(router, "U c1 127.0.0.1 4000 f")
    assert isinstance(decision, PlaceNewCall) and decision.member is other


def test_fail_over_places_the_call_on_another_member_then_refuses_with_e997() -> None:
    a, b = make_member("a"), make_member("b")
    router, _ = make_router([a, b], rng=0.0)
    first = decide(router, "U c1 127.0.0.1 4000 f")
    assert isinstance(first, PlaceNewCall) and first.member is a
    second = router.fail_over(first)
    assert isinstance(second, PlaceNewCall)
    assert (second.member, second.tried, second.request) == (b, (a,), first.request)
    assert router.fail_over(second) == RefuseNewCall("E997\n")


def test_fail_over_after_every_member_went_offline_is_still_e997() -> None:
    a = make_member("a")
    router, _ = make_router([a])
    first = decide(router, "U c1 127.0.0.1 4000 f")
    offline(a)
    assert router.fail_over(first) == RefuseNewCall("E997\n")


def test_new_calls_refused_by_reason() -> None:
    router, _ = make_router([make_member("a", online=False)])
    assert decide(router, "U c1 127.0.0.1 4000 f") == RefuseNewCall("E999\n")
    suspended = make_member("s")
    suspended.suspend()
    router, _ = make_router([suspended])
    assert decide(router, "U c1 127.0.0.1 4000 f") == RefuseNewCall("E999\n")
    full = make_member("full", capacity=1)
    full.reported_sessions = 1
    router, _ = make_router([full], capacity_limit="hard")
    assert decide(router, "U c1 127.0.0.1 4000 f") == RefuseNewCall("E998\n")
    router, _ = make_router([full], capacity_limit="soft")
    assert decide(router, "U c1 127.0.0.1 4000 f").member is full


@pytest.mark.parametrize("how", ["suspended", "draining"])
def test_suspended_and_draining_members_take_no_new_calls(how: str) -> None:
    paused, active = make_member("paused", weight=1000), make_member("active", weight=1)
    paused.suspend() if how == "suspended" else paused.drain(None)
    router, _ = make_router([paused, active], rng=0.0)
    assert decide(router, "U c1 127.0.0.1 4000 f").member is active


# --- a call bound to an online member ------------------------------------------------------


@pytest.mark.parametrize("op", ROUTED_OPS)
@pytest.mark.parametrize("state", ["online", "suspended", "draining"])
def test_a_command_for_a_bound_call_goes_to_its_member(op: str, state: str) -> None:
    owner, other = make_member("owner"), make_member("other")
    if state == "suspended":
        owner.suspend()
    elif state == "draining":
        owner.drain(None)
    router, sessions = make_router([other, owner])
    sessions.bind("c1", owner)
    decision = decide(router, SESSION_COMMANDS[op])
    assert isinstance(decision, Forward)
    assert decision.member is owner
    assert decision.command == parse_command(SESSION_COMMANDS[op])
    assert decision.timeout == 0.5
    expected = OnSilence.DEFER_AND_ANSWER_0 if op == "D" else OnSilence.ANSWER_E997
    assert decision.on_silence is expected
    assert decision.ends_call == ("c1" if op == "D" else None)


def test_a_u_without_to_tag_for_a_bound_call_goes_to_its_member() -> None:
    owner = make_member("owner")
    router, sessions = make_router([make_member("other", weight=1000), owner], rng=0.0)
    sessions.bind("c1", owner)
    assert decide(router, "U c1 127.0.0.1 4000 f").member is owner  # a re-offer


@pytest.mark.parametrize(
    ("text", "ends"),
    [
        ("D c1 f", "c1"),
        ("Dw c1 f", None),  # weak: the session may live on
        ("Q c1 f t && D", "c1"),
        ("Q c1 f t", None),
    ],
)
def test_which_commands_end_the_call_once_confirmed(text: str, ends: str | None) -> None:
    owner = make_member("owner")
    router, sessions = make_router([owner])
    sessions.bind("c1", owner)
    assert decide(router, text).ends_call == ends


# --- a call bound to a member that is not online -----------------------------------------


@pytest.mark.parametrize("how", ["offline", "probing"])
def test_a_delete_for_a_member_not_online_is_kept_and_answered_at_once(how: str) -> None:
    owner = make_member("owner", online=how == "offline")
    if how == "offline":
        offline(owner)
    router, sessions = make_router([owner, make_member("other")])
    sessions.bind("c1", owner)
    assert decide(router, "D c1 f t") == KeepDelete(owner, "D c1 f t", "c1")
    assert decide(router, "Dw c1 f t") == KeepDelete(owner, "Dw c1 f t", None)


def test_a_new_offer_for_a_call_on_an_offline_member_is_placed_anew() -> None:
    owner, other = offline(make_member("owner")), make_member("other")
    router, sessions = make_router([owner, other])
    sessions.bind("c1", owner)
    decision = decide(router, "U c1 127.0.0.1 4000 f")
    assert isinstance(decision, PlaceNewCall) and decision.member is other


@pytest.mark.parametrize("op", [op for op in ROUTED_OPS if op != "D"])
def test_anything_else_for_an_offline_member_is_e997_at_once(op: str) -> None:
    owner = offline(make_member("owner"))
    router, sessions = make_router([owner, make_member("other")])
    sessions.bind("c1", owner)
    assert decide(router, SESSION_COMMANDS[op]) == Answer("E997\n")


# --- a call nobody here knows: every online member is asked ---------------------------------


@pytest.mark.parametrize("op", ROUTED_OPS)
def test_an_unknown_call_is_asked_of_every_online_member(op: str) -> None:
    a, b, gone = make_member("a"), make_member("b"), offline(make_member("gone"))
    router, _ = make_router([a, gone, b])
    decision = decide(router, SESSION_COMMANDS[op])
    assert isinstance(decision, Broadcast)
    assert [member for member, _ in decision.asks] == [a, b]
    assert decision.timeout == 0.5
    asked = {text for _, text in decision.asks}
    if op == "U":  # as an L with the tags swapped: nobody creates the session
        assert asked == {"L c1 127.0.0.1 4000 t f"}
    else:
        assert asked == {SESSION_COMMANDS[op]}
    assert decision.rule == FindOwner(
        parse_command(SESSION_COMMANDS[op]), "c1", "L" if op in "UL" else op
    )


def test_a_u_asked_around_loses_its_notify_arguments() -> None:
    router, _ = make_router([make_member("a")])
    decision = decide(router, "U c1 127.0.0.1 4000 f t unix:/run/sip.sock tag1")
    assert decision.asks[0][1] == "L c1 127.0.0.1 4000 t f"


def _broadcast(router: Router, text: str) -> Broadcast:
    decision = decide(router, text)
    assert isinstance(decision, Broadcast)
    return decision


def test_one_positive_answer_finds_and_binds_the_call() -> None:
    a, b = make_member("a"), make_member("b")
    router, _ = make_router([a, b])
    lookup = _broadcast(router, "L c1 127.0.0.1 4002 f t")
    decision, effects = router.combine(lookup, ["0\n", "35000 127.0.0.1\n"])
    assert decision == Answer("35000 127.0.0.1\n")
    assert effects == (OwnerFound("c1", b, bind=True),)


def test_a_u_that_finds_its_call_is_then_sent_to_that_member() -> None:
    a, b = make_member("a"), make_member("b")
    router, _ = make_router([a, b])
    offer = _broadcast(router, "U c1 127.0.0.1 4000 f t")
    decision, effects = router.combine(offer, [None, "35000\n"])
    assert isinstance(decision, Forward)
    assert decision.member is b
    assert decision.command == parse_command("U c1 127.0.0.1 4000 f t")
    assert effects == (OwnerFound("c1", b, bind=True),)


def test_a_delete_that_ends_the_call_it_found_binds_nothing() -> None:
    a, b = make_member("a"), make_member("b")
    router, _ = make_router([a, b])
    delete = _broadcast(router, "D c1 f t")
    decision, effects = router.combine(delete, ["E50\n", "0\n"])
    assert decision == Answer("0\n")
    assert effects == (OwnerFound("c1", b, bind=False),)
    weak = _broadcast(router, "Dw c1 f t")
    assert router.combine(weak, ["E50\n", "0\n"])[1] == (OwnerFound("c1", b, bind=True),)


@pytest.mark.parametrize(
    ("op", "answers", "expected"),
    [
        ("L", ["0\n", "0\n"], Answer("0\n")),  # nobody has it
        ("L", ["35000\n", "35002\n"], Answer("0\n")),  # two have it: ambiguous
        ("U", ["35000\n", "35002\n"], Answer("0\n")),
        ("D", ["E50\n", "E50\n"], Answer("E995\n")),
        ("D", ["E50\n", None], Answer("E995\n")),  # a silent member gets no kept delete
        ("Q", ["1 2 3 4 5\n", "1 2 3 4 5\n"], Answer("E995\n")),
        ("P", [None, None], Answer("E995\n")),
    ],
)
def test_not_exactly_one_positive_answer(
    op: str, answers: list[str | None], expected: Answer
) -> None:
    router, _ = make_router([make_member("a"), make_member("b")])
    decision, effects = router.combine(_broadcast(router, SESSION_COMMANDS[op]), answers)
    assert decision == expected
    assert effects == (OwnerNotFound("c1"),)


def test_a_u_nobody_has_is_placed_as_a_new_call() -> None:
    """RTPproxy never answers "not found" to U: no member has it, so it is created."""
    a, b = make_member("a"), make_member("b")
    router, _ = make_router([a, b], rng=0.9)
    decision, effects = router.combine(_broadcast(router, SESSION_COMMANDS["U"]), ["0\n", None])
    assert isinstance(decision, PlaceNewCall) and decision.member is b
    assert effects == (OwnerNotFound("c1"),)


def test_an_unknown_call_with_no_member_online_is_e999() -> None:
    router, _ = make_router([make_member("a", online=False)])
    for op in ROUTED_OPS:
        if op != "U":
            assert decide(router, SESSION_COMMANDS[op]) == Answer("E999\n"), op


# --- V, VF ------------------------------------------------------------------------------------


def test_v_is_answered_here() -> None:
    router, _ = make_router([])
    assert decide(router, "V") == Answer("20040107\n")
    # V with modifiers never gets here: parse_command refuses it (E2)
    assert decide(router, "V") == decide(router, "v")


def test_vf_with_no_member_online_answers_for_the_base_protocol() -> None:
    router, _ = make_router([make_member("a", online=False)])
    assert decide(router, "VF 20050322") == Answer("1\n")
    assert decide(router, "VF 20081224") == Answer("0\n")  # needs -n: not every RTPproxy
    assert decide(router, "VF 20170313") == Answer("0\n")


def test_vf_asks_only_the_members_that_have_not_answered_it_before() -> None:
    a, b = make_member("a"), make_member("b")
    a.capabilities["20191015"] = True
    router, _ = make_router([a, b])
    decision = decide(router, "VF 20191015")
    assert decision == Broadcast(((b, "VF 20191015"),), 0.5, AllSupport("20191015", (True,)))
    assert router.combine(decision, ["1\n"]) == (
        Answer("1\n"),
        (CapabilityLearned(b, "20191015", True),),
    )
    assert router.combine(decision, ["0\n"])[0] == Answer("0\n")
    b.capabilities["20191015"] = False
    assert decide(router, "VF 20191015") == Answer("0\n")  # all known: no broadcast


def test_vf_nobody_answered_is_e997() -> None:
    router, _ = make_router([make_member("a")])
    assert router.combine(decide(router, "VF 20191015"), [None]) == (Answer("E997\n"), ())


# --- I, G, X ---------------------------------------------------------------------------------


def test_i_sums_the_last_heartbeats_of_the_online_members() -> None:
    a, b, gone = make_member("a"), make_member("b"), offline(make_member("gone"))
    for member, sessions in ((a, 2), (b, 3), (gone, 100)):
        member.info = {"sessions created": sessions, "active sessions": sessions}
    router, _ = make_router([a, b, gone])
    for text in ("I", "Ib", "Il"):
        decision = decide(router, text)
        assert isinstance(decision, Answer)
        assert "active sessions: 5\n" in decision.text
    assert decide(router, "Ix") == Answer("E18\n")
    router, _ = make_router([gone])
    assert decide(router, "I") == Answer("E999\n")


def test_g_is_asked_of_every_online_member_and_summed() -> None:
    a, b = make_member("a"), make_member("b")
    router, _ = make_router([a, b])
    assert decide(router, "Gx nsess_created") == Answer("E9\n")
    assert decide(router, "G") == Answer("\n")
    stats = _broadcast(router, "Gv nsess_created total_duration")
    assert {text for _, text in stats.asks} == {"G nsess_created total_duration"}
    assert stats.rule == SumStats(("nsess_created", "total_duration"), True)
    decision, effects = router.combine(stats, ["3 1.5\n", "4 2.25\n"])
    assert decision == Answer("nsess_created=7 total_duration=3.750000\n")
    assert effects == (
        StatsLearned(a, {"nsess_created": 3, "total_duration": 1.5}),
        StatsLearned(b, {"nsess_created": 4, "total_duration": 2.25}),
    )


def test_g_takes_a_silent_members_last_values_and_is_e993_when_all_fail() -> None:
    a, b = make_member("a"), make_member("b")
    a.stats_cache = {"nsess_created": 10}
    router, _ = make_router([a, b])
    stats = _broadcast(router, "G nsess_created")
    assert router.combine(stats, [None, "4\n"])[0] == Answer("14\n")
    assert router.combine(stats, [None, None])[0] == Answer("10\n")
    b.stats_cache = {}
    a.stats_cache = {}
    assert router.combine(stats, [None, None])[0] == Answer("E993\n")
    assert router.combine(stats, ["E68\n", None])[0] == Answer("E68\n")  # their own error


def test_x_goes_to_every_online_member_and_forgets_every_call() -> None:
    a, b = make_member("a"), make_member("b")
    router, _ = make_router([a, b])
    delete_all = _broadcast(router, "X")
    assert delete_all == Broadcast(((a, "X"), (b, "X")), 0.5, DeleteAll())
    assert router.combine(delete_all, ["0\n", "0\n"]) == (Answer("0\n"), (AllCallsForgotten(),))
    assert router.combine(delete_all, ["0\n", None]) == (
        Answer("E997\n"),
        (AllCallsForgotten(),),
    )


@pytest.mark.parametrize("text", ["I", "G nsess_created", "X"])
def test_cluster_wide_commands_with_no_member_online_are_e999(text: str) -> None:
    router, _ = make_router([make_member("a", online=False)])
    assert decide(router, text) == Answer("E999\n")


# --- addresses and notifications -----------------------------------------------------------


def test_a_lan_address_is_given_to_the_member_and_a_wan_address_to_the_client() -> None:
    member = make_member("m", lan_address="10.0.0.1", wan_address="192.0.2.1")
    router, sessions = make_router([member])
    placed = decide(router, "U c1 127.0.0.1 4000 f")
    assert placed.command == parse_command("UL10.0.0.1 c1 127.0.0.1 4000 f")
    assert placed.wan == "192.0.2.1"
    sessions.bind("c1", member)
    forward = decide(router, "Lr192.0.2.9 c1 127.0.0.1 4002 f t")
    assert forward.command == parse_command("LL10.0.0.1 c1 127.0.0.1 4002 f t")
    assert forward.wan == "192.0.2.1"
    assert decide(router, "D c1 f t").wan is None  # only U and L replies carry an address


def test_a_wan_address_without_lan_address_leaves_a_reply_to_an_explicit_local_address() -> None:
    member = make_member("m", wan_address="192.0.2.1")
    router, _ = make_router([member])
    assert decide(router, "U c1 127.0.0.1 4000 f").wan == "192.0.2.1"
    assert decide(router, "UL127.0.0.1 c1 127.0.0.1 4000 f").wan is None


def test_notify_arguments_kept_for_a_local_member_relayed_or_stripped_for_others(
    tmp_path: Any,
) -> None:
    offer = "U c1 127.0.0.1 4000 f /run/sip/b2b.sock tag1"
    local = make_member("local", kind="unix")
    router, _ = make_router([local])
    assert decide(router, offer).command == parse_command(offer)
    remote = make_member("remote")
    router, _ = make_router([remote])
    assert decide(router, offer).command.notify_socket is None  # no relay: stripped
    relay = DisconnectNotify(
        inbound_address="127.0.0.1:9999",
        dest_socket_prefix="/run/sip/",
        key_file=str(tmp_path / "relay.key"),
    )
    router, _ = make_router([remote], disconnect_notify=relay)
    assert decide(router, offer).command.notify_socket is None  # lacks the wildcard capability
    remote.capabilities[CAP_WILDCARD_NOTIFY] = True
    relayed: Command = decide(router, offer).command
    assert relayed.notify_socket == "tcp:%%CC_SELF%%:9999"
    assert relayed.notify_tag is not None and relayed.notify_tag.startswith("b2b.sock")
