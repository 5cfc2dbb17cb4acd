"""Control-socket endpoints: ``udp:HOST:PORT``, ``udp6:[::1]:PORT``, ``unix:/path`` ...

An endpoint names where a control socket lives and how commands are framed on it.
Parsing is pure (no sockets) and this module imports nothing of ours: config, transport,
admin and the command line all name sockets with it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import StrEnum

DEFAULT_PORT = 22222


class EndpointError(ValueError):
    """An endpoint string that cannot be understood; the message says why."""


class Kind(StrEnum):
    UDP = "udp"
    UDP6 = "udp6"
    UNIX = "unix"  # one command per connection, like RTPproxy's unix:
    CUNIX = "cunix"  # persistent unix stream, newline framed
    TCP = "tcp"
    TCP6 = "tcp6"

    @property
    def is_datagram(self) -> bool:
        return self in (Kind.UDP, Kind.UDP6)

    @property
    def is_path(self) -> bool:
        return self in (Kind.UNIX, Kind.CUNIX)

    @property
    def is_inet6(self) -> bool:
        return self in (Kind.UDP6, Kind.TCP6)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One control socket address. ``host``/``port`` for inet kinds, ``path`` for unix."""

    kind: Kind
    host: str = ""
    port: int = 0
    path: str = ""

    def __str__(self) -> str:
        return f"{self.kind.value}:{self.address}"

    @property
    def address(self) -> str:
        """The address without the kind: ``host:port``, ``[v6]:port`` or a path."""
        if self.kind.is_path:
            return self.path
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"

    @property
    def sockaddr(self) -> tuple[str, int]:
        return (self.host, self.port)

    @classmethod
    def parse(cls, text: str, default_kind: Kind | str | None = None) -> Endpoint:
        """Parse ``kind:address``; a bare address takes ``default_kind``.

        A bare path (starting with ``/``) is ``unix`` when no default is given, as in
        RTPproxy's ``-s``. IPv6 hosts may be bracketed (``[::1]:5000``) or bare; a bare
        one takes the port after the last colon when what is left is an IPv6 address,
        else the whole text is the host and the port is the default.
        """
        text = text.strip()
        if not text:
            raise EndpointError("empty address")
        kind: Kind | None = None
        rest = text
        head, sep, tail = text.partition(":")
        if sep and head.lower() in Kind.__members__.values():
            kind = Kind(head.lower())
            rest = tail
        if kind is None:
            if default_kind is not None:
                try:
                    kind = Kind(str(default_kind).lower())
                except ValueError:
                    raise EndpointError(f"unknown protocol {default_kind!r}") from None
            elif text.startswith("/"):
                kind = Kind.UNIX
            else:
                raise EndpointError(f"address {text!r} has no protocol (udp:, unix:, ...)")
        if kind.is_path:
            if not rest:
                raise EndpointError(f"{kind.value} address needs a path")
            if "\x00" in rest:
                raise EndpointError("path contains a NUL byte")
            return cls(kind=kind, path=rest)
        host, port = _split_host_port(rest)
        if kind.is_inet6 and _is_ipv4(host):
            raise EndpointError(f"{kind.value} address {host!r} is IPv4")
        if not kind.is_inet6 and _is_ipv6(host):
            raise EndpointError(f"{kind.value} address {host!r} is IPv6 (use {kind.value}6:)")
        return cls(kind=kind, host=host, port=port)


def _split_host_port(text: str) -> tuple[str, int]:
    if not text:
        raise EndpointError("empty address")
    if text.startswith("["):
        host, sep, after = text[1:].partition("]")
        if not sep or not _is_ipv6(host):
            raise EndpointError(f"bad bracketed IPv6 address {text!r}")
        if not after:
            return host, DEFAULT_PORT
        if not after.startswith(":"):
            raise EndpointError(f"bad address {text!r}")
        return host, _port(after[1:], text)
    if text.count(":") > 1:
        left, _, right = text.rpartition(":")
        if right.isascii() and right.isdigit() and _is_ipv6(left):
            return left, _port(right, text)
        if _is_ipv6(text):
            return text, DEFAULT_PORT
        raise EndpointError(f"bad address {text!r}")
    host, sep, port_text = text.partition(":")
    if not host:
        raise EndpointError(f"address {text!r} has no host")
    if not _valid_hostname(host):
        raise EndpointError(f"bad host {host!r}")
    return host, _port(port_text, text) if sep else DEFAULT_PORT


def _port(text: str, whole: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) < 65536:
        raise EndpointError(f"bad port in {whole!r}")
    return int(text)


def _is_ipv6(text: str) -> bool:
    if "[" in text or "]" in text:
        return False
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def _valid_hostname(host: str) -> bool:
    if host == "*" or _is_ipv4(host):
        return True
    if len(host) > 253:
        return False
    return all(
        label and len(label) <= 63 and label.replace("-", "").replace("_", "").isalnum()
        for label in host.split(".")
    )
