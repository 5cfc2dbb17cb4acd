"""Statistics replies: ``I`` (``name: value`` lines) and ``G``/``Gv``, and their sums."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

from rtpcluster.protocol.errors import E_SYNTAX, ProtocolError

INFO_FIELDS = (
    "sessions created",
    "active sessions",
    "active streams",
    "packets received",
    "packets transmitted",
)
INFO_LOAD_FIELD = "average load"


def parse_number(text: str) -> int | float:
    """``[-]digits`` as int, ``[-]digits.digits`` as float; anything else is E5.

    Stricter than ``int()``/``float()``: no blanks, underscores, exponents or inf.
    """
    body = text[1:] if text.startswith("-") else text
    if body.isascii():
        try:
            if body.isdigit():
                return int(text)
            whole, dot, fraction = body.partition(".")
            if dot and whole.isdigit() and fraction.isdigit():
                number = float(text)
                if math.isfinite(number):
                    return number
        except ValueError:  # e.g. more digits than int() accepts
            pass
    raise ProtocolError(E_SYNTAX, f"not a number: {text[:32]!r}")


def format_number(value: int | float) -> str:
    """As RTPproxy prints it: ints in decimal, floats with ``%f``."""
    if isinstance(value, float):
        return f"{value:f}"
    return str(value)


def parse_info_reply(text: str) -> dict[str, int | float]:
    """Parse an ``I`` reply into ``{name: value}``; unknown names are kept."""
    values: dict[str, int | float] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        name = name.strip()
        if not colon or not name:
            raise ProtocolError(E_SYNTAX, f"not a 'name: value' line: {line[:64]!r}")
        values[name] = parse_number(value.strip())
    return values


def format_info_reply(values: Mapping[str, int | float], with_load: bool = False) -> str:
    """An ``I`` reply from ``values`` (missing fields are 0; ``Il`` adds the load)."""
    lines = [f"{name}: {round(values.get(name, 0))}\n" for name in INFO_FIELDS]
    if with_load:
        lines.append(f"{INFO_LOAD_FIELD}: {float(values.get(INFO_LOAD_FIELD, 0.0)):f}\n")
    return "".join(lines)


def parse_stats_reply(names: Sequence[str], verbose: bool, text: str) -> dict[str, int | float]:
    """Parse the reply to ``G name ...`` (``verbose``: ``Gv``, ``name=value`` items)."""
    items = text.split()
    if len(items) != len(names):
        raise ProtocolError(E_SYNTAX, f"{len(items)} values for {len(names)} statistics")
    values: dict[str, int | float] = {}
    for name, item in zip(names, items, strict=True):
        if verbose:
            got, equals, item = item.partition("=")
            if not equals or got != name:
                raise ProtocolError(E_SYNTAX, f"expected {name}=value, got {got[:64]!r}")
        values[name] = parse_number(item)
    return values


def format_stats_reply(
    names: Sequence[str], verbose: bool, values: Mapping[str, int | float]
) -> str:
    """A ``G``/``Gv`` reply for ``names`` in order; a name without a value shows 0."""
    if verbose:
        items = [f"{name}={format_number(values.get(name, 0))}" for name in names]
    else:
        items = [format_number(values.get(name, 0)) for name in names]
    return " ".join(items) + "\n"


def merge_stats(replies: Iterable[Mapping[str, int | float]]) -> dict[str, int | float]:
    """Sum the statistics of several members per name (a float if any part is)."""
    total: dict[str, int | float] = {}
    for reply in replies:
        for name, value in reply.items():
            total[name] = total.get(name, 0) + value
    return total
