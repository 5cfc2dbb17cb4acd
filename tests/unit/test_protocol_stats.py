"""Statistics replies: I/Ib/Il lines, G/Gv values, and sums over members."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from rtpcluster.protocol import (
    E_SYNTAX,
    INFO_FIELDS,
    ProtocolError,
    format_info_reply,
    format_stats_reply,
    merge_stats,
    parse_info_reply,
    parse_stats_reply,
)

INFO_REPLY = (
    "sessions created: 12\n"
    "active sessions: 3\n"
    "active streams: 6\n"
    "packets received: 18446744073709551615\n"
    "packets transmitted: 90\n"
    "average load: 0.000000\n"
)


def test_parse_info_reply() -> None:
    values = parse_info_reply(INFO_REPLY)
    assert values == {
        "sessions created": 12,
        "active sessions": 3,
        "active streams": 6,
        "packets received": 18446744073709551615,
        "packets transmitted": 90,
        "average load": 0.0,
    }
    assert isinstance(values["average load"], float)
    assert isinstance(values["active sessions"], int)


def test_parse_info_reply_keeps_unknown_names() -> None:
    assert parse_info_reply("module sessions: 4\n") == {"module sessions": 4}


@pytest.mark.parametrize(
    "text",
    [
        "E18\n",
        "sessions created 12\n",
        ": 5\n",
        "active sessions: many\n",
        "active sessions:\n",
        "load: 1e5\n",
        "load: inf\n",
        "load: 1_000\n",
        "load: 1." + "0" * 3 + "x\n",
    ],
)
def test_parse_info_reply_rejects_malformed_lines(text: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_info_reply(text)
    assert info.value.code == E_SYNTAX


def test_format_info_reply_round_trips_and_fills_missing_fields() -> None:
    assert format_info_reply(parse_info_reply(INFO_REPLY), with_load=True) == INFO_REPLY
    assert format_info_reply({"active sessions": 7}) == (
        "sessions created: 0\nactive sessions: 7\nactive streams: 0\n"
        "packets received: 0\npackets transmitted: 0\n"
    )


def test_format_info_reply_prints_smoothed_counts_as_integers() -> None:
    lines = format_info_reply({"active sessions": 6.5, "average load": 0.25}, True).splitlines()
    assert [line.split(":")[0] for line in lines] == [*INFO_FIELDS, "average load"]
    assert lines[1] == "active sessions: 6"
    assert lines[5] == "average load: 0.250000"


NAMES = ("nsess_created", "ncmds_rcvd", "total_duration")


def test_parse_stats_reply_plain_and_verbose() -> None:
    # The reference's examples (section 5).
    plain = parse_stats_reply(NAMES, False, "12 345 812.402137\n")
    assert plain == {"nsess_created": 12, "ncmds_rcvd": 345, "total_duration": 812.402137}
    assert isinstance(plain["total_duration"], float)
    assert parse_stats_reply(["nsess_created"], True, "nsess_created=12\n") == {"nsess_created": 12}


def test_g_without_names_is_an_empty_line() -> None:
    assert parse_stats_reply([], False, "\n") == {}
    assert format_stats_reply([], False, {}) == "\n"


@pytest.mark.parametrize(
    ("names", "verbose", "text"),
    [
        (NAMES, False, "12 345\n"),
        (NAMES, False, "12 345 1 2\n"),
        (NAMES, False, "E68\n"),
        (["nsess_created"], True, "nsess_created 12\n"),
        (["nsess_created"], True, "ncmds_rcvd=12\n"),
        (["nsess_created"], False, "nsess_created=12\n"),
        (["nsess_created"], True, "nsess_created=x\n"),
        ([], False, "1\n"),
    ],
)
def test_parse_stats_reply_rejects_mismatch(names: Sequence[str], verbose: bool, text: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_stats_reply(names, verbose, text)
    assert info.value.code == E_SYNTAX


def test_merge_stats_of_three_members_including_floats() -> None:
    replies: list[dict[str, int | float]] = [
        parse_stats_reply(NAMES, False, "12 345 812.402137\n"),
        parse_stats_reply(NAMES, True, "nsess_created=3 ncmds_rcvd=10 total_duration=0.5\n"),
        {"nsess_created": 1, "ncmds_rcvd": 0, "total_duration": 2},
    ]
    merged = merge_stats(replies)
    assert merged == pytest.approx(
        {"nsess_created": 16, "ncmds_rcvd": 355, "total_duration": 814.902137}
    )
    assert isinstance(merged["nsess_created"], int)
    assert isinstance(merged["total_duration"], float)
    assert format_stats_reply(NAMES, False, merged) == "16 355 814.902137\n"
    assert format_stats_reply(NAMES, True, merged) == (
        "nsess_created=16 ncmds_rcvd=355 total_duration=814.902137\n"
    )


def test_merge_stats_of_nothing_and_of_disjoint_names() -> None:
    assert merge_stats([]) == {}
    assert merge_stats([{"a": 1}, {"b": 2.5}, {"a": 2}]) == {"a": 3, "b": 2.5}


def test_merge_info_replies_of_members() -> None:
    first = parse_info_reply(INFO_REPLY.replace("18446744073709551615", "100"))
    second = parse_info_reply(INFO_REPLY.replace("active sessions: 3", "active sessions: 4"))
    merged = merge_stats([first, second])
    assert merged["active sessions"] == 7
    assert merged["packets received"] == 18446744073709551715
    assert format_info_reply(merged).splitlines()[1] == "active sessions: 7"


def test_format_stats_reply_shows_missing_names_as_zero() -> None:
    assert format_stats_reply(["a", "b"], True, {"a": 1}) == "a=1 b=0\n"
