"""RTPproxy control commands: parse once, route by fields, serialize canonically.

A command is ``<LETTER><modifiers> <arg> ... [&& <subcommand> ...]``.  We check
only what a proxy in front of RTPproxy must check to route safely (letter, token
counts, size, ``&&`` placement); everything else, e.g. unknown U/L modifier
letters, is passed on so the member gives its own precise error.
"""

from __future__ import annotations

from rtpcluster.protocol.errors import (
    E_MODIFIERS,
    E_NARGS,
    E_SUBCOMMAND,
    E_SYNTAX,
    E_UNKNOWN_COMMAND,
    MAX_COMMAND_BYTES,
    ProtocolError,
)

MAX_TOKENS_PER_SECTION = 23
MAX_SUBCOMMANDS = 15
SUBCOMMAND_SEPARATOR = "&&"

SESSION_OPS = frozenset("ULDPSRCQN")
_OPS = "ULDPSRCQNXIGV"
_OP_OF_LETTER = {**{c: c for c in _OPS}, **{c.lower(): c for c in _OPS}}
_NO_MODIFIER_OPS = frozenset("XS")
_SUBCOMMAND_OPS = frozenset("ULQ")

# Allowed number of arguments (tokens after the first one), inclusive bounds.
_NARGS: dict[str, tuple[int, int]] = {
    "U": (4, 7),
    "L": (4, 5),
    "D": (2, 3),
    "S": (2, 3),
    "R": (2, 3),
    "N": (2, 3),
    "P": (4, 5),
    "C": (3, 4),
    "Q": (2, 14),
    "X": (0, 0),
    "I": (0, 0),
    "V": (0, 0),
    "G": (0, 22),
}
_VF_NARGS = (1, 1)

# Position of the from-tag in ``args``; the to-tag, when present, follows it.
_FROM_TAG_INDEX = {"U": 3, "L": 3, "D": 1, "S": 1, "R": 1, "N": 1, "P": 3, "C": 2, "Q": 1}

# Space, TAB, CR and LF separate tokens; nothing else does (``str.split()`` would
# also split on form feeds and Unicode spaces, which RTPproxy keeps inside tokens).
_SEPARATORS_TO_SPACE = str.maketrans("\t\r\n", "   ")

_DIGITS = frozenset("0123456789")
_CODEC_CHARS = frozenset("0123456789,")
_IPV4_CHARS = frozenset("0123456789.")


