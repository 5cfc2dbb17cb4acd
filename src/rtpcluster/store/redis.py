"""The Redis/Valkey session store, through coredis (anyio, here on trio).

One writer task per service (:meth:`RedisStore.run`) owns the client. It connects,
checks the server with a PING, then sends the write queue in pipelined batches of
``SET <prefix>:<cluster>:<call-id> <member> EX <ttl>`` and ``DEL``. Once a write is
queued the writer waits ``write_delay`` (10 ms) before it takes a batch: a pipeline
costs this process about 0.2 ms of CPU through coredis whatever its size, on the thread
that serves the commands. Measured with ``python -m benchmarks.run --phases store`` (the
steady Redis side against the memory store, commands/s, on a shared 2-core machine):
without the wait 0.80 at 1 and 0.89 at 16 in flight; with 5 ms, 0.87 to 1.03 and 0.89
to 0.96 over three runs; with 10 ms, 0.97 and 0.94. The wait gathers the writes of
several calls into one pipeline, and a call that ends within it costs one ``DEL``
instead of a ``SET`` and a ``DEL``; a binding is still stored well within the 50 ms
promised (mean 8.7 ms under that load, 99.8 % within 50 ms).

When the store fails (refused, reset, no answer within ``write_timeout``) the batch in
flight goes back to the queue, the client is closed, one warning is logged, and the
writer retries with a doubling backoff; the queue keeps coalescing (latest write per
key) meanwhile, so the first batches after the outage rewrite every binding made while
it lasted. Commands are never held up: the queue drops its oldest writes when full.

Lookups wait under a short deadline (50 ms by default) while a reader task beside the
writer sends every key asked meanwhile in one ``MGET`` (store/lookups.py: one read costs
the same CPU whatever it carries). A deadline passed, or a read that failed, makes the
writer check the server at once (PING), so a hung server is found out and its
connection closed rather than left collecting abandoned requests.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable
from typing import Any

import coredis
import trio
from coredis.exceptions import ResponseError
from coredis.patterns.pipeline import Pipeline
from coredis.response._callbacks import NoopCallback
from coredis.retry import NoRetryPolicy

from rtpcluster.store.base import SessionStore, StoreCounters
from rtpcluster.store.lookups import Lookups, answer, fail
from rtpcluster.store.queue import Batch, WriteQueue
from rtpcluster.store.url import StoreUrl

log = logging.getLogger(__name__)


class _WithoutTraceback(logging.Filter):
    """coredis logs a lost connection at INFO with ``exc_info`` (a traceback, or a bare
    "NoneType: None" line) and an unexpected handshake failure with a traceback; the
    store logs each outage itself in one line, so coredis' records lose the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info = None
        record.exc_text = None
        record.stack_info = None
        return True


def _quiet_coredis() -> None:
    coredis_log = logging.getLogger("coredis")  # its only logger (coredis._utils)
    if not any(isinstance(f, _WithoutTraceback) for f in coredis_log.filters):
        coredis_log.addFilter(_WithoutTraceback())
    if coredis_log.level == logging.NOTSET:  # not chosen by the operator: ours say it
        coredis_log.setLevel(logging.WARNING)


MAX_MEMBER_NAME = 256  # a longer value is not a member name we wrote
BACKOFF_MIN = 0.1  # seconds before the first reconnection attempt
BACKOFF_MAX = 5.0  # ... doubling up to this
_RAW: NoopCallback[Any] = NoopCallback()  # the reply as it is: OK, or the number deleted


