"""Command builders: lookups, notify arguments, local-address modifiers."""

from __future__ import annotations

import pytest

from rtpcluster.protocol import Command, parse_command, split_ul_modifiers


def test_as_lookup_swaps_tags_and_keeps_modifiers() -> None:
    offer = parse_command("UAc0,8 c1 192.0.2.10 5000 ftag1 ttag1")
    lookup = offer.as_lookup()
    assert lookup.serialize() == "LAc0,8 c1 192.0.2.10 5000 ttag1 ftag1"
    assert offer.serialize() == "UAc0,8 c1 192.0.2.10 5000 ftag1 ttag1"


def test_as_lookup_drops_notify_and_subcommands() -> None:
    update = parse_command(
        "U c1 192.0.2.10 5000 ftag1 ttag1 tcp:%%CC_SELF%%:9000 dlg1 && M3:1 dlg1 && Sr ttl=4"
    )
    lookup = update.as_lookup()
    assert lookup == Command("L", "", ("c1", "192.0.2.10", "5000", "ttag1", "ftag1"))
    assert parse_command(lookup.serialize()) == lookup


@pytest.mark.parametrize(
    "text",
    [
        "U c1 192.0.2.10 5000 ftag1",
        "U c1 192.0.2.10 5000 ftag1 unix:/run/n.sock dlg1",
        "L c1 192.0.2.10 5000 ftag1 ttag1",
        "D c1 ftag1 ttag1",
    ],
)
def test_as_lookup_refuses_what_cannot_be_a_lookup(text: str) -> None:
    with pytest.raises(ValueError):
        parse_command(text).as_lookup()


def test_without_notify_removes_the_pair_only() -> None:
    with_to = parse_command("U c1 192.0.2.10 5000 ft tt nsock ntag && M3:1 x")
    assert with_to.without_notify().serialize() == "U c1 192.0.2.10 5000 ft tt && M3:1 x"
    without_to = parse_command("U c1 192.0.2.10 5000 ft nsock ntag")
    stripped = without_to.without_notify()
    assert stripped.serialize() == "U c1 192.0.2.10 5000 ft"
    assert stripped.to_tag is None
    plain = parse_command("U c1 192.0.2.10 5000 ft tt")
    assert plain.without_notify() == plain


def test_with_notify_adds_or_replaces_the_pair() -> None:
    plain = parse_command("U c1 192.0.2.10 5000 ft")
    added = plain.with_notify("tcp:%%CC_SELF%%:9000", "dlg%2042")
    assert added.serialize() == "U c1 192.0.2.10 5000 ft tcp:%%CC_SELF%%:9000 dlg%2042"
    assert (added.to_tag, added.notify_socket, added.notify_tag) == (
        None,
        "tcp:%%CC_SELF%%:9000",
        "dlg%2042",
    )
    replaced = parse_command("U c1 192.0.2.10 5000 ft tt old otag").with_notify("new", "ntag")
    assert replaced.serialize() == "U c1 192.0.2.10 5000 ft tt new ntag"
    assert replaced.to_tag == "tt"


@pytest.mark.parametrize(("socket", "tag"), [("", "t"), ("a b", "t"), ("s", "&&"), ("s", "a\nb")])
def test_with_notify_refuses_what_is_not_one_token(socket: str, tag: str) -> None:
    with pytest.raises(ValueError):
        parse_command("U c1 192.0.2.10 5000 ft").with_notify(socket, tag)


def test_notify_builders_are_for_u_only() -> None:
    lookup = parse_command("L c1 192.0.2.10 5000 ft")
    with pytest.raises(ValueError):
        lookup.without_notify()
    with pytest.raises(ValueError):
        lookup.with_notify("s", "t")


@pytest.mark.parametrize(
    ("modifiers", "tokens"),
    [
        ("", []),
        ("AZ20c0,8,101", ["A", "Z20", "c0,8,101"]),
        ("aL192.0.2.5r198.51.100.1", ["a", "L192.0.2.5", "r198.51.100.1"]),
        ("L[2001:db8::5]6R[2001:db8::1]", ["L[2001:db8::5]", "6", "R[2001:db8::1]"]),
        ("l{pub}W", ["l{pub}", "W"]),
        ("R{pub}", ["R", "{", "p", "u", "b", "}"]),
        ("LxZ", ["L", "x", "Z"]),
        ("L[::1", ["L[::1"]),
        ("IEn?", ["I", "E", "n", "?"]),
    ],
)
def test_split_ul_modifiers(modifiers: str, tokens: list[str]) -> None:
    assert split_ul_modifiers(modifiers) == tokens
    assert "".join(tokens) == modifiers


@pytest.mark.parametrize(
    ("modifiers", "local", "remote"),
    [
        ("A", None, None),
        ("AL192.0.2.5", "192.0.2.5", None),
        ("l[2001:db8::5]", "2001:db8::5", None),
        ("L{pub}", "{pub}", None),
        ("R198.51.100.1", None, "198.51.100.1"),
        ("r[2001:db8::1]c0", None, "2001:db8::1"),
        ("L10.0.0.1L10.0.0.2", "10.0.0.2", None),
        ("L", None, None),
    ],
)
def test_local_address_and_remote_hint(
    modifiers: str, local: str | None, remote: str | None
) -> None:
    for op in ("U", "L"):
        cmd = parse_command(f"{op}{modifiers} c1 192.0.2.10 5000 ft")
        assert cmd.local_address == local
        assert cmd.remote_hint == remote


def test_address_modifiers_of_other_commands_are_ignored() -> None:
    assert parse_command("Il").local_address is None
    assert parse_command("Rs c1 ft").remote_hint is None


@pytest.mark.parametrize(
    ("text", "addr", "expected"),
    [
        ("U c1 192.0.2.10 5000 ft", "10.0.0.1", "UL10.0.0.1 c1 192.0.2.10 5000 ft"),
        ("UAR198.51.100.1c0 c1 ip 5 ft", "10.0.0.1", "UAc0L10.0.0.1 c1 ip 5 ft"),
        ("U6L[2001:db8::7]W c1 ip 5 ft", "2001:db8::5", "U6WL[2001:db8::5] c1 ip 5 ft"),
        ("U6 c1 ip 5 ft", "[2001:db8::5]", "U6L[2001:db8::5] c1 ip 5 ft"),
        ("Ll{pub}r[::2]l1.2.3.4Z30 c1 ip 5 ft tt", "10.0.0.1", "LZ30L10.0.0.1 c1 ip 5 ft tt"),
        ("U c1 ip 5 ft tt && L ip2 6", "10.0.0.1", "UL10.0.0.1 c1 ip 5 ft tt && L ip2 6"),
    ],
)
def test_with_local_address(text: str, addr: str, expected: str) -> None:
    cmd = parse_command(text)
    rewritten = cmd.with_local_address(addr)
    assert rewritten.serialize() == expected
    assert rewritten.local_address == addr.strip("[]")
    assert rewritten.remote_hint is None
    assert cmd.serialize() == text


def test_with_local_address_refuses_other_commands_and_bad_addresses() -> None:
    with pytest.raises(ValueError):
        parse_command("D c1 ft").with_local_address("10.0.0.1")
    with pytest.raises(ValueError):
        parse_command("U c1 ip 5 ft").with_local_address("")
    with pytest.raises(ValueError):
        parse_command("U c1 ip 5 ft").with_local_address("10.0.0.1 x")