class Command:
    """One parsed control command.  Treat it as immutable: builders return copies.

    The constructor does not validate; use :func:`parse_command` for text from
    the wire.
    """

    __slots__ = ("args", "modifiers", "op", "subcommands")

    op: str
    modifiers: str
    args: tuple[str, ...]
    subcommands: tuple[tuple[str, ...], ...]

    def __init__(
        self,
        op: str,
        modifiers: str = "",
        args: tuple[str, ...] = (),
        subcommands: tuple[tuple[str, ...], ...] = (),
    ) -> None:
        self.op = op
        self.modifiers = modifiers
        self.args = args
        self.subcommands = subcommands

    # -- identity ---------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Command):
            return NotImplemented
        return (
            self.op == other.op
            and self.modifiers == other.modifiers
            and self.args == other.args
            and self.subcommands == other.subcommands
        )

    def __hash__(self) -> int:
        return hash((self.op, self.modifiers, self.args, self.subcommands))

    def __repr__(self) -> str:
        return (
            f"Command(op={self.op!r}, modifiers={self.modifiers!r}, "
            f"args={self.args!r}, subcommands={self.subcommands!r})"
        )

    def serialize(self) -> str:
        """Canonical text: tokens joined by one space, sections by `` && ``, no newline."""
        text = " ".join((self.op + self.modifiers, *self.args))
        for section in self.subcommands:
            text += " && " + " ".join(section)
        return text

    # -- derived fields ---------------------------------------------------------

    @property
    def is_session_command(self) -> bool:
        return self.op in SESSION_OPS

    @property
    def is_vf(self) -> bool:
        return self.op == "V" and self.modifiers.upper() == "F"

    @property
    def call_id(self) -> str | None:
        if self.op in SESSION_OPS and self.args:
            return self.args[0]
        return None

    @property
    def from_tag(self) -> str | None:
        index = _FROM_TAG_INDEX.get(self.op)
        if index is None or len(self.args) <= index:
            return None
        return self.args[index]

    @property
    def to_tag(self) -> str | None:
        index = _FROM_TAG_INDEX.get(self.op)
        if index is None:
            return None
        index += 1
        nargs = len(self.args)
        if self.op == "U":
            # 5 or 7 arguments carry a to-tag; 6 is a notify pair without one.
            return self.args[index] if nargs in (5, 7) else None
        return self.args[index] if nargs > index else None

    @property
    def notify_socket(self) -> str | None:
        if self.op == "U" and len(self.args) >= 6:
            return self.args[-2]
        return None

    @property
    def notify_tag(self) -> str | None:
        if self.op == "U" and len(self.args) >= 6:
            return self.args[-1]
        return None

    @property
    def local_address(self) -> str | None:
        """Address of the last ``L`` modifier of a U/L, brackets stripped.

        A label (``L{pub}``) is returned with its braces, ``"{pub}"``, so it can
        never be mistaken for an address.  ``None`` if there is no ``L`` modifier
        with an address, or the command is not U/L.
        """
        return self._address_modifier("L")

    @property
    def remote_hint(self) -> str | None:
        """Address of the last ``R`` modifier of a U/L, brackets stripped."""
        return self._address_modifier("R")

    def _address_modifier(self, letter: str) -> str | None:
        if self.op not in ("U", "L"):
            return None
        mods = self.modifiers
        if letter not in mods and letter.lower() not in mods:
            return None
        found: str | None = None
        for token in split_ul_modifiers(mods):
            if token[0].upper() == letter:
                found = _modifier_address(token)
        return found

    # -- builders -----------------------------------------------------------------

    def as_lookup(self) -> Command:
        """This U as an L that finds the session without creating it.

        The tags are swapped because U and L address opposite sides for the same
        tag match; notify arguments and subcommands are dropped.
        """
        if self.op != "U":
            raise ValueError(f"only a U command has a lookup form, not {self.op}")
        to_tag = self.to_tag
        if to_tag is None:
            raise ValueError("a U without to-tag cannot be a lookup")
        call_id, ip, port, from_tag = self.args[:4]
        return Command("L", self.modifiers, (call_id, ip, port, to_tag, from_tag))

    def without_notify(self) -> Command:
        """This U without its notify socket and tag (unchanged copy if it has none)."""
        self._require_u()
        nargs = len(self.args)
        args = self.args[: nargs - 2] if nargs >= 6 else self.args
        return Command(self.op, self.modifiers, args, self.subcommands)

    def with_notify(self, socket: str, tag: str) -> Command:
        """This U asking for a disconnect notification on ``socket`` with ``tag``."""
        self._require_u()
        _require_token(socket, "notify socket")
        _require_token(tag, "notify tag")
        base = self.without_notify().args
        return Command(self.op, self.modifiers, (*base, socket, tag), self.subcommands)

    def with_local_address(self, addr: str) -> Command:
        """This U/L told to use local address ``addr`` (``L<addr>`` / ``L[v6]``).

        Every other ``L`` (address or label) and ``R`` modifier is dropped first,
        since they would pick a different local address.
        """
        if self.op not in ("U", "L"):
            raise ValueError(f"only U and L take a local address, not {self.op}")
        if addr.startswith("[") and addr.endswith("]"):
            addr = addr[1:-1]
        _require_token(addr, "local address")
        kept = [t for t in split_ul_modifiers(self.modifiers) if t[0] not in "lLrR"]
        kept.append(f"L[{addr}]" if ":" in addr else f"L{addr}")
        return Command(self.op, "".join(kept), self.args, self.subcommands)

    def _require_u(self) -> None:
        if self.op != "U":
            raise ValueError(f"only a U command carries notify arguments, not {self.op}")


def _require_token(value: str, what: str) -> None:
    if not value or value == SUBCOMMAND_SEPARATOR or _has_separator(value):
        raise ValueError(f"{what} must be one non-empty token: {value!r}")


def _has_separator(value: str) -> bool:
    return any(c in value for c in " \t\r\n\0")


def _modifier_address(token: str) -> str | None:
    address = token[1:]
    if address.startswith("["):
        address = address[1:-1] if address.endswith("]") else address[1:]
    return address or None


