"""The one exception of the config package, and how pydantic's errors become one line."""

from __future__ import annotations

from pydantic import ValidationError

# Model field names that differ from the XML element they come from.
_ELEMENT_OF_FIELD = {"members": "rtpproxy"}


class ConfigError(Exception):
    """A configuration that cannot be used; ``str(err)`` is one line for the operator.

    It names where (cluster, member), the element and the bad value, e.g.
    ``cluster 'c1', rtpproxy 'rp2': <weight>: must be > 0, got '0'``.
    """


class ElementError(ValueError):
    """A bad element found while assembling a model; the caller adds the context."""

    def __init__(self, element: str, message: str) -> None:
        super().__init__(f"<{element}>: {message}")


def describe(error: ValidationError) -> str:
    """The first problem of a pydantic ``ValidationError`` as ``<element>: message``.

    Our validators raise ``ValueError`` with a finished message; those are shown as they
    are. Errors raised by a model validator (no location) already name their element.
    """
    first = error.errors(include_url=False)[0]
    cause = first.get("ctx", {}).get("error")
    if first["type"] == "missing":
        message = "missing required element"
    elif first["type"] == "extra_forbidden":
        message = "unknown element"
    elif isinstance(cause, Exception):
        message = str(cause)
    else:
        message = f"{first['msg']}, got {first['input']!r}"
    location = _element_path(first["loc"])
    return f"<{location}>: {message}" if location else message


def _element_path(location: tuple[int | str, ...]) -> str:
    """``("members", 1, "weight")`` -> ``rtpproxy[2]/weight`` (1-based, like XPath)."""
    parts: list[str] = []
    for step in location:
        if isinstance(step, int) and parts:
            parts[-1] += f"[{step + 1}]"
        else:
            parts.append(_ELEMENT_OF_FIELD.get(str(step), str(step)))
    return "/".join(parts)