class RedisStore(SessionStore):
    remote = True

    def __init__(
        self,
        url: StoreUrl,
        *,
        read_deadline: float = 0.05,
        write_timeout: float = 1.0,
        write_delay: float = 0.01,
        connect_timeout: float = 1.0,
        health_interval: float = 5.0,
        max_pending: int = 100_000,
        max_batch: int = 512,
        max_lookups: int = 1024,
        max_read_keys: int = 256,
        backoff: tuple[float, float] = (BACKOFF_MIN, BACKOFF_MAX),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``read_deadline``: a lookup's budget; ``write_timeout``: a batch's or PING's;
        ``write_delay``: from the first write queued to taking the batch;
        ``health_interval``: PING after this long without writes; ``max_pending``: the
        queue bound; ``max_lookups``: lookups waiting at once (more are answered None);
        ``max_read_keys``: keys in one ``MGET``."""
        if url.is_memory:
            raise ValueError("RedisStore needs a redis://, rediss:// or unix:// URL")
        _quiet_coredis()
        self.url = url
        self._tls = tls_context(url) if url.scheme == "rediss" else None
        self.read_deadline = read_deadline
        self.write_timeout = write_timeout
        self.write_delay = write_delay
        self.connect_timeout = connect_timeout
        self.health_interval = health_interval
        self.max_batch = max_batch
        self.max_lookups = max_lookups
        self.backoff = backoff
        self.counters = StoreCounters()
        self._queue = WriteQueue(
            self.counters,
            prefix=url.prefix,
            max_pending=max_pending,
            clock=clock,
            on_ready=self._wake_writer,
        )
        self._client: coredis.Redis[bytes] | None = None  # set while connected and checked
        self._wake: trio.Event | None = None  # set to wake the idle writer
        self._check_due = False  # a lookup missed its deadline: PING now
        self._changed = trio.Event()  # set (and replaced) on every batch and state change
        self._warned = False  # this outage was logged
        self._refusing = False  # the last batch had writes refused (logged once)
        self._lookups = 0
        self._reads = Lookups(max_read_keys)

    # --- the hot path: plain, non-blocking calls ---------------------------------------

    def configure(self, cluster: str, idle_timeout: float) -> None:
        self._queue.configure(cluster, idle_timeout)

    def forget(self, cluster: str) -> None:
        self._queue.forget(cluster)

    def bind(self, cluster: str, call_id: str, member: str) -> None:
        self._queue.bind(cluster, call_id, member)

    def refresh(self, cluster: str, call_id: str, member: str) -> None:
        self._queue.refresh(cluster, call_id, member)

    def unbind(self, cluster: str, call_id: str) -> None:
        self._queue.unbind(cluster, call_id)

    def _wake_writer(self) -> None:
        if self._wake is not None:
            self._wake.set()

    # --- reads ---------------------------------------------------------------------------

    async def lookup(self, cluster: str, call_id: str) -> str | None:
        counters = self.counters
        key = self._queue.key(cluster, call_id)
        queued, member = self._queue.queued_member(key)
        if queued:  # our own write is on its way: it is the newest state of the key
            if member is None:
                counters.reads_miss += 1
            else:
                counters.reads_hit += 1
            return member
        # Bounded twice: callers waiting, and keys not yet sent (those of callers whose
        # deadline passed stay until the reader takes them; a hung server is dropped
        # within ``write_timeout``, which fails them all).
        if self._client is None or max(self._lookups, len(self._reads)) >= self.max_lookups:
            counters.reads_error += 1
            return None
        self._lookups += 1
        try:
            with trio.move_on_after(self.read_deadline):
                waiting = self._reads.ask(key)
                await waiting.done.wait()
                if waiting.failed:
                    counters.reads_error += 1
                    return None
                return self._member_of(waiting.value)
        finally:
            self._lookups -= 1
        counters.reads_error += 1  # the deadline passed
        self._check_due = True
        self._wake_writer()
        return None

    def _member_of(self, value: bytes | None) -> str | None:
        counters = self.counters
        if value is None:
            counters.reads_miss += 1
            return None
        try:
            member = value.decode()
        except UnicodeDecodeError:
            member = ""
        if not member or len(member) > MAX_MEMBER_NAME or not member.isprintable():
            counters.reads_error += 1
            return None
        counters.reads_hit += 1
        return member

    # --- the writer ----------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write the queue until cancelled; a store that is down never ends this task."""
        task_status.started()  # at once: the service must not wait for the store
        delay = self.backoff[0]
        while True:
            try:
                async with self._new_client() as client:
                    await self._serve(client)
            except* Exception as group:
                self._went_down(group)
            if self.counters.store_up:  # it came up before failing: start the backoff over
                delay = self.backoff[0]
            self.counters.store_up = 0
            self._signal()
            await trio.sleep(delay)
            delay = min(delay * 2, self.backoff[1])

    def _new_client(self) -> coredis.Redis[bytes]:
        url = self.url
        options: dict[str, Any] = {
            "db": url.db,
            "username": url.username,
            "password": url.password,
            "stream_timeout": self.write_timeout,
            "connect_timeout": self.connect_timeout,
            "max_connections": 4,
            "retry_policy": NoRetryPolicy(),  # the writer retries itself; lookups must not
            "client_name": "rtpcluster",
        }
        if url.scheme == "unix":
            return coredis.Redis(host=None, port=None, unix_socket_path=url.path, **options)
        if self._tls is not None:
            options["ssl_context"] = self._tls
        return coredis.Redis(host=url.host, port=url.port, ssl=self._tls is not None, **options)

    async def _serve(self, client: coredis.Redis[bytes]) -> None:
        with trio.fail_after(self.connect_timeout):
            await client.ping()
        self._came_up(client)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read, client)
                await self._write_forever(client)
        finally:
            self._client = None
            self._reads.fail_all()

    async def _read(self, client: coredis.Redis[bytes]) -> None:
        """Send the keys waiting in one ``MGET`` at a time, until cancelled."""
        while True:
            batch = await self._reads.take()
            try:
                with trio.fail_after(self.write_timeout):
                    values = await client.create_request(b"MGET", *batch, callback=_RAW)
                if not isinstance(values, list) or len(values) != len(batch):
                    raise ResponseError(f"MGET of {len(batch)} keys answered {values!r:.80}")
            except Exception as exc:  # coredis' errors, a client closed under us, no answer
                log.debug("session store read of %d keys failed: %s", len(batch), _one_line(exc))
                fail(batch)
                self._check_due = True
                self._wake_writer()
                continue
            answer(batch, values)

    async def _write_forever(self, client: coredis.Redis[bytes]) -> None:
        while True:
            await self._wait_for_work()
            if self._check_due:
                self._check_due = False
                with trio.fail_after(self.write_timeout):
                    await client.ping()
            if len(self._queue):
                if len(self._queue) < self.max_batch and self.write_delay > 0:
                    await trio.sleep(self.write_delay)  # let a batch gather
                await self._write(client, self._queue.take(self.max_batch))

    async def _wait_for_work(self) -> None:
        if len(self._queue) or self._check_due:
            return
        self._wake = trio.Event()
        try:
            with trio.move_on_after(self.health_interval) as idle:
                await self._wake.wait()
        finally:
            self._wake = None
        if idle.cancelled_caught:
            self._check_due = True  # nothing written for a while: is it still there?

    async def _write(self, client: coredis.Redis[bytes], batch: Batch) -> None:
        try:
            with trio.fail_after(self.write_timeout):
                async with client.pipeline(
                    transaction=False, raise_on_error=False, timeout=self.write_timeout
                ) as pipe:
                    for key, (member, ttl, _queued_at, _bind) in batch:
                        _stack_write(pipe, key, member, ttl)
        except BaseException:
            self._queue.failed()
            raise
        errors = [result for result in pipe.results or () if isinstance(result, BaseException)]
        refused = [error for error in errors if isinstance(error, ResponseError)]
        if len(refused) < len(errors):  # lost on the way, not refused by the server
            self._queue.failed()
            raise next(error for error in errors if not isinstance(error, ResponseError))
        if refused and not self._refusing:  # once until a batch is taken whole again
            log.warning(
                "session store %s refuses writes (%s); they are counted as rejected",
                self.url,
                _one_line(refused[0]),
            )
        elif self._refusing and not refused:
            log.warning("session store %s accepts writes again", self.url)
        self._refusing = bool(refused)
        self._queue.done(rejected=len(refused))
        self._signal()

    # --- state ---------------------------------------------------------------------------

    def _came_up(self, client: coredis.Redis[bytes]) -> None:
        self._client = client
        self.counters.store_up = 1
        if self._warned:
            log.warning(
                "session store %s is reachable again; writing %d queued changes",
                self.url,
                len(self._queue),
            )
            self._warned = False
        else:
            log.info("session store %s connected", self.url)
        self._signal()

    def _went_down(self, error: BaseException) -> None:
        self._client = None
        if self.counters.store_up or not self._warned:
            self.counters.outages += 1
            self._warned = True
            log.warning(
                "session store %s is unreachable (%s); commands go on with the local table "
                "and broadcast lookups, changes are queued (at most %d) and retried",
                self.url,
                _one_line(error),
                self._queue.max_pending,
            )

    def _signal(self) -> None:
        changed, self._changed = self._changed, trio.Event()
        changed.set()

    async def flushed(self) -> None:
        while len(self._queue) or self._queue.in_flight:
            await self._changed.wait()

    async def next_change(self) -> None:
        """Wait for the next batch written or change of state (up, down, an outage)."""
        await self._changed.wait()

    async def wait_until_up(self, up: bool = True) -> None:
        while bool(self.counters.store_up) != up:
            await self._changed.wait()

    def pending(self) -> int:
        return len(self._queue) + self._queue.in_flight

    def describe(self) -> str:
        counters = self.counters
        state = "up" if counters.store_up else "down"
        return (
            f"{self.url}: {state}, {len(self._queue)} queued, "
            f"{counters.writes_dropped} dropped, {counters.outages} outages"
        )


