"""Session store URLs: the accepted forms, one-line errors, and no password in any message."""

from __future__ import annotations

import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtpcluster.store import StoreUnavailable, open_store
from rtpcluster.store.memory import MemoryStore
from rtpcluster.store.url import StoreUrl, StoreUrlError, parse_store_url


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("memory", StoreUrl("memory")),
        (" Memory ", StoreUrl("memory")),
        ("redis://localhost", StoreUrl("redis", host="localhost", port=6379, db=0)),
        ("redis://127.0.0.1:6380/3", StoreUrl("redis", host="127.0.0.1", port=6380, db=3)),
        ("redis://[::1]:7000/", StoreUrl("redis", host="::1", port=7000, db=0)),
        (
            "rediss://user:p%40ss@cache.example:6390/1?prefix=fleet-a",
            StoreUrl(
                "rediss",
                host="cache.example",
                port=6390,
                db=1,
                username="user",
                password="p@ss",
                prefix="fleet-a",
            ),
        ),
        ("unix:///run/redis/redis.sock", StoreUrl("unix", path="/run/redis/redis.sock")),
        ("unix:///run/r.sock?db=2", StoreUrl("unix", path="/run/r.sock", db=2)),
        ("unix://:secret@/run/r.sock", StoreUrl("unix", path="/run/r.sock", password="secret")),
        (
            "rediss://cache.example?ca_file=/etc/ssl/fleet%20ca.pem",
            StoreUrl("rediss", host="cache.example", port=6379, ca_file="/etc/ssl/fleet ca.pem"),
        ),
        (
            "rediss://h:1/0?cert_file=/c.pem&key_file=/k.pem&prefix=p",
            StoreUrl("rediss", host="h", port=1, prefix="p", cert_file="/c.pem", key_file="/k.pem"),
        ),
    ],
)
def test_accepted(text: str, expected: StoreUrl) -> None:
    assert parse_store_url(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "is empty"),
        ("http://x", "expected memory, redis://"),
        ("redis", "expected memory, redis://"),
        ("redis://", "missing host"),
        ("redis://h:0", "port must be"),
        ("redis://h:99999", "port must be a number 1 to 65535"),
        ("redis://h:12a", "port must be a number 1 to 65535"),
        ("redis://h/abc", "database must be a number"),
        ("redis://h/1/2", "database must be a number"),
        ("redis://h?db=2", "unknown parameter 'db'"),
        ("redis://h?timeout=1", "unknown parameter 'timeout'"),
        ("redis://h#frag", "fragment"),
        ("redis://h?prefix=", "prefix must be"),
        ("redis://h?prefix=a:b", "prefix must be"),
        ("redis://h/0\n", None),  # trailing white space is stripped: accepted
        ("redis://h/0 x", "spaces or control characters"),
        ("unix://host/x.sock", "has no host"),
        ("unix://relative.sock", "has no host"),
        ("unix:///x.sock?db=-1", "database must be a number"),
        ("unix:///x.sock?db=1&db=2", "given twice"),
        ("unix:///" + "x" * 200, "longer than 107 bytes"),
        ("redis://h/" + "1" * 3000, "longer than 2048"),
        ("redis://[::1/0", "malformed"),
        ("redis://h?ca_file=/ca.pem", "unknown parameter 'ca_file'"),  # TLS files: rediss
        ("unix:///r.sock?cert_file=/c.pem", "unknown parameter 'cert_file'"),
        ("rediss://h?ca_file=ca.pem", "ca_file must be an absolute path"),
        ("rediss://h?ca_file=", "ca_file must be an absolute path"),
        ("rediss://h?cert_file=/c.pem", "cert_file and key_file go together"),
        ("rediss://h?key_file=/k.pem", "cert_file and key_file go together"),
    ],
)
def test_refused_with_one_line(text: str, reason: str | None) -> None:
    if reason is None:
        parse_store_url(text)
        return
    with pytest.raises(StoreUrlError) as caught:
        parse_store_url(text)
    message = str(caught.value)
    assert reason in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "text",
    [
        "redis://:hunter2@h:12a/0",
        "redis://user:hunter2@h/zz",
        "redis://:se/hunter2@h/0",  # unencoded '/' in the password
        "rediss://u:hunter2@h?nope=1",
        "unix://:hunter2@relative",
    ],
)
def test_password_never_in_an_error(text: str) -> None:
    with pytest.raises(StoreUrlError) as caught:
        parse_store_url(text)
    assert "hunter2" not in str(caught.value)
    assert "***" in str(caught.value)


def test_str_masks_the_password_render_keeps_it() -> None:
    url = parse_store_url("redis://u:hunter2@h:1/2")
    assert str(url) == "redis://u:***@h:1/2"
    assert url.render() == "redis://u:hunter2@h:1/2"


urls = st.one_of(
    st.just(StoreUrl("memory")),
    st.builds(
        StoreUrl,
        scheme=st.sampled_from(["redis", "rediss"]),
        host=st.one_of(
            st.sampled_from(["localhost", "::1", "10.0.0.7"]),
            st.from_regex(r"[a-z]{1,10}\.example", fullmatch=True),
        ),
        port=st.integers(1, 65535),
        db=st.integers(0, 999_999),
        username=st.none() | st.text(min_size=1, max_size=8),
        password=st.none() | st.text(max_size=12),
        prefix=st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True),
    ),
    st.builds(
        StoreUrl,
        scheme=st.just("rediss"),
        host=st.just("cache.example"),
        port=st.integers(1, 65535),
        ca_file=st.none() | st.from_regex(r"/[a-z0-9_./ %:@?#&=+-]{1,60}", fullmatch=True),
    ),
    st.builds(
        StoreUrl,
        scheme=st.just("rediss"),
        host=st.just("cache.example"),
        port=st.integers(1, 65535),
        cert_file=st.from_regex(r"/[a-z0-9_./ %&=+-]{1,60}", fullmatch=True),
        key_file=st.from_regex(r"/[a-z0-9_./ %&=+-]{1,60}", fullmatch=True),
    ),
    st.builds(
        StoreUrl,
        scheme=st.just("unix"),
        path=st.from_regex(r"/[a-z0-9_./ %:@?#-]{1,60}", fullmatch=True),
        db=st.integers(0, 999_999),
        password=st.none() | st.text(max_size=12),
        prefix=st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True),
    ),
)


@given(urls)
def test_render_reads_back_equal(url: StoreUrl) -> None:
    assert parse_store_url(url.render()) == url


@given(st.text(max_size=300))
def test_any_text_is_a_url_or_one_line_error(text: str) -> None:
    try:
        parse_store_url(text)
    except StoreUrlError as exc:
        assert "\n" not in str(exc)


def test_open_store() -> None:
    assert isinstance(open_store("memory"), MemoryStore)
    store = open_store("unix:///run/r.sock?db=1", read_deadline=0.01)
    assert store.remote
    assert store.describe().startswith("unix:///run/r.sock?db=1: down")
    with pytest.raises(StoreUrlError):
        open_store("nope://")


def test_redis_store_without_coredis_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "coredis", None)  # import coredis -> ImportError
    monkeypatch.delitem(sys.modules, "rtpcluster.store.redis", raising=False)
    with pytest.raises(StoreUnavailable) as caught:
        open_store("redis://:hunter2@h/0")
    message = str(caught.value)
    assert "pip install 'rtpcluster[redis]'" in message
    assert "hunter2" not in message and "\n" not in message
    assert isinstance(open_store("memory"), MemoryStore)  # memory needs nothing
