"""Session store URLs: ``memory``, ``redis://``, ``rediss://`` and ``unix://``.

Pure parsing, no I/O. Accepted forms::

    memory
    redis://[[USER]:PASSWORD@]HOST[:PORT][/DB][?prefix=NAME]
    rediss://[[USER]:PASSWORD@]HOST[:PORT][/DB][?prefix=NAME]
             [&ca_file=/PEM][&cert_file=/PEM&key_file=/PEM]     (TLS)
    unix://[[USER]:PASSWORD@]/ABSOLUTE/PATH/redis.sock[?db=N][&prefix=NAME]

Every problem is one line naming the URL (password masked) and what is wrong, so the
config reader and the ``--session-store`` flag can show it as it is.

``rediss://`` verifies the server's certificate and host name, against the system's CAs
or those in ``ca_file``; ``cert_file`` and ``key_file`` give a client certificate (Redis'
``tls-auth-clients yes``). Their paths must be absolute (the daemon runs from ``/``);
whether the files can be read is checked when the store is opened (``serve --check``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl, quote, unquote, urlsplit

Scheme = Literal["memory", "redis", "rediss", "unix"]

DEFAULT_PORT = 6379
DEFAULT_PREFIX = "rtpcluster"
MAX_DB = 1_000_000  # Redis' `databases` is an int; 16 by default, far below this
MAX_URL = 2048
MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes with the terminating NUL
_PREFIX = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_TLS_FILES = ("ca_file", "cert_file", "key_file")
_QUERY_KEYS = {
    "redis": {"prefix"},
    "rediss": {"prefix", *_TLS_FILES},
    "unix": {"db", "prefix"},
}


class StoreUrlError(ValueError):
    """A session store URL that cannot be used; ``str(err)`` is one line."""


Fail = Callable[[str], StoreUrlError]


@dataclass(frozen=True, slots=True)
class StoreUrl:
    """A parsed session store URL. ``str()`` gives it back with the password masked."""

    scheme: Scheme
    host: str | None = None
    port: int | None = None
    path: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None
    prefix: str = DEFAULT_PREFIX
    ca_file: str | None = None  # rediss: CAs to verify the server with (else the system's)
    cert_file: str | None = None  # rediss: a client certificate ...
    key_file: str | None = None  # ... and its key

    @property
    def is_memory(self) -> bool:
        return self.scheme == "memory"

    def __str__(self) -> str:
        return self.render(mask_password=True)

    def render(self, mask_password: bool = False) -> str:
        """The URL in its canonical form; ``parse_store_url`` reads it back equal."""
        if self.scheme == "memory":
            return "memory"
        userinfo = ""
        if self.username is not None or self.password is not None:
            userinfo = quote(self.username or "", safe="")
            if self.password is not None:
                shown = "***" if mask_password else quote(self.password, safe="")
                userinfo += ":" + shown
            userinfo += "@"
        query: list[str] = []
        if self.scheme == "unix":
            query.append(f"db={self.db}")
            where = quote(self.path or "", safe="/")
        else:
            host = self.host or ""
            where = f"[{host}]" if ":" in host else host
            where += f":{self.port}/{self.db}"
        if self.prefix != DEFAULT_PREFIX:
            query.append(f"prefix={self.prefix}")
        for name in _TLS_FILES:
            path = getattr(self, name)
            if path is not None:
                query.append(f"{name}={quote(path, safe='/')}")
        tail = "?" + "&".join(query) if query else ""
        return f"{self.scheme}://{userinfo}{where}{tail}"


def parse_store_url(text: str) -> StoreUrl:
    """Parse ``text``; raises :class:`StoreUrlError` with a one-line message."""
    if not isinstance(text, str):
        raise StoreUrlError(f"session store URL must be text, got {type(text).__name__}")
    given = text.strip()
    if not given:
        raise StoreUrlError("session store URL is empty (use memory, redis://, unix://)")
    if len(given) > MAX_URL:
        raise StoreUrlError(f"session store URL is longer than {MAX_URL} characters")
    if given.lower() == "memory":
        return StoreUrl("memory")
    shown = _masked(given)
    if any(char.isspace() or not char.isprintable() for char in given):
        raise StoreUrlError(f"session store URL {shown!r}: contains spaces or control characters")

    def fail(reason: str) -> StoreUrlError:
        return StoreUrlError(f"session store URL {shown!r}: {reason}")

    scheme, sep, _ = given.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in _QUERY_KEYS:
        raise fail("expected memory, redis://HOST:PORT/DB, rediss://... or unix:///PATH?db=N")
    try:
        parts = urlsplit(given)
    except ValueError as exc:  # "Invalid IPv6 URL": names no part of the URL
        raise fail(f"malformed: {exc}") from None
    try:
        port = parts.port
    except ValueError:  # its message would quote the text, maybe part of a password
        raise fail("port must be a number 1 to 65535") from None
    if parts.fragment:
        raise fail("a fragment (#...) is not allowed")
    query = _query(parts.query, _QUERY_KEYS[scheme], fail)
    prefix = query.get("prefix", DEFAULT_PREFIX)
    if not _PREFIX.fullmatch(prefix):
        raise fail(f"prefix must be 1 to 64 of A-Z a-z 0-9 _ . -, got {prefix!r}")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None

    if scheme == "unix":
        host_part = parts.netloc.rpartition("@")[2]
        if host_part:
            raise fail(f"a unix socket URL has no host, got {host_part!r} (use unix:///path)")
        if port is not None:
            raise fail("a unix socket URL has no port")
        path = unquote(parts.path)
        if not path.startswith("/"):
            raise fail("the socket path must be absolute (unix:///path/redis.sock)")
        if len(path.encode()) > MAX_SOCKET_PATH:
            raise fail(f"the socket path is longer than {MAX_SOCKET_PATH} bytes")
        db = _db(query.get("db", "0"), fail)
        return StoreUrl(
            "unix", path=path, db=db, username=username, password=password, prefix=prefix
        )

    host = parts.hostname
    if not host:
        raise fail("missing host (redis://HOST:PORT/DB)")
    if port == 0:
        raise fail("port must be 1 to 65535, got 0")
    path = parts.path
    db = 0 if path in ("", "/") else _db(path[1:], fail)
    tls = {name: query[name] for name in _TLS_FILES if name in query}
    for name, file in tls.items():
        if not file.startswith("/") or "\0" in file:
            raise fail(f"{name} must be an absolute path, got {file!r}")
    if ("cert_file" in tls) != ("key_file" in tls):
        raise fail("cert_file and key_file go together (a client certificate and its key)")
    return StoreUrl(
        "rediss" if scheme == "rediss" else "redis",
        host=host,
        port=DEFAULT_PORT if port is None else port,
        db=db,
        username=username,
        password=password,
        prefix=prefix,
        **tls,
    )


def _query(text: str, allowed: set[str], fail: Fail) -> dict[str, str]:
    values: dict[str, str] = {}
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text))
    except ValueError:
        raise fail(f"malformed query {text!r}") from None
    for key, value in pairs:
        if key not in allowed:
            known = ", ".join(sorted(allowed))
            raise fail(f"unknown parameter {key!r} (known: {known})")
        if key in values:
            raise fail(f"parameter {key!r} given twice")
        values[key] = value
    return values


def _db(text: str, fail: Fail) -> int:
    if not text.isascii() or not text.isdigit() or int(text) >= MAX_DB:
        raise fail(f"database must be a number 0 to {MAX_DB - 1}, got {text!r}")
    return int(text)


def _masked(text: str) -> str:
    """``text`` with the password of its userinfo replaced by ``***``.

    Everything up to the last ``@`` counts as userinfo, so even a malformed URL (a ``/``
    in an unencoded password) never shows its password in an error.
    """
    scheme, sep, rest = text.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return text
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