class TlsFilesError(OSError):
    """A ``ca_file``, ``cert_file`` or ``key_file`` that cannot be used; one line."""


def tls_context(url: StoreUrl) -> ssl.SSLContext:
    """The TLS settings of a ``rediss://`` store, made once (every connection uses them).

    The server's certificate and host name are verified (against ``ca_file``, or the
    system's CAs); ``cert_file``/``key_file`` are the client's certificate. A file that
    cannot be read or parsed raises :class:`TlsFilesError` naming it.
    """
    try:
        context = ssl.create_default_context(cafile=url.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise TlsFilesError(f"session store {url}: ca_file {url.ca_file}: {_reason(exc)}") from None
    if url.cert_file is not None:
        try:
            context.load_cert_chain(url.cert_file, url.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise TlsFilesError(
                f"session store {url}: cert_file {url.cert_file} / key_file {url.key_file}:"
                f" {_reason(exc)}"
            ) from None
    return context


def _reason(exc: OSError | ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    return exc.strerror or str(exc)


def _stack_write(pipe: Pipeline[bytes], key: str, member: str | None, ttl: int) -> None:
    """``SET key member EX ttl`` or ``DEL key`` on the pipeline, as raw commands.

    The typed ``pipe.set(key, member, ex=ttl)`` checks its keyword arguments at run time
    on every call: 17 us of CPU per write against 5 us this way (measured with 50000
    writes in batches of 500 on a local redis-server; benchmarks/session_store.py). The
    typed methods end in this same ``create_request`` call; the wire commands are equal.
    """
    if member is None:
        pipe.create_request(b"DEL", key, callback=_RAW)
    else:
        pipe.create_request(b"SET", key, member, b"EX", ttl, callback=_RAW)


def _one_line(error: BaseException) -> str:
    """The first leaf of an error (group) as ``Type: message`` on one line, bounded.

    When the leaf was raised from another error, the deepest cause is named too: coredis
    reports a failed TLS handshake as "Unable to establish a connection", and what the
    operator needs is the reason under it ("certificate verify failed: ...").
    """
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    if isinstance(error, trio.TooSlowError):
        return "no answer in time"
    text = _described(error)
    cause, depth = error, 0
    while depth < 5 and (cause.__cause__ or cause.__context__) is not None:
        cause = cause.__cause__ or cause.__context__  # type: ignore[assignment]
        depth += 1
    if cause is not error and not isinstance(cause, trio.TooSlowError):
        text += f" ({_described(cause)})"
    return text[:300]


def _described(error: BaseException) -> str:
    if isinstance(error, ssl.SSLCertVerificationError) and error.verify_message:
        text = f"certificate verify failed: {error.verify_message}"
    else:
        text = " ".join(str(error).split()) or type(error).__name__
    if not text.startswith(type(error).__name__):
        text = f"{type(error).__name__}: {text}"
    return text
