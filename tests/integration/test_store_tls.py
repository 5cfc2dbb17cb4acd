"""The Redis store over TLS (``rediss://``) against a real redis-server's TLS port.

Certificates come from a throw-away CA (trustme). Checked: the server's certificate is
verified against ``ca_file`` (and a server the CAs do not vouch for, or one whose
certificate names another host, is never used); a client certificate is sent when
``tls-auth-clients yes`` asks for one; a file that cannot be used is one line at open.
Nothing waits on time: each step awaits the store's own events.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
import trustme

from rtpcluster.store import StoreUnavailable, open_store
from rtpcluster.store.redis import RedisStore
from testsupport import free_port
from testsupport.redis_server import RedisServer, RedisTls, redis_server_binary

FAST_BACKOFF = (0.01, 0.05)


@dataclass(frozen=True)
class Pki:
    ca_file: Path  # the CA that issued both certificates below
    server_cert: Path
    server_key: Path
    client_pem: Path  # the client's key and certificate in one file
    other_ca_file: Path  # a CA that issued neither


@pytest.fixture
def pki() -> Iterator[Pki]:
    with tempfile.TemporaryDirectory(prefix="rtpc-tls-") as name:
        directory = Path(name)
        ca, other = trustme.CA(), trustme.CA()
        server = ca.issue_cert("localhost")  # not 127.0.0.1: see the host name test
        client = ca.issue_cert("rtpcluster-client")
        files = Pki(
            directory / "ca.pem",
            directory / "server.pem",
            directory / "server.key",
            directory / "client.pem",
            directory / "other-ca.pem",
        )
        ca.cert_pem.write_to_path(str(files.ca_file))
        other.cert_pem.write_to_path(str(files.other_ca_file))
        server.cert_chain_pems[0].write_to_path(str(files.server_cert))
        server.private_key_pem.write_to_path(str(files.server_key))
        client.private_key_and_cert_chain_pem.write_to_path(str(files.client_pem))
        yield files


def tls_server(pki: Pki, directory: Path, clients_need_certs: bool = False) -> RedisServer:
    tls = RedisTls(
        free_port(),
        pki.server_cert,
        pki.server_key,
        pki.ca_file,
        clients_need_certs=clients_need_certs,
    )
    server = RedisServer(redis_server_binary(), directory, tls=tls)
    server.start()
    return server


@pytest.fixture
def server(pki: Pki, redis_dir: Path) -> Iterator[RedisServer]:
    """A redis-server with a TLS port that takes clients without a certificate."""
    started = tls_server(pki, redis_dir)
    try:
        yield started
    finally:
        started.stop()


def store_at(server: RedisServer, host: str, query: str) -> RedisStore:
    """A Redis store for the server's TLS port, reached as ``host``."""
    assert server.tls is not None
    store = open_store(f"rediss://{host}:{server.tls.port}/0?{query}", backoff=FAST_BACKOFF)
    assert isinstance(store, RedisStore)
    return store


@pytest.fixture
def redis_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="rtpc-redis-") as name:
        yield Path(name)


async def write_and_read(store: RedisStore) -> None:
    """Up, a binding written and read back, its unbind written."""
    store.configure("c1", 60.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        await store.wait_until_up()
        store.bind("c1", "call", "m2")
        await store.flushed()
        store.bind("c1", "other", "m1")  # not read back: only the server has it
        await store.flushed()
        assert await store.lookup("c1", "other") == "m1"
        store.unbind("c1", "call")
        await store.flushed()
        nursery.cancel_scope.cancel()
    assert store.counters.writes_rejected == 0 and store.counters.reads_error == 0


async def never_up(store: RedisStore, caplog: pytest.LogCaptureFixture) -> str:
    """Refused by TLS: an outage, commands never held up; the one warning it logged."""
    store.configure("c1", 60.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        while store.counters.outages == 0:  # until the first attempt has failed
            await store.next_change()
        assert await store.lookup("c1", "call") is None  # at once: not connected
        store.bind("c1", "call", "m1")  # queued, never blocks
        assert store.pending() == 1
        nursery.cancel_scope.cancel()
    assert store.counters.store_up == 0
    warnings = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert "Traceback" not in caplog.text
    return warnings[0]


async def test_rediss_verifies_the_server_with_ca_file(pki: Pki, server: RedisServer) -> None:
    await write_and_read(store_at(server, "localhost", f"ca_file={pki.ca_file}"))
    assert server.cli("GET", "rtpcluster:c1:other") == "m1"
    assert server.cli("EXISTS", "rtpcluster:c1:call") == "0"


@pytest.mark.parametrize(
    ("host", "other_ca", "reason"),
    [
        # a server the CAs do not vouch for
        ("localhost", True, "certificate verify failed"),
        # the certificate names localhost, the URL 127.0.0.1: the host name check fails
        ("127.0.0.1", False, "certificate is not valid for '127.0.0.1'"),
    ],
)
async def test_a_server_that_fails_verification_is_not_used(
    pki: Pki,
    server: RedisServer,
    caplog: pytest.LogCaptureFixture,
    host: str,
    other_ca: bool,
    reason: str,
) -> None:
    caplog.set_level(logging.INFO)
    ca_file = pki.other_ca_file if other_ca else pki.ca_file
    warning = await never_up(store_at(server, host, f"ca_file={ca_file}"), caplog)
    assert reason in warning, warning
    assert server.cli("DBSIZE") == "0"


async def test_a_client_certificate_when_the_server_asks_for_one(
    pki: Pki, redis_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    server = tls_server(pki, redis_dir, clients_need_certs=True)
    try:
        base = f"ca_file={pki.ca_file}"
        with_cert = f"{base}&cert_file={pki.client_pem}&key_file={pki.client_pem}"
        await write_and_read(store_at(server, "localhost", with_cert))
        assert server.cli("GET", "rtpcluster:c1:other") == "m1"
        # Refused: with TLS 1.3 the server's alert comes after the client's handshake has
        # ended, so the reason logged is that alert or a reset, depending on timing.
        await never_up(store_at(server, "localhost", base), caplog)
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("ca_file=/nonexistent/ca.pem", "ca_file /nonexistent/ca.pem: No such file"),
        ("ca_file={junk}", "ca_file {junk}: "),
        ("cert_file={junk}&key_file={junk}", "cert_file {junk} / key_file {junk}: "),
    ],
)
def test_tls_files_that_cannot_be_used_are_one_line_at_open(
    tmp_path: Path, query: str, named: str
) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    url = f"rediss://:s3cret@localhost:6380/0?{query.format(junk=junk)}"
    with pytest.raises(StoreUnavailable) as caught:
        open_store(url)
    message = str(caught.value)
    assert named.format(junk=junk) in message, message
    assert "\n" not in message and "s3cret" not in message
