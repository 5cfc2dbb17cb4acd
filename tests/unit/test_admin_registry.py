"""The admin command registry: parsing words into models, help text, dispatch, errors."""

from __future__ import annotations

from typing import Annotated

import pydantic
import pytest

from rtpcluster.admin.registry import (
    CommandError,
    FieldList,
    Flag,
    Option,
    Registry,
    Reply,
    Rest,
    parse_field_list,
    unique_fields,
)


class Ctx:
    def __init__(self) -> None:
        self.seen: list[pydantic.BaseModel] = []


class ShowArgs(pydantic.BaseModel):
    target: str
    extra: str | None = None
    as_json: Annotated[bool, Flag("json")] = False
    dry_run: Annotated[bool, Flag()] = False


class TimeoutArgs(pydantic.BaseModel):
    member: str
    timeout: Annotated[float | None, Option(), pydantic.Field(ge=0)] = None


class FieldsArgs(pydantic.BaseModel):
    name: str
    fields: Annotated[list[tuple[str, str]], FieldList()]


class RestArgs(pydantic.BaseModel):
    first: str
    rest: Annotated[list[str], Rest()] = []


class NoArgs(pydantic.BaseModel):
    pass


def make_registry() -> Registry[Ctx]:
    registry: Registry[Ctx] = Registry(errors=(KeyError,))

    async def record(ctx: Ctx, args: pydantic.BaseModel) -> Reply:
        ctx.seen.append(args)
        return Reply([type(args).__name__])

    registry.command("show", "sh", args=ShowArgs, help="show a thing")(record)
    registry.command("drop", args=TimeoutArgs, help="drop a member")(record)
    registry.command("add", args=FieldsArgs, help="add with fields")(record)
    registry.command("pass", args=RestArgs, help="pass words on")(record)

    @registry.command("boom", args=NoArgs, help="always fails")
    async def boom(ctx: Ctx, args: NoArgs) -> Reply:
        raise RuntimeError("kaput")

    @registry.command("refuse", args=NoArgs, help="a refusal")
    async def refuse(ctx: Ctx, args: NoArgs) -> Reply:
        raise KeyError("no such thing")

    return registry


def parse(line: str) -> pydantic.BaseModel:
    return make_registry().parse(line.split())[1]


def test_positionals_fill_in_order_and_optional_ones_may_be_left_out() -> None:
    assert parse("show a") == ShowArgs(target="a")
    assert parse("show a b") == ShowArgs(target="a", extra="b")


def test_flags_anywhere_and_named_by_field_or_override() -> None:
    assert parse("show --json a --dry-run") == ShowArgs(target="a", as_json=True, dry_run=True)


def test_command_words_flags_and_keys_are_case_insensitive() -> None:
    registry = make_registry()
    command, args = registry.parse(["SHOW", "Name", "--JSON"])
    assert command.name == "show"
    assert args == ShowArgs(target="Name", as_json=True)  # the value keeps its case
    assert parse("DROP m TIMEOUT=5") == TimeoutArgs(member="m", timeout=5.0)
    assert parse("add n NAME=X") == FieldsArgs(name="n", fields=[("name", "X")])


def test_alias_finds_the_same_command() -> None:
    registry = make_registry()
    assert registry.lookup("sh") is registry.lookup("show")


def test_option_value_is_validated_by_the_model() -> None:
    assert parse("drop m") == TimeoutArgs(member="m")
    with pytest.raises(CommandError, match="drop: bad timeout"):
        parse("drop m timeout=soon")
    with pytest.raises(CommandError, match="drop: bad timeout"):
        parse("drop m timeout=-1")


def test_field_list_keeps_colons_and_brackets_in_values() -> None:
    args = parse("add n name=a,address=[::1]:22222,cmd_out_address=10.0.0.1:5060")
    assert args == FieldsArgs(
        name="n",
        fields=[("name", "a"), ("address", "[::1]:22222"), ("cmd_out_address", "10.0.0.1:5060")],
    )


def test_field_list_words_are_joined_and_empty_items_skipped() -> None:
    args = parse("add n name=a, weight=3,")
    assert args == FieldsArgs(name="n", fields=[("name", "a"), ("weight", "3")])


