"""Property tests: commands round-trip through text, and no input makes a parser crash."""

from __future__ import annotations

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from rtpcluster.protocol import (
    MAX_COMMAND_BYTES,
    MAX_COOKIE_BYTES,
    Command,
    LineFramer,
    ProtocolError,
    ReplyAssembler,
    format_info_reply,
    format_stats_reply,
    merge_stats,
    parse_command,
    parse_info_reply,
    parse_stats_reply,
    parse_ul_reply,
    rewrite_ul_address,
    split_cookie,
)

SEPARATORS = " \t\r\n"

token_chars = st.characters(exclude_characters=SEPARATORS + "\0", exclude_categories=["Cs"])
tokens = st.text(token_chars, min_size=1, max_size=8).filter(lambda t: t != "&&")
modifiers = st.text(token_chars, max_size=6)

# (op, argument count range); VF is handled apart.
ARG_COUNTS = {
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
NO_MODIFIERS = "XSV"
WITH_SUBCOMMANDS = "ULQ"


@st.composite
def commands(draw: st.DrawFn) -> Command:
    if draw(st.booleans()) and draw(st.integers(0, 12)) == 0:
        return Command("V", draw(st.sampled_from("Ff")), (draw(tokens),))
    op = draw(st.sampled_from(sorted(ARG_COUNTS)))
    low, high = ARG_COUNTS[op]
    mods = "" if op in NO_MODIFIERS else draw(modifiers)
    args = tuple(draw(st.lists(tokens, min_size=low, max_size=high)))
    subcommands: tuple[tuple[str, ...], ...] = ()
    if op in WITH_SUBCOMMANDS:
        sections = st.lists(tokens, min_size=1, max_size=23).map(tuple)
        subcommands = tuple(draw(st.lists(sections, max_size=15)))
    cmd = Command(op, mods, args, subcommands)
    assume(len(cmd.serialize().encode()) <= MAX_COMMAND_BYTES)
    return cmd


@given(commands())
def test_serialize_then_parse_gives_the_same_command(cmd: Command) -> None:
    text = cmd.serialize()
    parsed = parse_command(text.encode())
    assert parsed == cmd
    assert parsed.serialize() == text
    assert parse_command(text) == cmd


separator_runs = st.text(SEPARATORS, min_size=1, max_size=3)


@given(commands(), st.booleans(), st.data())
def test_any_separator_runs_and_letter_case_parse_the_same(
    cmd: Command, lower: bool, data: st.DataObject
) -> None:
    words = [(cmd.op.lower() if lower else cmd.op) + cmd.modifiers, *cmd.args]
    for section in cmd.subcommands:
        words.append("&&")
        words.extend(section)
    text = data.draw(st.text(SEPARATORS, max_size=2))
    for word in words:
        text += word + data.draw(separator_runs)
    assume(len(text.encode()) <= MAX_COMMAND_BYTES)
    assert parse_command(text) == cmd


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_parse_command_raises_only_protocol_error(data: bytes) -> None:
    try:
        cmd = parse_command(data)
    except ProtocolError:
        return
    assert parse_command(cmd.serialize()) == cmd


@given(st.text(max_size=200))
def test_parse_command_of_text_raises_only_protocol_error(text: str) -> None:
    try:
        cmd = parse_command(text)
    except ProtocolError:
        return
    assert parse_command(cmd.serialize()) == cmd
    if cmd.op in "UL":
        # The modifier helpers must cope with whatever the client sent.
        _ = (cmd.local_address, cmd.remote_hint)
        assert cmd.with_local_address("10.0.0.1").local_address == "10.0.0.1"


@given(st.binary(max_size=300))
def test_split_cookie_raises_only_protocol_error(data: bytes) -> None:
    try:
        cookie, rest = split_cookie(data)
    except ProtocolError:
        first = data.strip(b" \t\r\n").replace(b"\t", b" ").replace(b"\r", b" ")
        first = first.replace(b"\n", b" ").partition(b" ")[0]
        assert not first or len(first) > MAX_COOKIE_BYTES  # blank, or the cookie too long
        return
    assert 0 < len(cookie) <= MAX_COOKIE_BYTES
    assert not any(c in cookie for c in b" \t\r\n")
    assert data.strip(b" \t\r\n").startswith(cookie)
    assert rest == rest.lstrip(b" \t\r\n")
    assert rest.rstrip(b" \t\r\n") == data.strip(b" \t\r\n")[len(cookie) :].strip(b" \t\r\n")


cookie_bytes = st.integers(0, 255).filter(lambda b: b not in b" \t\r\n")


@given(st.integers(1, 400), cookie_bytes, st.sampled_from([b"", b" V", b"\tU c 1 2 f\n"]))
def test_a_cookie_is_answered_exactly_up_to_its_limit(length: int, byte: int, rest: bytes) -> None:
    datagram = bytes([byte]) * length + rest
    try:
        cookie, _ = split_cookie(datagram)
    except ProtocolError as exc:
        assert length > MAX_COOKIE_BYTES and exc.reply == "E5"
        return
    assert length <= MAX_COOKIE_BYTES and cookie == bytes([byte]) * length


@given(st.lists(st.binary(max_size=3000), max_size=8))
def test_line_framer_raises_only_protocol_error(chunks: list[bytes]) -> None:
    framer = LineFramer()
    for chunk in chunks:
        try:
            lines = framer.feed(chunk)
        except ProtocolError:
            continue
        assert all(b"\n" not in line for line in lines)


@given(st.lists(st.binary(max_size=3000), max_size=8), st.lists(st.integers(1, 6), max_size=8))
def test_reply_assembler_raises_only_protocol_error(
    chunks: list[bytes], expected: list[int]
) -> None:
    assembler = ReplyAssembler()
    for chunk, lines in zip(chunks, expected + [1] * len(chunks), strict=False):
        try:
            assembler.feed(chunk)
        except ProtocolError:
            continue
        reply = assembler.pop(lines)
        assert reply is None or reply.endswith("\n")


@given(st.lists(st.binary(max_size=40), max_size=20))
def test_reply_assembler_gives_back_what_was_fed_line_by_line(lines: list[bytes]) -> None:
    stream = b"".join(line.replace(b"\n", b"") + b"\n" for line in lines)
    assembler = ReplyAssembler()
    for i in range(0, len(stream), 7):
        assembler.feed(stream[i : i + 7])
    popped = []
    while (reply := assembler.pop(1)) is not None:
        popped.append(reply)
    assert "".join(popped) == stream.decode("utf-8", "replace")


@given(st.text(max_size=100), st.sampled_from(["198.51.100.5", "2001:db8::5"]))
def test_ul_reply_helpers_raise_only_protocol_error(text: str, address: str) -> None:
    try:
        parsed = parse_ul_reply(text)
    except ProtocolError:
        assert rewrite_ul_address(text, address) == text
        return
    rewritten = rewrite_ul_address(text, address)
    assert rewritten.endswith("\n") == text.endswith("\n")
    if parsed.port != 0:
        again = parse_ul_reply(rewritten)
        assert (again.port, again.address, again.tail) == (parsed.port, address, parsed.tail)


@given(st.text(max_size=200))
def test_parse_info_reply_raises_only_protocol_error(text: str) -> None:
    try:
        values = parse_info_reply(text)
    except ProtocolError:
        return
    assert all(isinstance(v, int | float) for v in values.values())
    format_info_reply(values, with_load=True)


@given(st.lists(st.text(max_size=10), max_size=5), st.booleans(), st.text(max_size=100))
def test_parse_stats_reply_raises_only_protocol_error(
    names: list[str], verbose: bool, text: str
) -> None:
    try:
        parse_stats_reply(names, verbose, text)
    except ProtocolError:
        return


stat_names = st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12)
stat_values = st.integers(0, 2**64) | st.floats(0, 1e9, allow_nan=False).map(
    lambda f: float(f"{f:f}")
)


@given(st.dictionaries(stat_names, stat_values, max_size=22), st.booleans())
def test_stats_reply_round_trips(values: dict[str, int | float], verbose: bool) -> None:
    names = list(values)
    text = format_stats_reply(names, verbose, values)
    assert parse_stats_reply(names, verbose, text) == values


@given(st.lists(st.dictionaries(stat_names, stat_values, max_size=5), max_size=4))
def test_merge_stats_sums_every_name(replies: list[dict[str, int | float]]) -> None:
    merged = merge_stats(replies)
    assert set(merged) == {name for reply in replies for name in reply}
    for name, total in merged.items():
        parts = [reply[name] for reply in replies if name in reply]
        assert isinstance(total, float) == any(isinstance(p, float) for p in parts)
        assert total == sum(parts)
