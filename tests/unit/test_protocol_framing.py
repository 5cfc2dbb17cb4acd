"""Cookies of datagrams, line framing of streams, assembling member replies."""

from __future__ import annotations

import pytest

from rtpcluster.protocol import (
    E_SYNTAX,
    MAX_COMMAND_BYTES,
    MAX_COOKIE_BYTES,
    MAX_DATAGRAM_BYTES,
    LineFramer,
    ProtocolError,
    ReplyAssembler,
    join_cookie,
    parse_command,
    reply_lines,
    split_cookie,
)


def test_split_cookie_from_reference_example() -> None:
    assert split_cookie(b"5d41402a V") == (b"5d41402a", b"V")


def test_split_cookie_strips_whitespace_between_cookie_and_command() -> None:
    cookie, rest = split_cookie(b" \tabc_1\t \r\nU c1 192.0.2.1 5000 ft\n")
    assert cookie == b"abc_1"
    assert rest == b"U c1 192.0.2.1 5000 ft\n"


def test_cookie_alone_gives_empty_command_which_is_e5() -> None:
    cookie, rest = split_cookie(b"V\n")
    assert (cookie, rest) == (b"V", b"")
    with pytest.raises(ProtocolError) as info:
        parse_command(rest)
    assert join_cookie(cookie, info.value.reply) == b"V E5\n"


@pytest.mark.parametrize("datagram", [b"", b" ", b"\r\n\t "])
def test_blank_datagram_has_no_cookie(datagram: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        split_cookie(datagram)
    assert info.value.code == E_SYNTAX


def test_cookie_up_to_the_limit_is_answered_a_longer_one_is_not() -> None:
    assert MAX_COOKIE_BYTES == 128
    cookie = b"c" * MAX_COOKIE_BYTES
    assert split_cookie(cookie + b" V") == (cookie, b"V")
    assert split_cookie(cookie) == (cookie, b"")  # alone: the E5 it gets carries it
    for datagram in (cookie + b"c V", cookie + b"c", b"\t" + cookie + b"c\nV", b"x" * 65000):
        with pytest.raises(ProtocolError) as info:
            split_cookie(datagram)
        assert info.value.code == E_SYNTAX


def test_datagram_limit_is_the_command_buffer_cookie_included() -> None:
    assert MAX_DATAGRAM_BYTES == MAX_COMMAND_BYTES == 8191


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("20040107", b"5d41402a 20040107\n"),
        ("20040107\n", b"5d41402a 20040107\n"),
        (b"E5\n\n", b"5d41402a E5\n"),
        (
            "sessions created: 1\nactive sessions: 0\n",
            b"5d41402a sessions created: 1\nactive sessions: 0\n",
        ),
        ("", b"5d41402a \n"),
    ],
)
def test_join_cookie(reply: str | bytes, expected: bytes) -> None:
    assert join_cookie(b"5d41402a", reply) == expected


def test_line_framer_splits_lines_across_feeds() -> None:
    framer = LineFramer()
    assert framer.feed(b"V\nVF 2005") == [b"V"]
    assert framer.pending == len(b"VF 2005")
    assert framer.feed(b"0322\r\n\nI") == [b"VF 20050322", b""]
    assert framer.feed(b"b\n") == [b"Ib"]
    assert framer.pending == 0


def test_line_framer_strips_only_one_carriage_return() -> None:
    assert LineFramer().feed(b"V\r\r\n") == [b"V\r"]


def test_line_framer_accepts_a_line_of_maximum_size() -> None:
    framer = LineFramer()
    line = b"x" * MAX_COMMAND_BYTES
    assert framer.feed(line) == []
    assert framer.feed(b"\n") == [line]


@pytest.mark.parametrize(
    "chunks", [[b"x" * (MAX_COMMAND_BYTES + 1)], [b"V\n" + b"x" * 5000, b"x" * 5000]]
)
def test_line_framer_overflow_is_e5_and_resets(chunks: list[bytes]) -> None:
    framer = LineFramer()
    with pytest.raises(ProtocolError) as info:
        for chunk in chunks:
            framer.feed(chunk)
    assert info.value.code == E_SYNTAX
    assert framer.pending == 0
    assert framer.feed(b"V\n") == [b"V"]


@pytest.mark.parametrize(
    ("text", "lines"),
    [("I", 5), ("Ib", 5), ("Il", 6), ("Ibl", 6), ("IL", 6), ("V", 1), ("G a b", 1), ("X", 1)],
)
def test_reply_lines(text: str, lines: int) -> None:
    assert reply_lines(parse_command(text)) == lines


INFO = (
    b"sessions created: 12\nactive sessions: 3\nactive streams: 6\n"
    b"packets received: 100\npackets transmitted: 90\n"
)


def test_reply_assembler_returns_replies_in_order_across_chunks() -> None:
    assembler = ReplyAssembler()
    assembler.feed(b"35012 198.51.100.5\n" + INFO[:30])
    assert assembler.pop(1) == "35012 198.51.100.5\n"
    assert assembler.pop(5) is None
    assembler.feed(INFO[30:] + b"0\n")
    assert assembler.pop(5) == INFO.decode()
    assert assembler.pop(1) == "0\n"
    assert assembler.pop(1) is None


def test_reply_assembler_error_ends_a_multi_line_reply() -> None:
    assembler = ReplyAssembler()
    assembler.feed(b"E18\n20040107\n")
    assert assembler.pop(6) == "E18\n"
    assert assembler.pop(1) == "20040107\n"


def test_reply_assembler_waits_for_the_newline() -> None:
    assembler = ReplyAssembler()
    assembler.feed(b"2004")
    assert assembler.pop(1) is None
    assembler.feed(b"0107\n")
    assert assembler.pop(1) == "20040107\n"


def test_reply_assembler_overlong_line_is_e5_and_resets() -> None:
    assembler = ReplyAssembler()
    assembler.feed(b"0\n" + b"9" * MAX_COMMAND_BYTES)
    with pytest.raises(ProtocolError):
        assembler.feed(b"9")
    assert assembler.pop(1) is None
    assembler.feed(b"0\n")
    assert assembler.pop(1) == "0\n"


def test_reply_assembler_rejects_zero_lines() -> None:
    with pytest.raises(ValueError):
        ReplyAssembler().pop(0)
