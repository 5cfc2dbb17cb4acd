"""Member replies: errors, U/L port and address, positive answers, address rewriting."""

from __future__ import annotations

import pytest

from rtpcluster.protocol import (
    E_SYNTAX,
    ProtocolError,
    ULReply,
    error_code,
    is_error,
    is_positive,
    parse_ul_reply,
    rewrite_ul_address,
)


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        ("E5\n", 5),
        ("E0", 0),
        ("E999\n", 999),
        ("E50 \n", 50),
        (" E1\n", 1),
        ("0\n", None),
        ("35012 198.51.100.5\n", None),
        ("E\n", None),
        ("Ex\n", None),
        ("E\u00b2\n", None),
        ("", None),
        ("ttl=57 nrelayed=236\n", None),
    ],
)
def test_error_code_and_is_error(reply: str, code: int | None) -> None:
    assert error_code(reply) == code
    assert is_error(reply) == (code is not None)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("35012 198.51.100.5\n", ULReply(35012, "198.51.100.5", False, "")),
        ("35016 2001:db8::5 6\n", ULReply(35016, "2001:db8::5", True, "")),
        ("35012\n", ULReply(35012, None, False, "")),
        ("0\n", ULReply(0, None, False, "")),
        ("24270 && -1\n", ULReply(24270, None, False, " && -1")),
        (
            "24270 192.0.2.1 && 0 && 24272 192.0.2.1",
            ULReply(24270, "192.0.2.1", False, " && 0 && 24272 192.0.2.1"),
        ),
    ],
)
def test_parse_ul_reply(reply: str, expected: ULReply) -> None:
    assert parse_ul_reply(reply) == expected


@pytest.mark.parametrize(
    "reply",
    [
        "",
        "\n",
        "E5\n",
        "abc\n",
        "1 2 3\n",
        "1 a 6 x\n",
        "70000 a\n",
        "-1\n",
        "\u00b2\n",
        "5&& 0\n",
        "&& 1\n",
    ],
)
def test_parse_ul_reply_rejects_other_text(reply: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_ul_reply(reply)
    assert info.value.code == E_SYNTAX


@pytest.mark.parametrize(
    ("op", "reply", "positive"),
    [
        ("U", "35012 198.51.100.5\n", True),
        ("L", "35012\n", True),
        ("L", "0\n", False),
        ("U", "E72\n", False),
        ("L", "garbage\n", False),
        ("D", "0\n", True),
        ("D", "E50\n", False),
        ("Q", "ttl=57 nrelayed=236\n", True),
        ("V", "20040107\n", True),
    ],
)
def test_is_positive(op: str, reply: str, positive: bool) -> None:
    assert is_positive(op, reply) is positive


@pytest.mark.parametrize(
    ("reply", "address", "expected"),
    [
        ("35012 10.0.0.5\n", "198.51.100.5", "35012 198.51.100.5\n"),
        ("35012", "198.51.100.5", "35012 198.51.100.5"),
        ("35012\n", "198.51.100.5", "35012 198.51.100.5\n"),
        ("35016 10.0.0.5\n", "2001:db8::5", "35016 2001:db8::5 6\n"),
        ("35016 fd00::5 6\n", "[2001:db8::5]", "35016 2001:db8::5 6\n"),
        ("35016 fd00::5 6\n", "198.51.100.5", "35016 198.51.100.5\n"),
        ("24270 10.0.0.5 && -1\n", "198.51.100.5", "24270 198.51.100.5 && -1\n"),
        ("0\n", "198.51.100.5", "0\n"),
        ("E72\n", "198.51.100.5", "E72\n"),
        ("junk reply here x\n", "198.51.100.5", "junk reply here x\n"),
    ],
)
def test_rewrite_ul_address(reply: str, address: str, expected: str) -> None:
    assert rewrite_ul_address(reply, address) == expected