def split_ul_modifiers(modifiers: str) -> list[str]:
    """Split U/L modifiers into tokens: ``"AZ20c0,8L[::1]"`` -> ``A Z20 c0,8 L[::1]``.

    ``z`` takes digits, ``c`` digits and commas, ``l``/``r`` an IPv4 address,
    a ``[v6]`` address or (``l`` only) a ``{label}``; any other character stands
    alone.  Letters are case-insensitive and kept as given.
    """
    tokens: list[str] = []
    n = len(modifiers)
    i = 0
    while i < n:
        letter = modifiers[i].lower()
        j = i + 1
        if letter == "z":
            while j < n and modifiers[j] in _DIGITS:
                j += 1
        elif letter == "c":
            while j < n and modifiers[j] in _CODEC_CHARS:
                j += 1
        elif letter in ("l", "r"):
            opener = modifiers[j] if j < n else ""
            if opener == "[" or (opener == "{" and letter == "l"):
                close = modifiers.find("]" if opener == "[" else "}", j + 1)
                j = n if close < 0 else close + 1
            else:
                while j < n and modifiers[j] in _IPV4_CHARS:
                    j += 1
        tokens.append(modifiers[i:j])
        i = j
    return tokens


def _decode(data: bytes | bytearray | memoryview | str) -> str:
    if isinstance(data, str):
        if len(data) > MAX_COMMAND_BYTES:
            raise ProtocolError(E_SYNTAX, "command too long")
        if not data.isascii():
            try:
                size = len(data.encode("utf-8"))
            except UnicodeEncodeError:
                raise ProtocolError(E_SYNTAX, "command is not valid text") from None
            if size > MAX_COMMAND_BYTES:
                raise ProtocolError(E_SYNTAX, "command too long")
        if "\0" in data:
            raise ProtocolError(E_SYNTAX, "NUL byte in command")
        return data
    raw = bytes(data)
    if len(raw) > MAX_COMMAND_BYTES:
        raise ProtocolError(E_SYNTAX, "command too long")
    if b"\0" in raw:
        raise ProtocolError(E_SYNTAX, "NUL byte in command")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(E_SYNTAX, "command is not UTF-8") from None


def _split_sections(text: str) -> list[list[str]]:
    text = text.strip(" \t\r\n")
    if "\n" in text or "\t" in text or "\r" in text:
        text = text.translate(_SEPARATORS_TO_SPACE)  # slow in CPython: only when needed
    tokens = text.split(" ")
    if "" in tokens:  # runs of separators: rare on the wire, so filter only then
        tokens = [t for t in tokens if t]
    if not tokens:
        raise ProtocolError(E_SYNTAX, "empty command")
    if SUBCOMMAND_SEPARATOR not in tokens:
        sections = [tokens]
    else:
        sections = [[]]
        for token in tokens:
            if token == SUBCOMMAND_SEPARATOR:
                sections.append([])
            else:
                sections[-1].append(token)
    if len(sections) > MAX_SUBCOMMANDS + 1:
        raise ProtocolError(E_SYNTAX, "too many && subcommands")
    for section in sections:
        if not section:
            raise ProtocolError(E_SYNTAX, "empty command section")
        if len(section) > MAX_TOKENS_PER_SECTION:
            raise ProtocolError(E_SYNTAX, "too many tokens")
    return sections


def parse_command(data: bytes | bytearray | memoryview | str) -> Command:
    """Parse one command (no cookie); raises only :class:`ProtocolError`.

    Checks, in order: size, NUL, encoding and token limits (E5), the command
    letter (E0), modifiers where none are allowed (E2), the argument count (E1)
    and ``&&`` on a command that takes no subcommands (E3).
    """
    sections = _split_sections(_decode(data))
    main = sections[0]
    first = main[0]
    op = _OP_OF_LETTER.get(first[0])
    if op is None:
        raise ProtocolError(E_UNKNOWN_COMMAND, f"unknown command {first[:16]!r}")
    modifiers = first[1:]
    nargs_range = _NARGS[op]
    if modifiers:
        if op in _NO_MODIFIER_OPS:
            raise ProtocolError(E_MODIFIERS, f"{op} takes no modifiers")
        if op == "V":
            if modifiers not in ("F", "f"):
                raise ProtocolError(E_MODIFIERS, "V takes no modifiers but F")
            nargs_range = _VF_NARGS
    nargs = len(main) - 1
    if not nargs_range[0] <= nargs <= nargs_range[1]:
        raise ProtocolError(E_NARGS, f"{op}{modifiers} with {nargs} arguments")
    if len(sections) > 1 and op not in _SUBCOMMAND_OPS:
        raise ProtocolError(E_SUBCOMMAND, f"{op} takes no && subcommands")
    subcommands = tuple(map(tuple, sections[1:])) if len(sections) > 1 else ()
    return Command(op, modifiers, tuple(main[1:]), subcommands)
