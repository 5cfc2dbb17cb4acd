"""Parsing of RTPproxy control commands: the summary table, field positions, errors."""

from __future__ import annotations

import pytest

from rtpcluster.protocol import (
    E_MODIFIERS,
    E_NARGS,
    E_SUBCOMMAND,
    E_SYNTAX,
    E_UNKNOWN_COMMAND,
    MAX_COMMAND_BYTES,
    Command,
    ProtocolError,
    parse_command,
)

# One example per row of the reference's summary table (2.1), mostly taken from its text.
TABLE_EXAMPLES = [
    ("U 1234@host 192.0.2.10 5000 ftag1", "U", "", "1234@host"),
    ("L 1234@host 192.0.2.20 6000 ftag1 ttag1", "L", "", "1234@host"),
    ("U6 abc 2001:db8::10 5000 ftag1", "U", "6", "abc"),
    ("UAc0,8 c1 192.0.2.10 5000 ftag1", "U", "Ac0,8", "c1"),
    ("Dw c1 ftag1 ttag1", "D", "w", "c1"),
    ("P2 c1 /var/prompts/hold session ftag1 ttag1", "P", "2", "c1"),
    ("S c1 ftag1", "S", "", "c1"),
    ("Rs c1 ftag1 ttag1", "R", "s", "c1"),
    ("Csp c1 udp:192.0.2.1:6000 ftag1 ttag1", "C", "sp", "c1"),
    ("Na c1 ftag1", "N", "a", "c1"),
    ("Qv c1 ftag1 ttag1 ttl nrelayed && D", "Q", "v", "c1"),
    ("X", "X", "", None),
    ("Ib", "I", "b", None),
    ("G nsess_created ncmds_rcvd total_duration", "G", "", None),
    ("Gv nsess_created", "G", "v", None),
    ("V", "V", "", None),
    ("VF 20050322", "V", "F", None),
]


@pytest.mark.parametrize(("text", "op", "modifiers", "call_id"), TABLE_EXAMPLES)
def test_summary_table_examples_parse_and_round_trip(
    text: str, op: str, modifiers: str, call_id: str | None
) -> None:
    cmd = parse_command(text.encode())
    assert cmd.op == op
    assert cmd.modifiers == modifiers
    assert cmd.call_id == call_id
    assert cmd.is_session_command == (op in "ULDPSRCQN")
    assert cmd.serialize() == text
    assert parse_command(text) == cmd


def test_fields_of_u_by_token_count() -> None:
    five = parse_command("U c1 192.0.2.10 5000 ftag1")
    assert (five.from_tag, five.to_tag, five.notify_socket, five.notify_tag) == (
        "ftag1",
        None,
        None,
        None,
    )
    six = parse_command("U c1 192.0.2.10 5000 ftag1 ttag1")
    assert (six.from_tag, six.to_tag, six.notify_socket) == ("ftag1", "ttag1", None)
    seven = parse_command("U c1 192.0.2.10 5000 ftag1 unix:/run/n.sock dlg%2042")
    assert (seven.from_tag, seven.to_tag) == ("ftag1", None)
    assert (seven.notify_socket, seven.notify_tag) == ("unix:/run/n.sock", "dlg%2042")
    eight = parse_command("U c1 192.0.2.10 5000 ftag1 ttag1 tcp:%%CC_SELF%%:9000 T1")
    assert (eight.from_tag, eight.to_tag) == ("ftag1", "ttag1")
    assert (eight.notify_socket, eight.notify_tag) == ("tcp:%%CC_SELF%%:9000", "T1")


