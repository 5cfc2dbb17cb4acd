"""A typed registry of admin commands.

Each command is an async function registered with its name(s), a pydantic model of its
arguments and a line of help. The registry turns a command line into that model, writes
the ``help`` text and dispatches, so adding a command never means touching a chain of
``if word == ...`` tests.

How words of a command line map to model fields is declared on the fields with
``typing.Annotated`` markers (``dry_run: Annotated[bool, Flag()] = False``):

* no marker / :class:`Positional` -- the next bare word; optional when the field has a
  default;
* :class:`Flag` -- a ``--name`` switch for a ``bool`` field (``dry_run`` is ``--dry-run``);
* :class:`Option` -- a ``name=value`` word (``timeout=30``);
* :class:`FieldList` -- ``k=v,k=v`` lists, held as ``list[tuple[str, str]]``; a comma
  inside ``[...]`` does not split, and several such words are joined;
* :class:`Rest` -- every word after the positionals, untouched (for nested registries).

Command words, flag names and ``k=v`` keys are case-insensitive; values keep their case.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import pydantic

from rtpcluster.failures import describe_failure, primary_error

log = logging.getLogger(__name__)

CtxT = TypeVar("CtxT")
ArgsT = TypeVar("ArgsT", bound=pydantic.BaseModel)


class CommandError(Exception):
    """A refused command; ``str(err)`` is the text after ``ERROR: ``."""


class _Marker:
    """Base of the field markers; ``name`` overrides the word derived from the field."""

    __slots__ = ("name",)

    def __init__(self, name: str | None = None) -> None:
        self.name = name


class Positional(_Marker):
    """The field takes the next bare word (the default for unmarked fields)."""


class Flag(_Marker):
    """The ``bool`` field is set by ``--field-name`` (or ``--<name>``)."""


class Option(_Marker):
    """The field is given as one ``field_name=value`` (or ``<name>=value``) word."""


class FieldList(_Marker):
    """The field collects ``k=v,k=v`` pairs as ``list[tuple[str, str]]``."""


class Rest(_Marker):
    """The field collects every word left after the positionals, as ``list[str]``."""


@dataclass(slots=True)
class Reply:
    """What a command answers: body lines, then ``OK`` or ``ERROR: <error>``."""

    lines: list[str] = field(default_factory=list)
    error: str | None = None
    close: bool = False  # close the connection after sending

    @property
    def ok(self) -> bool:
        return self.error is None

    def render(self) -> list[str]:
        """All lines to send, the final status line included (none for a bare close)."""
        if self.close and not self.lines and self.error is None:
            return []
        return [*self.lines, "OK" if self.error is None else f"ERROR: {self.error}"]


Handler = Callable[[CtxT, Any], Awaitable[Reply]]


@dataclass(frozen=True, slots=True)
class _ArgSpec:
    name: str  # the model field
    word: str  # what the user types: the field name with '-' for '_', or the override
    marker: type[_Marker]
    required: bool

    @property
    def flag(self) -> str:
        return "--" + self.word

    def usage(self) -> str:
        if self.marker is Flag:
            return f"[{self.flag}]"
        if self.marker is Option:
            return f"[{self.word}=VALUE]"
        if self.marker is FieldList:
            text = "KEY=VALUE[,KEY=VALUE...]"
        elif self.marker is Rest:
            text = "ARGS..."
        else:
            text = f"<{self.word}>"
        return text if self.required else f"[{text}]"


def _arg_specs(model: type[pydantic.BaseModel]) -> list[_ArgSpec]:
    specs: list[_ArgSpec] = []
    for name, info in model.model_fields.items():
        found = [m for m in info.metadata if isinstance(m, _Marker)]
        marker = found[0] if found else Positional()
        word = (marker.name or name.replace("_", "-")).lower()
        specs.append(
            _ArgSpec(name=name, word=word, marker=type(marker), required=info.is_required())
        )
    return specs


@dataclass(frozen=True, slots=True)
class Command(Generic[CtxT]):
    names: tuple[str, ...]
    model: type[pydantic.BaseModel]
    handler: Handler[CtxT]
    help: str
    specs: tuple[_ArgSpec, ...]

    @property
    def name(self) -> str:
        return self.names[0]

    def usage(self, prefix: str = "") -> str:
        return " ".join([prefix + self.name, *(s.usage() for s in self.specs)]).strip()

    def parse(self, words: list[str]) -> pydantic.BaseModel:
        """Map the words after the command word onto the argument model."""
        values: dict[str, Any] = {}
        positionals = [s for s in self.specs if s.marker is Positional]
        flags = {s.flag: s for s in self.specs if s.marker is Flag}
        options = {s.word: s for s in self.specs if s.marker is Option}
        field_list = next((s for s in self.specs if s.marker is FieldList), None)
        rest = next((s for s in self.specs if s.marker is Rest), None)
        rest_words: list[str] | None = None
        pairs: list[tuple[str, str]] = []
        for word in words:
            if rest_words is not None:
                rest_words.append(word)
                continue
            lowered = word.lower()
            if lowered in flags:
                values[flags[lowered].name] = True
                continue
            if lowered.startswith("--") and (rest is None or positionals):
                raise CommandError(f"{self.name}: unknown option: {word}")
            key, eq, value = word.partition("=")
            if eq and key.strip().lower() in options:
                values[options[key.strip().lower()].name] = value
                continue
            if field_list is not None and eq:
                pairs.extend(parse_field_list(word))
                continue
            if positionals:
                values[positionals.pop(0).name] = word
                continue
            if rest is not None:
                rest_words = [word]
                continue
            raise CommandError(f"{self.name}: unexpected argument: {word!r}")
        if field_list is not None and pairs:
            values[field_list.name] = pairs
        if rest is not None and rest_words is not None:
            values[rest.name] = rest_words
        missing = [s for s in self.specs if s.required and s.name not in values]
        if missing:
            raise CommandError(f"{self.name}: missing {missing[0].usage()}; usage: {self.usage()}")
        try:
            return self.model.model_validate(values)
        except pydantic.ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "arguments"
            cause = first.get("ctx", {}).get("error")  # our validators' own message
            message = str(cause) if isinstance(cause, ValueError) else first["msg"]
            raise CommandError(f"{self.name}: bad {where}: {message}") from None


def parse_field_list(text: str) -> list[tuple[str, str]]:
    """Split ``k=v,k=v`` into pairs; commas inside ``[...]`` belong to the value.

    Keys are lowercased and stripped; values are stripped but keep ':' and brackets
    (``address=[::1]:22222``). Empty items (a trailing comma) are skipped.
    """
    items: list[str] = []
    depth = 0
    start = 0
    for i, char in enumerate(text):
        if char == "[":
            depth += 1
        elif char == "]":
            depth = max(0, depth - 1)
        elif char == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    pairs: list[tuple[str, str]] = []
    for item in items:
        if not item.strip():
            continue
        key, eq, value = item.partition("=")
        key = key.strip().lower()
        if not eq or not key:
            raise CommandError(f"bad field {item.strip()!r}: expected key=value")
        pairs.append((key, value.strip()))
    return pairs


def unique_fields(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Pairs as a dict, refusing a key given twice (a typo would silently win)."""
    fields: dict[str, str] = {}
    for key, value in pairs:
        if key in fields:
            raise CommandError(f"field {key!r} given twice")
        fields[key] = value
    return fields


