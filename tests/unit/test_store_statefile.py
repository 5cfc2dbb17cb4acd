"""``--state-file``: the round trip, ageing, and hostile files (huge, garbage, symlink,
FIFO, another user's), each refused with one line and never a traceback."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtpcluster.store.statefile import (
    MAX_LINE,
    StateFileError,
    read_state_file,
    write_state_file,
)

IDLE = {"c1": 3600.0, "c2": 60.0}


def clock(value: float) -> Callable[[], float]:
    return lambda: value


def test_round_trip_ages_and_consumes(tmp_path: Path) -> None:
    path = tmp_path / "state"
    snapshot = {
        "c1": [("call-1@h", "m1", 10.0), ("call-2@h", "m2", 3599.0)],
        "c2": [("x", "m1", 30.0)],
        "gone": [("y", "m1", 1.0)],
    }
    assert write_state_file(path, snapshot, now=clock(1000.0)) == 4
    assert path.stat().st_mode & 0o777 == 0o600
    state = read_state_file(path, IDLE, now=clock(1005.0))  # 5 s away
    assert state.tables == {"c1": {"call-1@h": ("m1", 15.0)}, "c2": {"x": ("m1", 35.0)}}
    assert (state.loaded, state.expired, state.unknown_cluster) == (2, 1, 1)
    assert not path.exists()  # handed over once


def test_missing_file_is_an_empty_state(tmp_path: Path) -> None:
    state = read_state_file(tmp_path / "none", IDLE)
    assert state.tables == {} and state.loaded == 0


def test_clock_gone_back_counts_no_time_away(tmp_path: Path) -> None:
    path = tmp_path / "state"
    write_state_file(path, {"c2": [("x", "m1", 50.0)]}, now=clock(1000.0))
    state = read_state_file(path, IDLE, now=clock(10.0), consume=False)
    assert state.tables == {"c2": {"x": ("m1", 50.0)}}
    assert path.exists()


def test_everything_expires_after_a_long_absence(tmp_path: Path) -> None:
    path = tmp_path / "state"
    write_state_file(path, {"c1": [("a", "m1", 0.0)]}, now=clock(0.0))
    assert read_state_file(path, IDLE, now=clock(3600.0)).expired == 1


def test_unwritable_fields_are_left_out(tmp_path: Path) -> None:
    path = tmp_path / "state"
    snapshot = {
        "c1": [
            ("ok", "m1", 1.0),
            ("tab\there", "m1", 1.0),
            ("nl\n", "m1", 1.0),
            ("", "m1", 1.0),
            ("a", "", 1.0),
            ("b", "m1", float("nan")),
            ("c", "m1", -1.0),
        ],
        "bad\tcluster": [("d", "m1", 1.0)],
    }
    assert write_state_file(path, snapshot, now=clock(0.0)) == 1
    assert read_state_file(path, IDLE, now=clock(0.0)).tables == {"c1": {"ok": ("m1", 1.0)}}


def test_write_replaces_a_symlink_not_its_target(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    path = tmp_path / "state"
    path.symlink_to(victim)
    write_state_file(path, {"c1": [("a", "m1", 1.0)]})
    assert victim.read_text() == "precious\n"
    assert not path.is_symlink()


def test_write_into_a_missing_directory_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(StateFileError, match="cannot write: No such file or directory"):
        write_state_file(tmp_path / "nodir" / "state", {})


def refused(path: Path, reason: str, **options: object) -> str:
    with pytest.raises(StateFileError) as caught:
        read_state_file(path, IDLE, **options)  # type: ignore[arg-type]  # (max_bytes)
    message = str(caught.value)
    assert reason in message
    assert "\n" not in message
    assert str(path) in message
    return message


def test_symlink_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    write_state_file(real, {"c1": [("a", "m1", 1.0)]})
    link = tmp_path / "state"
    link.symlink_to(real)
    refused(link, "symbolic link")
    assert real.exists()


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "state"
    os.mkfifo(fifo)
    refused(fifo, "not a regular file")


def test_directory_is_refused(tmp_path: Path) -> None:
    refused(tmp_path, "not a regular file")


def test_huge_file_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "state"
    with path.open("wb") as stream:
        stream.truncate(10 * 1024 * 1024 * 1024)  # 10 GiB, sparse
    refused(path, "more than the 1048576 allowed", max_bytes=1024 * 1024)
    assert path.exists()  # a refused file is left for the operator


def test_long_line_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state"
    path.write_text("rtpcluster-sessions 1 0\nc1\t" + "x" * MAX_LINE + "\tm1\t1\n")
    refused(path, f":2: line longer than {MAX_LINE} bytes")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty"),
        (b"\x00\x01\x02garbage", "not a session state file"),
        (b"PK\x03\x04 zip?\n", "not a session state file"),
        (b"rtpcluster-sessions 2 0\n", "format version '2'"),
        (b"rtpcluster-sessions 1 soon\n", "bad time written"),
        (b"rtpcluster-sessions 1 0\nc1\ta\tm1\n", ":2: expected cluster, call-id, member, age"),
        (b"rtpcluster-sessions 1 0\nc1\t\tm1\t1\n", ":2: expected"),
        (b"rtpcluster-sessions 1 0\nc1\ta\tm1\tnan\n", ":2: age must be"),
        (b"rtpcluster-sessions 1 0\nc1\ta\tm1\t-4\n", ":2: age must be"),
        (b"rtpcluster-sessions 1 0\nc1\ta\tm1\t1", ":2: incomplete last line"),
        (b"rtpcluster-sessions 1 0\nc1\t\xff\tm1\t1\n", ":2: not UTF-8"),
    ],
)
def test_garbage_is_one_line(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "state"
    path.write_bytes(content)
    refused(path, reason)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_another_users_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state"
    write_state_file(path, {"c1": [("a", "m1", 1.0)]})
    os.chown(path, 65534, 65534)
    refused(path, "owned by uid 65534")


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=50)
@given(st.binary(max_size=600))
def test_any_bytes_load_or_fail_with_one_line(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "state"
    path.write_bytes(b"rtpcluster-sessions 1 0\n" + content)
    try:
        read_state_file(path, IDLE, now=clock(0.0), consume=False)
    except StateFileError as exc:
        assert "\n" not in str(exc)


words = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\t\n\r"),
    min_size=1,
    max_size=20,
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=50)
@given(
    st.dictionaries(
        st.sampled_from(["c1", "c2"]),
        st.dictionaries(words, st.tuples(words, st.floats(0, 59, allow_nan=False)), max_size=5),
    )
)
def test_round_trip_of_any_names(
    tmp_path: Path, tables: dict[str, dict[str, tuple[str, float]]]
) -> None:
    path = tmp_path / "state"
    snapshot = {c: [(call, m, age) for call, (m, age) in b.items()] for c, b in tables.items()}
    write_state_file(path, snapshot, now=clock(0.0))
    state = read_state_file(path, IDLE, now=clock(0.0))
    expected = {
        c: {call: (m, round(age, 3)) for call, (m, age) in b.items()}
        for c, b in tables.items()
        if b
    }
    got = {
        c: {call: (m, round(age, 3)) for call, (m, age) in b.items()}
        for c, b in state.tables.items()
    }
    assert got == expected