def test_comma_inside_brackets_does_not_split() -> None:
    assert parse_field_list("a=[x,y],b=2") == [("a", "[x,y]"), ("b", "2")]


def test_field_without_equals_is_refused() -> None:
    with pytest.raises(CommandError, match="bad field 'oops'"):
        parse_field_list("a=1,oops")
    with pytest.raises(CommandError, match="expected key=value"):
        parse_field_list("=1")


def test_unique_fields_refuses_a_key_given_twice() -> None:
    assert unique_fields([("a", "1"), ("b", "2")]) == {"a": "1", "b": "2"}
    with pytest.raises(CommandError, match="'a' given twice"):
        unique_fields([("a", "1"), ("a", "2")])


def test_rest_collects_everything_after_the_positionals_untouched() -> None:
    assert parse("pass x y --z k=v") == RestArgs(first="x", rest=["y", "--z", "k=v"])
    assert parse("pass x") == RestArgs(first="x")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("show", "show: missing <target>; usage: show <target> [<extra>] [--json] [--dry-run]"),
        ("show a b c", "show: unexpected argument: 'c'"),
        ("show a --bogus", "show: unknown option: --bogus"),
        ("add n", "add: missing KEY=VALUE"),
    ],
)
def test_bad_arguments_say_what_is_wrong(line: str, message: str) -> None:
    with pytest.raises(CommandError) as raised:
        parse(line)
    assert str(raised.value).startswith(message)


async def test_dispatch_runs_the_handler_with_the_model() -> None:
    ctx = Ctx()
    reply = await make_registry().dispatch(ctx, "  show   a  ")
    assert reply.render() == ["ShowArgs", "OK"]
    assert ctx.seen == [ShowArgs(target="a")]


async def test_unknown_and_empty_command_lines() -> None:
    registry = make_registry()
    assert (await registry.dispatch(Ctx(), "frobnicate x")).render() == ["ERROR: unknown command"]
    assert (await registry.dispatch(Ctx(), "")).render() == ["ERROR: unknown command"]


async def test_nested_registry_words_its_unknown_error() -> None:
    registry: Registry[Ctx] = Registry(unknown=lambda word: f'unsupported action: "{word}"')
    reply = await registry.dispatch(Ctx(), "zap")
    assert reply.render() == ['ERROR: unsupported action: "zap"']


async def test_declared_errors_become_their_message() -> None:
    reply = await make_registry().dispatch(Ctx(), "refuse")
    assert reply.render() == ["ERROR: 'no such thing'"]


async def test_unexpected_exception_is_an_internal_error_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = make_registry()
    reply = await registry.dispatch(Ctx(), "boom")
    assert reply.render() == ["ERROR: internal error: RuntimeError: kaput"]
    assert "kaput" in caplog.text and "Traceback" in caplog.text
    # the registry is still usable afterwards
    assert (await registry.dispatch(Ctx(), "show x")).ok


def test_help_lists_every_command_with_usage_and_aliases() -> None:
    lines = make_registry().help_lines()
    assert "show <target> [<extra>] [--json] [--dry-run]" in lines
    assert "    show a thing (also: sh)" in lines
    assert "drop <member> [timeout=VALUE]" in lines
    assert "add <name> KEY=VALUE[,KEY=VALUE...]" in lines
    assert "pass <first> [ARGS...]" in lines


def test_help_prefix_is_prepended() -> None:
    assert make_registry().help_lines(prefix="modify <c> ")[0].startswith("modify <c> show ")


def test_a_name_cannot_be_registered_twice() -> None:
    registry = make_registry()

    async def handler(ctx: Ctx, args: NoArgs) -> Reply:
        return Reply()

    with pytest.raises(ValueError, match="'sh' registered twice"):
        registry.command("other", "SH", args=NoArgs, help="x")(handler)


def test_reply_rendering() -> None:
    assert Reply(["a"]).render() == ["a", "OK"]
    assert Reply(["a"], error="no").render() == ["a", "ERROR: no"]
    assert Reply(close=True).render() == []
    assert not Reply(error="x").ok
