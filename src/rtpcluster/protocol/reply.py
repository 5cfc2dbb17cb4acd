"""Replies of RTPproxy members: errors, and the ``port [addr [6]]`` of U/L."""

from __future__ import annotations

from rtpcluster.protocol.errors import E_SYNTAX, ProtocolError

_MAX_PORT = 65535


def _ascii_digits(text: str) -> bool:
    # str.isdigit() alone also accepts e.g. superscripts, which int() rejects.
    return text.isascii() and text.isdigit()


def _first_token(reply: str) -> str:
    parts = reply.split(None, 1)
    return parts[0] if parts else ""


def error_code(reply: str) -> int | None:
    """The number of an ``E<digits>`` reply, ``None`` for any other reply."""
    token = _first_token(reply)
    if len(token) < 2 or token[0] != "E":
        return None
    digits = token[1:]
    if not _ascii_digits(digits) or len(digits) > 9:
        return None
    return int(digits)


def is_error(reply: str) -> bool:
    """True for an ``E<digits>`` reply."""
    return error_code(reply) is not None


class ULReply:
    """A successful U/L reply: ``port [address [6]]`` plus any ``&&`` results in ``tail``."""

    __slots__ = ("address", "ipv6", "port", "tail")

    def __init__(self, port: int, address: str | None, ipv6: bool, tail: str) -> None:
        self.port = port
        self.address = address
        self.ipv6 = ipv6
        self.tail = tail

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ULReply):
            return NotImplemented
        return (self.port, self.address, self.ipv6, self.tail) == (
            other.port,
            other.address,
            other.ipv6,
            other.tail,
        )

    def __hash__(self) -> int:
        return hash((self.port, self.address, self.ipv6, self.tail))

    def __repr__(self) -> str:
        return (
            f"ULReply(port={self.port!r}, address={self.address!r}, "
            f"ipv6={self.ipv6!r}, tail={self.tail!r})"
        )


def _parse_port(token: str) -> int | None:
    if not _ascii_digits(token) or len(token) > 5:
        return None
    port = int(token)
    return port if port <= _MAX_PORT else None


def parse_ul_reply(reply: str) -> ULReply:
    """Parse ``port [addr [6]] [&& ...]`` (trailing newline allowed); E5 otherwise.

    ``tail`` keeps the subcommand results verbatim from the blank before ``&&``
    (e.g. ``" && -1"``), without the final newline.
    """
    body = reply[:-1] if reply.endswith("\n") else reply
    head, separator, _ = body.partition("&&")
    if separator:
        stripped = head.rstrip()
        if len(stripped) == len(head):
            raise ProtocolError(E_SYNTAX, "&& glued to the U/L reply")
        tail = body[len(stripped) :]
        head = stripped
    else:
        tail = ""
    tokens = head.split()
    if not 1 <= len(tokens) <= 3:
        raise ProtocolError(E_SYNTAX, "not a U/L reply")
    port = _parse_port(tokens[0])
    if port is None:
        raise ProtocolError(E_SYNTAX, "bad port in U/L reply")
    ipv6 = False
    if len(tokens) == 3:
        if tokens[2] != "6":
            raise ProtocolError(E_SYNTAX, "bad address family flag in U/L reply")
        ipv6 = True
    address = tokens[1] if len(tokens) >= 2 else None
    return ULReply(port, address, ipv6, tail)


def is_positive(op: str, reply: str) -> bool:
    """Did the member find/do it?  For U/L a ``0`` port means "no session"."""
    if op in ("U", "L"):
        port = _parse_port(_first_token(reply))
        return port is not None and port != 0
    return not is_error(reply)


def rewrite_ul_address(reply: str, address: str) -> str:
    """Replace the address of a U/L reply by ``address`` (e.g. a member's wan address).

    Errors, port 0 and anything that is not a U/L reply come back unchanged.
    The result ends with a newline exactly when ``reply`` did.
    """
    try:
        parsed = parse_ul_reply(reply)
    except ProtocolError:
        return reply
    if parsed.port == 0:
        return reply
    if address.startswith("[") and address.endswith("]"):
        address = address[1:-1]
    family = " 6" if ":" in address else ""
    newline = "\n" if reply.endswith("\n") else ""
    return f"{parsed.port} {address}{family}{parsed.tail}{newline}"
