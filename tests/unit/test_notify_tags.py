"""The disconnect-notify tag codec, destination resolution and key file (no sockets)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtpcluster.cluster.notify import resolve_destination
from rtpcluster.cluster.notify_tags import (
    MAC_HEX,
    MAX_TAG_BYTES,
    KeyFileError,
    Notification,
    issue_tag,
    load_key_file,
    relay_notify_args,
    tag_key,
    valid_suffix,
    verify_line,
)
from rtpcluster.config import ConfigError, DisconnectNotify, dump_config, parse_config

KEY = bytes(range(32))
PREFIX = "/var/run/"
NAMES = st.from_regex(r"[A-Za-z0-9._-]{1,20}", fullmatch=True).filter(
    lambda name: name not in (".", "..")
)
SUFFIXES = st.lists(NAMES, min_size=1, max_size=3).map("/".join)
# Tags as SIP servers send them, and anything else that fits on one line.
TAGS = st.binary(max_size=200).filter(lambda tag: not set(tag) & set(b"\r\n\0"))


@given(suffix=SUFFIXES, tag=TAGS)
def test_an_issued_tag_verifies_to_its_suffix_and_tag(suffix: str, tag: bytes) -> None:
    issued = issue_tag(KEY, PREFIX, suffix, tag)
    assert issued is not None
    assert verify_line(KEY, PREFIX, issued) == Notification(suffix, tag)


@given(suffix=SUFFIXES, tag=TAGS, data=st.data())
def test_any_change_to_an_issued_tag_fails(suffix: str, tag: bytes, data: st.DataObject) -> None:
    issued = issue_tag(KEY, PREFIX, suffix, tag)
    assert issued is not None
    position = data.draw(st.integers(0, len(issued)))
    change = data.draw(st.sampled_from(["replace", "insert", "delete", "truncate"]))
    if change == "replace" and position < len(issued):
        byte = data.draw(st.integers(0, 255).filter(lambda b: b != issued[position]))
        mutated = issued[:position] + bytes([byte]) + issued[position + 1 :]
    elif change == "insert":
        mutated = (
            issued[:position] + data.draw(st.binary(min_size=1, max_size=4)) + issued[position:]
        )
    elif change == "delete" and position < len(issued):
        mutated = issued[:position] + issued[position + 1 :]
    else:
        mutated = issued[:position] if position < len(issued) else issued[:-1]
    assert mutated != issued
    assert verify_line(KEY, PREFIX, mutated) is None


@given(suffix=SUFFIXES, tag=TAGS)
def test_a_tag_of_another_key_or_prefix_fails(suffix: str, tag: bytes) -> None:
    issued = issue_tag(KEY, PREFIX, suffix, tag)
    assert issued is not None
    assert verify_line(secrets.token_bytes(32), PREFIX, issued) is None
    assert verify_line(KEY, "/tmp/", issued) is None


@given(line=st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_and_never_verify(line: bytes) -> None:
    assert verify_line(KEY, PREFIX, line) is None


@given(head=st.binary(max_size=40), tail=st.binary(max_size=40))
def test_lines_shaped_like_a_tag_never_raise(head: bytes, tail: bytes) -> None:
    line = head + b" " + b"0" * MAC_HEX + b" " + tail
    assert verify_line(KEY, PREFIX, line) is None


@pytest.mark.parametrize(
    "suffix",
    ["", ".", "..", "../x", "a/../b", "/abs", "a//b", "a/", "a b", "a\nb", "x" * 108, "é.sock"],
)
def test_unsafe_suffixes_are_neither_issued_nor_accepted(suffix: str) -> None:
    assert not valid_suffix(suffix)
    assert issue_tag(KEY, PREFIX, suffix, b"t") is None
    line = b"%s %s t" % (suffix.encode(), b"0" * MAC_HEX)
    assert verify_line(KEY, PREFIX, line) is None


@pytest.mark.parametrize("suffix", ["b2bua.sock", "kamailio/notify.sock", "a.b-c_d", "..x"])
def test_plain_file_names_are_valid_suffixes(suffix: str) -> None:
    assert valid_suffix(suffix)


@pytest.mark.parametrize("tag", [b"a\nb", b"a\rb", b"a\0b", b"x" * (MAX_TAG_BYTES + 1)])
def test_tags_that_would_not_come_back_as_one_line_are_not_issued(tag: bytes) -> None:
    assert issue_tag(KEY, PREFIX, "sip.sock", tag) is None


def test_relay_notify_args_rewrite_a_socket_under_the_prefix() -> None:
    config = DisconnectNotify(inbound_address="127.0.0.1:22500", dest_socket_prefix=PREFIX)
    args = relay_notify_args(config, "/var/run/b2bua.sock", "r%2012")
    assert args is not None
    target, tag = args
    assert target == "tcp:%%CC_SELF%%:22500"
    assert " " not in tag
    assert verify_line(tag_key(config), PREFIX, unquote_to_bytes(tag)) == Notification(
        "b2bua.sock", b"r 12"
    )
    assert relay_notify_args(config, "/tmp/b2bua.sock", "r%2012") is None
    assert relay_notify_args(config, "/var/run/../etc/x", "r") is None
    assert relay_notify_args(config, "/var/run/b2bua.sock", "a%0Ab") is None


def test_resolution_follows_symlinks_and_stays_in_the_prefix(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "sub").mkdir(parents=True)
    outside = tmp_path / "outside.sock"
    (run / "escape.sock").symlink_to(outside)
    (run / "inner.sock").symlink_to(run / "sub" / "real.sock")
    (tmp_path / "alias").symlink_to(run)
    prefix = f"{tmp_path}/alias/"
    real = os.path.realpath(run)
    assert resolve_destination(prefix, "b2bua.sock") == f"{real}/b2bua.sock"
    assert resolve_destination(prefix, "inner.sock") == f"{real}/sub/real.sock"
    assert resolve_destination(prefix, "escape.sock") is None
    # a prefix that ends in a name start: only names beginning with it
    assert resolve_destination(f"{run}/sip-", "a.sock") == f"{real}/sip-a.sock"
    (run / "sip-x.sock").symlink_to(run / "other.sock")
    assert resolve_destination(f"{run}/sip-", "x.sock") is None


def test_a_missing_key_file_is_created_private_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "notify.key"
    key = load_key_file(str(path))
    assert len(key) == 32
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_key_file(str(path)) == key
    assert path.read_text().strip() == key.hex()


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("world-readable", "mode 0644 lets other users"),
        ("symlink", "is a symlink"),
        ("directory", "not a regular file"),
        ("short", "expected 64 hex digits"),
        ("not hex", "expected 64 hex digits"),
    ],
)
def test_an_unsafe_or_broken_key_file_is_refused(tmp_path: Path, setup: str, message: str) -> None:
    path = tmp_path / "notify.key"
    good = secrets.token_hex(32) + "\n"
    if setup == "world-readable":
        path.write_text(good)
        path.chmod(0o644)
    elif setup == "symlink":
        target = tmp_path / "target"
        target.write_text(good)
        target.chmod(0o600)
        path.symlink_to(target)
    elif setup == "directory":
        path.mkdir(mode=0o700)
    else:
        path.write_text("abc\n" if setup == "short" else "z" * 64 + "\n")
        path.chmod(0o600)
    with pytest.raises(KeyFileError, match=message) as caught:
        load_key_file(str(path))
    assert str(path) in str(caught.value)


def test_one_key_file_gives_the_same_key_to_every_relay_of_the_process(tmp_path: Path) -> None:
    path = str(tmp_path / "notify.key")
    first = DisconnectNotify(
        inbound_address="127.0.0.1:22500", dest_socket_prefix=PREFIX, key_file=path
    )
    second = first.model_copy(update={"inbound_address": first.inbound_address})
    assert tag_key(first) == tag_key(second) == load_key_file(path)
    plain = DisconnectNotify(inbound_address="127.0.0.1:22500", dest_socket_prefix=PREFIX)
    assert tag_key(plain) != tag_key(first)


@pytest.mark.parametrize("field", ["dest_socket_prefix", "key_file"])
def test_relative_paths_are_refused_in_config(field: str) -> None:
    values = {"inbound_address": "127.0.0.1:22500", "dest_socket_prefix": PREFIX}
    values[field] = "run/x"
    with pytest.raises(ValueError, match="must be an absolute path"):
        DisconnectNotify.model_validate(values)


def test_key_file_is_read_from_and_written_to_the_config_file() -> None:
    text = """<rtp_cluster_config><rtp_cluster><name>c1</name>
      <protocol>udp</protocol><address>127.0.0.1:22222</address>
      <disconnect_notify>
        <inbound_address>127.0.0.1:22500</inbound_address>
        <dest_socket_prefix>/var/run/</dest_socket_prefix>
        <key_file>/usr/local/etc/rtp_cluster.key</key_file>
      </disconnect_notify>
    </rtp_cluster></rtp_cluster_config>"""
    config = parse_config(text)
    notify = config.clusters[0].disconnect_notify
    assert notify is not None and notify.key_file == "/usr/local/etc/rtp_cluster.key"
    assert parse_config(dump_config(config)) == config
    with pytest.raises(ConfigError, match=r"key_file.*must be an absolute path"):
        parse_config(text.replace("/usr/local/etc/rtp_cluster.key", "rtp_cluster.key"))