@pytest.mark.parametrize(
    ("text", "from_tag", "to_tag"),
    [
        ("L c1 192.0.2.20 6000 ftag1", "ftag1", None),
        ("L c1 192.0.2.20 6000 ftag1;1 ttag1;1", "ftag1;1", "ttag1;1"),
        ("D c1 ftag1", "ftag1", None),
        ("D c1 ftag1 ttag1", "ftag1", "ttag1"),
        ("S c1 ftag1 ttag1", "ftag1", "ttag1"),
        ("R c1 ftag1", "ftag1", None),
        ("N c1 ftag1 ttag1", "ftag1", "ttag1"),
        ("P1 c1 prompt 0,8 ftag1", "ftag1", None),
        ("P1 c1 prompt 0,8 ftag1 ttag1", "ftag1", "ttag1"),
        ("C c1 recfile ftag1", "ftag1", None),
        ("C c1 recfile ftag1 ttag1", "ftag1", "ttag1"),
        ("Q c1 ftag1", "ftag1", None),
        ("Q c1 ftag1 ttag1", "ftag1", "ttag1"),
        ("Qv c1 ftag1 ttag1 ttl nrelayed rtpa_jmax", "ftag1", "ttag1"),
    ],
)
def test_tag_positions(text: str, from_tag: str, to_tag: str | None) -> None:
    cmd = parse_command(text)
    assert cmd.call_id == "c1"
    assert cmd.from_tag == from_tag
    assert cmd.to_tag == to_tag
    assert cmd.notify_socket is None
    assert cmd.notify_tag is None


@pytest.mark.parametrize("text", ["X", "I", "Il", "V", "VF 20081224", "G", "G ncmds_rcvd"])
def test_non_session_commands_have_no_session_fields(text: str) -> None:
    cmd = parse_command(text)
    assert not cmd.is_session_command
    assert (cmd.call_id, cmd.from_tag, cmd.to_tag) == (None, None, None)
    assert cmd.local_address is None


def test_vf_is_v_with_f_modifier() -> None:
    cmd = parse_command("vf 20050322")
    assert (cmd.op, cmd.modifiers, cmd.args) == ("V", "f", ("20050322",))
    assert cmd.is_vf
    assert not parse_command("V").is_vf
    assert not parse_command("G f").is_vf


def test_letters_are_case_insensitive_and_modifier_case_is_kept() -> None:
    cmd = parse_command("uAc0,8 c1 192.0.2.1 5000 ft")
    assert (cmd.op, cmd.modifiers) == ("U", "Ac0,8")
    assert cmd.serialize() == "UAc0,8 c1 192.0.2.1 5000 ft"


def test_any_run_of_space_tab_cr_lf_separates_tokens() -> None:
    cmd = parse_command(b"  U\t c1 \r\n192.0.2.1  5000\tft\r\n")
    assert cmd == Command("U", "", ("c1", "192.0.2.1", "5000", "ft"))
    assert cmd.serialize() == "U c1 192.0.2.1 5000 ft"


def test_other_whitespace_stays_inside_tokens() -> None:
    cmd = parse_command("D c1\x0bx ftag\xa0y")
    assert cmd.args == ("c1\x0bx", "ftag\xa0y")


def test_subcommands_are_split_on_double_ampersand_tokens() -> None:
    cmd = parse_command("U c1 192.0.2.1 5000 ft tt && M3:1 dlg%2042 101 && Sr ttl=5")
    assert cmd.args == ("c1", "192.0.2.1", "5000", "ft", "tt")
    assert cmd.subcommands == (("M3:1", "dlg%2042", "101"), ("Sr", "ttl=5"))
    assert cmd.serialize() == "U c1 192.0.2.1 5000 ft tt && M3:1 dlg%2042 101 && Sr ttl=5"


def test_double_ampersand_inside_a_token_is_not_a_separator() -> None:
    cmd = parse_command("U c1&&x 192.0.2.1 5000 ft")
    assert cmd.call_id == "c1&&x"
    assert cmd.subcommands == ()


def test_fifteen_subcommands_are_accepted() -> None:
    text = "Q c1 ft tt" + " && D" * 15
    assert len(parse_command(text).subcommands) == 15


def test_twenty_three_tokens_per_section_are_accepted() -> None:
    names = " ".join(f"s{i}" for i in range(22))
    assert len(parse_command(f"G {names}").args) == 22
    sub = " ".join(["M1:1", *(f"a{i}" for i in range(22))])
    assert len(parse_command(f"L c1 192.0.2.1 5000 ft && {sub}").subcommands[0]) == 23


