"""Framing for stream sockets: commands one per line, replies of known length."""

from __future__ import annotations

from rtpcluster.protocol.command import Command
from rtpcluster.protocol.errors import E_SYNTAX, MAX_COMMAND_BYTES, ProtocolError


class LineFramer:
    """Cut a byte stream into ``\\n``-terminated lines (a trailing ``\\r`` is dropped).

    Holding more than :data:`MAX_COMMAND_BYTES` without a newline raises E5 and
    resets the framer; lines completed by the same ``feed`` are lost with it,
    which is fine because the caller is expected to drop the connection, as
    RTPproxy does.
    """

    __slots__ = ("_partial",)

    def __init__(self) -> None:
        self._partial = b""

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the lines completed by them, in order."""
        if b"\n" not in data:
            partial = self._partial + data
            if len(partial) > MAX_COMMAND_BYTES:
                self._partial = b""
                raise ProtocolError(E_SYNTAX, "line too long")
            self._partial = partial
            return []
        lines = (self._partial + data).split(b"\n")
        partial = lines.pop()
        if len(partial) > MAX_COMMAND_BYTES:
            self._partial = b""
            raise ProtocolError(E_SYNTAX, "line too long")
        self._partial = partial
        return [line[:-1] if line.endswith(b"\r") else line for line in lines]

    @property
    def pending(self) -> int:
        """Bytes held of a line not yet complete."""
        return len(self._partial)


def reply_lines(cmd: Command) -> int:
    """How many lines a successful reply to ``cmd`` has (an error is always one)."""
    if cmd.op == "I":
        return 6 if "l" in cmd.modifiers or "L" in cmd.modifiers else 5
    return 1


class ReplyAssembler:
    """Collect replies from a persistent stream member, one request at a time in order.

    The stream has no reply delimiter besides line count, so the caller says how
    many lines it expects (see :func:`reply_lines`); an ``E...`` first line is a
    one-line error reply whatever was expected.
    """

    __slots__ = ("_buffer", "_partial")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._partial = 0  # bytes after the last newline in the buffer

    def feed(self, data: bytes) -> None:
        """Add received bytes.  E5 (and a reset) if a line grows beyond any real reply."""
        self._buffer += data
        last_newline = data.rfind(b"\n")
        if last_newline < 0:
            self._partial += len(data)
        else:
            self._partial = len(data) - last_newline - 1
        if self._partial > MAX_COMMAND_BYTES:
            self.reset()
            raise ProtocolError(E_SYNTAX, "reply line too long")

    def pop(self, expected_lines: int) -> str | None:
        """The next complete reply (trailing ``\\n`` kept), or ``None`` if not all here."""
        if expected_lines < 1:
            raise ValueError("a reply has at least one line")
        buffer = self._buffer
        end = buffer.find(b"\n")
        if end < 0:
            return None
        if expected_lines > 1 and not buffer.startswith(b"E"):
            for _ in range(expected_lines - 1):
                end = buffer.find(b"\n", end + 1)
                if end < 0:
                    return None
        text = buffer[: end + 1].decode("utf-8", "replace")
        del buffer[: end + 1]
        return text

    def reset(self) -> None:
        """Forget everything buffered (after a reconnect or a framing error)."""
        self._buffer.clear()
        self._partial = 0
