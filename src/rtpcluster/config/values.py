"""Converters from configuration text to typed values.

Each converter accepts what an XML element or an admin ``key=value`` pair holds (a
string) as well as the typed value itself, so models built in code pass the same checks
as models read from a file. A converter raises :class:`ValueError` whose message shows
the bad value but not the element: the caller knows which element it was reading and
prefixes it.
"""

from __future__ import annotations

import ipaddress
import math
import re
from enum import StrEnum
from typing import TypeVar

from rtpcluster.transport.endpoint import Endpoint, Kind
from rtpcluster.transport.unixsock import SocketOwnerError, parse_owner

_INTEGER = re.compile(r"[+-]?[0-9]+")
_FILE_MODE = re.compile(r"0?[0-7]{3}")
_HAS_PORT = re.compile(r".*:[0-9]+")

EnumT = TypeVar("EnumT", bound=StrEnum)


def integer(value: object) -> int:
    """A whole number, from an ``int`` or from decimal digits with an optional sign."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        return int(value.strip())
    raise ValueError(f"must be an integer, got {value!r}")


def positive_integer(value: object) -> int:
    number = integer(value)
    if number <= 0:
        raise ValueError(f"must be > 0, got {value!r}")
    return number


def count(value: object, lowest: int, highest: int) -> int:
    """A whole number from ``lowest`` to ``highest``, both included (``<rise>2</rise>``)."""
    number = integer(value)
    if not lowest <= number <= highest:
        raise ValueError(f"must be an integer from {lowest} to {highest}, got {value!r}")
    return number


def yes_no(value: object) -> bool:
    """``yes`` or ``no`` (any case), as ``<backup>`` and ``backup=`` take it, or a bool."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("yes", "no"):
        return value.strip().lower() == "yes"
    raise ValueError(f"must be yes or no, got {value!r}")


def port_number(value: object) -> int:
    number = integer(value)
    if not 0 < number < 65536:
        raise ValueError(f"must be a port number 1..65535, got {value!r}")
    return number


def seconds(value: object, lowest: float, highest: float) -> float:
    """A number of seconds from ``lowest`` to ``highest``, both included (``1``, ``2e-1``)."""
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if number is None or not math.isfinite(number) or not lowest <= number <= highest:
        raise ValueError(
            f"must be a number of seconds from {lowest:g} to {highest:g}, got {value!r}"
        )
    return number


def bounded(number: float, low: float, high: float, value: object) -> float:
    """``number`` if within [low, high]; the message shows the value as given."""
    if not low <= number <= high:
        raise ValueError(f"must be between {low:g} and {high:g}, got {value!r}")
    return number


def file_mode(value: object) -> int:
    """Permission bits in octal, as chmod takes them: ``0660``, ``660`` (or an int)."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0o777:
        return value
    if isinstance(value, str) and _FILE_MODE.fullmatch(value.strip()):
        return int(value.strip(), 8)
    raise ValueError(f"must be octal permission bits such as 0660, got {value!r}")


def socket_owner(value: object) -> str:
    """``user:group``, ``user`` or ``:group`` naming an existing user and group."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"must be user:group, got {value!r}")
    try:
        parse_owner(value)
    except SocketOwnerError as exc:
        raise ValueError(str(exc)) from None
    return value.strip()


def name(value: object) -> str:
    """A cluster or member name: it must be one word, as admin commands split on spaces."""
    if not isinstance(value, str):
        raise ValueError(f"must be text, got {value!r}")
    text = value.strip()
    if not text:
        raise ValueError("must not be empty")
    if any(char.isspace() or not char.isprintable() for char in text):
        raise ValueError(f"must not contain spaces or control characters, got {text!r}")
    return text


def text(value: object) -> str:
    """Free text such as a path prefix: not empty, no control characters."""
    if not isinstance(value, str):
        raise ValueError(f"must be text, got {value!r}")
    stripped = value.strip()
    if not stripped:
        raise ValueError("must not be empty")
    if not stripped.isprintable():
        raise ValueError(f"must not contain control characters, got {stripped!r}")
    return stripped


def optional(value: object) -> object:
    """Empty text means "not given" for optional elements (``<wan_address/>``, ``key=``)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return value


def ip_address(value: object) -> str:
    """An IPv4 or IPv6 literal, kept as written (surrounding spaces removed)."""
    if isinstance(value, str):
        stripped = value.strip()
        try:
            ipaddress.ip_address(stripped)
        except ValueError:
            pass
        else:
            return stripped
    raise ValueError(f"must be an IPv4 or IPv6 address, got {value!r}")


def ip_address_with_port(value: object) -> str:
    """An IP literal, optionally with a port: ``1.2.3.4``, ``1.2.3.4:5000``, ``[::1]:5000``."""
    if isinstance(value, str):
        stripped = value.strip()
        if _ip_version(stripped):
            return stripped
        host, sep, port = stripped.rpartition(":")
        if sep and port.isdigit() and 0 < int(port) < 65536:
            bracketed = host.startswith("[") and host.endswith("]")
            if (bracketed and _ip_version(host[1:-1]) == 6) or _ip_version(host) == 4:
                return stripped
    raise ValueError(f"must be an IP address or IP:port, got {value!r}")


def _ip_version(text: str) -> int:
    """4 or 6 for an IP literal, 0 for anything else."""
    try:
        return ipaddress.ip_address(text).version
    except ValueError:
        return 0


def choice(value: object, enum: type[EnumT]) -> EnumT:
    """One of ``enum``'s values, compared without regard to case."""
    if isinstance(value, enum):
        return value
    if isinstance(value, str):
        wanted = value.strip().lower()
        for member in enum:
            if member.value.lower() == wanted:
                return member
    choices = ", ".join(member.value for member in enum)
    raise ValueError(f"must be one of {choices}, got {value!r}")


def has_kind_prefix(address: str) -> bool:
    """Whether ``address`` starts with ``udp:``, ``unix:`` ... rather than a bare address."""
    head, sep, _ = address.strip().partition(":")
    return bool(sep) and head.lower() in {kind.value for kind in Kind}


def endpoint(value: object, default_kind: Kind | None = None) -> Endpoint:
    """An :class:`Endpoint`, or its text (a bare address takes ``default_kind``)."""
    if isinstance(value, Endpoint):
        return value
    if isinstance(value, str):
        return Endpoint.parse(value, default_kind)  # EndpointError is a ValueError
    raise ValueError(f"must be an endpoint such as udp:127.0.0.1:22222, got {value!r}")


def endpoint_of_kind(value: object, kind: Kind) -> Endpoint:
    """An endpoint whose kind must be ``kind``; a bare address takes it."""
    result = endpoint(value, kind)
    if result.kind is not kind:
        raise ValueError(f"address {str(result)!r} does not match protocol {kind.value}")
    return result


def endpoint_with_port(value: object, default_kind: Kind) -> Endpoint:
    """Like :func:`endpoint`, but text must name its port (no silent default 22222)."""
    if isinstance(value, str) and not _HAS_PORT.fullmatch(value.strip()):
        raise ValueError(f"must be host:port, got {value!r}")
    return endpoint(value, default_kind)