def test_command_of_maximum_size_is_accepted() -> None:
    head = "D c1 "
    text = head + "f" * (MAX_COMMAND_BYTES - len(head))
    assert parse_command(text.encode()).from_tag == "f" * (MAX_COMMAND_BYTES - len(head))


def _code(data: bytes | str) -> int:
    with pytest.raises(ProtocolError) as info:
        parse_command(data)
    return info.value.code


@pytest.mark.parametrize("text", ["Z c1", "5", "&x", "\xdcber", "ber", "\u0131"])
def test_unknown_command_letter_is_e0(text: str) -> None:
    assert _code(text) == E_UNKNOWN_COMMAND


@pytest.mark.parametrize(
    "text",
    [
        "U c1 192.0.2.1 5000",
        "U c1 192.0.2.1 5000 ft tt nsock ntag extra",
        "L c1 192.0.2.1 5000",
        "L c1 192.0.2.1 5000 ft tt nsock",
        "D c1",
        "D c1 ft tt x",
        "S c1",
        "S c1 ft tt x",
        "R c1",
        "R c1 ft tt x",
        "N c1",
        "N c1 ft tt x",
        "P c1 prompt codecs",
        "P c1 prompt codecs ft tt x",
        "C c1 target",
        "C c1 target ft tt x",
        "Q c1",
        "Q c1 ft tt " + " ".join(["ttl"] * 12),
        "X 1",
        "I 1",
        "Ib 1",
        "V 20040107",
        "VF",
        "VF 20040107 20050322",
        "D",
    ],
)
def test_wrong_argument_count_is_e1(text: str) -> None:
    assert _code(text) == E_NARGS


def test_q_takes_up_to_eleven_counters() -> None:
    counters = " ".join(["ttl"] * 11)
    assert len(parse_command(f"Q c1 ft tt {counters}").args) == 14


@pytest.mark.parametrize("text", ["Xx", "Vx", "VFx 20040107", "Sx c1 ft", "S1 c1 ft"])
def test_modifiers_where_none_are_allowed_is_e2(text: str) -> None:
    assert _code(text) == E_MODIFIERS


@pytest.mark.parametrize(
    "text",
    [
        "D c1 ft && D",
        "P1 c1 prompt session ft && M3:1 x",
        "S c1 ft && D",
        "R c1 ft && D",
        "C c1 target ft && D",
        "N c1 ft && D",
        "X && D",
        "I && D",
        "G ncmds_rcvd && D",
        "V && D",
        "VF 20040107 && D",
    ],
)
def test_subcommands_after_other_than_u_l_q_is_e3(text: str) -> None:
    assert _code(text) == E_SUBCOMMAND


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"   ",
        b"\r\n",
        "",
        " \t ",
        "Q c1 ft &&",
        "&& Q c1 ft",
        "Q c1 ft && && D",
        "Q c1 ft tt" + " && D" * 16,
        "G " + " ".join(f"s{i}" for i in range(23)),
        "L c1 192.0.2.1 5000 ft && " + " ".join(["M1:1"] * 24),
        b"V\x00",
        "D c1 f\x00t",
        b"D c1 \xff\xfe",
        b"D c1 \xc3",
        "D c1 \ud800",
        b"D c1 " + b"f" * MAX_COMMAND_BYTES,
        "D c1 " + "f" * MAX_COMMAND_BYTES,
        "D c1 " + "\xe9" * (MAX_COMMAND_BYTES // 2),
    ],
)
def test_syntax_errors_are_e5(data: bytes | str) -> None:
    assert _code(data) == E_SYNTAX


def test_error_reply_text() -> None:
    with pytest.raises(ProtocolError) as info:
        parse_command("Z")
    assert info.value.reply == "E0"
    assert ProtocolError(999).reply == "E999"


def test_equality_and_hash() -> None:
    one = parse_command("U c1 192.0.2.1 5000 ft")
    same = parse_command("u  c1 192.0.2.1 5000 ft\n")
    other = parse_command("U c1 192.0.2.1 5000 ft2")
    assert one == same
    assert hash(one) == hash(same)
    assert one != other
    assert one != "U c1 192.0.2.1 5000 ft"
    assert "Command(op='U'" in repr(one)
