"""Property tests of the admin command parsing: any line gets a reply, never an exception."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtpcluster.admin.commands import run_command
from rtpcluster.admin.registry import CommandError, parse_field_list
from rtpcluster.config import MemberChanges
from tests.unit.test_admin_commands import FakeControl

KEYS = st.from_regex(r"[a-z][a-z_]{0,12}", fullmatch=True)
# values as an operator types them: no comma outside brackets, no '=' ambiguity issue
VALUES = st.one_of(
    st.from_regex(r"[A-Za-z0-9_.:/#-]{0,20}", fullmatch=True),
    st.from_regex(r"\[[0-9a-f:]{2,20}\]:[0-9]{1,5}", fullmatch=True),
)
WORDS = st.sampled_from(
    [
        "ls",
        "LS",
        "modify",
        "add",
        "delete",
        "remove",
        "pause",
        "suspend",
        "resume",
        "create",
        "destroy",
        "reload",
        "--dry-run",
        "save",
        "help",
        "h",
        "--json",
        "Supercluster#1",
        "RTPPROXY1",
        "c1",
        "timeout=5",
        "timeout=x",
        "set",
        "weight=5,backup=yes",
        "capacity=0",
        "backup=maybe",
        "name=a,protocol=udp,address=1.2.3.4:5",
        "address=udp:127.0.0.1:1",
        "x",
        "=",
        ",",
        "[",
        "]",
    ]
)


@given(st.lists(st.tuples(KEYS, VALUES), max_size=6))
def test_field_lists_round_trip(pairs: list[tuple[str, str]]) -> None:
    text = ",".join(f"{key}={value}" for key, value in pairs)
    assert parse_field_list(text) == [(key, value.strip()) for key, value in pairs]


@given(st.text(max_size=60))
def test_field_list_parser_raises_only_command_errors(text: str) -> None:
    try:
        pairs = parse_field_list(text)
    except CommandError:
        return
    assert all(key and key == key.strip().lower() for key, _ in pairs)


def _reply_for(line: str) -> list[str]:
    async def main() -> list[str]:
        return (await run_command(FakeControl(), line)).render()

    return trio.run(main)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],  # one scratch dir is enough
)
@given(line=st.one_of(st.text(max_size=80), st.lists(WORDS, max_size=6).map(" ".join)))
def test_every_line_gets_ok_or_error(
    line: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # `save PATH` writes files: keep them out of the tree
    rendered = _reply_for(line)
    if rendered:  # quit closes without a status line
        last = rendered[-1]
        assert last == "OK" or last.startswith("ERROR: ")
        assert "Traceback" not in "\n".join(rendered)
        assert not last.startswith("ERROR: internal error")


def _calls_for(line: str) -> tuple[list[str], list[tuple[object, ...]]]:
    control = FakeControl()

    async def main() -> list[str]:
        return (await run_command(control, line)).render()

    return trio.run(main), control.calls


@st.composite
def set_fields(draw: st.DrawFn) -> tuple[str, MemberChanges]:
    """``modify set`` fields in any order and case, and what they mean."""
    wanted = {
        "weight": draw(st.none() | st.integers(1, 10**6)),
        "capacity": draw(st.none() | st.integers(1, 10**6)),
        "backup": draw(st.none() | st.booleans()),
    }
    wanted = {key: value for key, value in wanted.items() if value is not None} or {"weight": 1}
    texts = []
    for key, value in wanted.items():
        text = ("yes" if value else "no") if isinstance(value, bool) else str(value)
        key_case = draw(st.sampled_from([key, key.upper(), key.capitalize()]))
        texts.append(f"{key_case}={draw(st.sampled_from([text, text.upper()]))}")
    order = draw(st.permutations(texts))
    separator = draw(st.sampled_from([",", ", "]))
    return separator.join(order), MemberChanges.model_validate(wanted)


@settings(max_examples=60, deadline=None)
@given(set_fields())
def test_modify_set_hands_exactly_the_given_changes_to_the_service(
    case: tuple[str, MemberChanges],
) -> None:
    fields, changes = case
    rendered, calls = _calls_for(f"modify Supercluster#1 set RTPPROXY1 {fields}")
    assert rendered == ["OK"]
    assert calls == [("set_member", "Supercluster#1", "RTPPROXY1", changes)]