def _unknown_command(word: str) -> str:
    return "unknown command"


class Registry(Generic[CtxT]):
    """Commands by (lowercased) name, with parsing, help and dispatch.

    ``unknown`` words the error for a word that names no command, so a nested
    registry (the actions of ``modify``) can say ``unsupported action: "x"``.
    ``errors`` lists the exception types whose message becomes ``ERROR: <message>``;
    anything else raised by a handler is logged with its traceback and answered with
    ``ERROR: internal error: ...`` so one bad command cannot take the server down.
    """

    def __init__(
        self,
        unknown: Callable[[str], str] = _unknown_command,
        errors: tuple[type[Exception], ...] = (),
    ) -> None:
        self._by_name: dict[str, Command[CtxT]] = {}
        self._commands: list[Command[CtxT]] = []
        self._unknown = unknown
        self._errors: tuple[type[Exception], ...] = (CommandError, *errors)

    def command(
        self, *names: str, args: type[ArgsT], help: str
    ) -> Callable[
        [Callable[[CtxT, ArgsT], Awaitable[Reply]]], Callable[[CtxT, ArgsT], Awaitable[Reply]]
    ]:
        """Register the decorated handler under ``names`` (the first is the main name)."""
        if not names:
            raise ValueError("a command needs at least one name")

        def register(
            handler: Callable[[CtxT, ArgsT], Awaitable[Reply]],
        ) -> Callable[[CtxT, ArgsT], Awaitable[Reply]]:
            command: Command[CtxT] = Command(
                names=tuple(n.lower() for n in names),
                model=args,
                handler=handler,
                help=help,
                specs=tuple(_arg_specs(args)),
            )
            for name in command.names:
                if name in self._by_name:
                    raise ValueError(f"command {name!r} registered twice")
                self._by_name[name] = command
            self._commands.append(command)
            return handler

        return register

    @property
    def commands(self) -> list[Command[CtxT]]:
        return list(self._commands)

    def lookup(self, word: str) -> Command[CtxT] | None:
        return self._by_name.get(word.lower())

    def parse(self, words: list[str]) -> tuple[Command[CtxT], pydantic.BaseModel]:
        """Find the command named by ``words[0]`` and build its arguments."""
        if not words:
            raise CommandError(self._unknown(""))
        command = self.lookup(words[0])
        if command is None:
            raise CommandError(self._unknown(words[0]))
        return command, command.parse(words[1:])

    def help_lines(self, prefix: str = "") -> list[str]:
        """One usage line per command, its aliases and help indented below it."""
        lines: list[str] = []
        for command in self._commands:
            lines.append(command.usage(prefix))
            aliases = command.names[1:]
            text = command.help + (f" (also: {', '.join(aliases)})" if aliases else "")
            lines.append(f"    {text}")
        return lines

    async def dispatch_words(self, ctx: CtxT, words: list[str]) -> Reply:
        """Parse and run one command; every failure becomes an ``ERROR`` reply."""
        try:
            command, args = self.parse(words)
            return await command.handler(ctx, args)
        except self._errors as err:
            return Reply(error=str(err) or type(err).__name__)
        except Exception as err:
            log.exception("admin command %r failed", " ".join(words))
            cause = type(primary_error(err)).__name__
            return Reply(error=f"internal error: {cause}: {describe_failure(err)}")

    async def dispatch(self, ctx: CtxT, line: str) -> Reply:
        return await self.dispatch_words(ctx, line.split())
