"""A load generator that talks to an RTPproxy control socket the way a SIP server does.

Each *slot* plays one call at a time: ``U`` (offer), ``L`` (answer), ``U`` again with both
tags (re-INVITE) and ``D``; as soon as a reply arrives the next command of that call is
sent, so ``in_flight`` slots keep that many commands outstanding.

Two framings, as in the protocol reference (section 1):

* ``udp:HOST:PORT`` / ``udp6:[HOST]:PORT``: one datagram per command with a cookie;
  resent after 0.5 s, then 1 s, ... like Kamailio/OpenSIPS do, the same cookie each time.
* ``unix:PATH``: a new stream connection per command, the command without newline, the
  reply read until the RTPproxy closes the connection (Kamailio's ``unix:`` mode).

Affinity check: every member serves RTP from its own port range, so the port in a
``U``/``L`` reply names the member that answered. The ``U`` fixes the call's owner; an
``L``/re-``U`` answered from another range (or with port ``0``: session unknown there)
and a ``D`` answered ``E50`` (no such session) count as affinity errors.

Everything runs in one thread on non-blocking sockets and a selector: per command one
``send``, one ``recv``, a dict lookup and a heap push, so that a single process can drive
several times what one RTPproxy answers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import multiprocessing as mp
import os
import selectors
import socket
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Literal

#: How long to wait after each transmission of a UDP command before resending it; after
#: the last one the command has timed out (sends at 0, 0.5 and 1.5 s, gives up at 3.5 s).
DEFAULT_WAITS: tuple[float, ...] = (0.5, 1.0, 2.0)

UNKNOWN = "?"  # owner of a call whose U got no usable reply
_DELAYED = -2  # a heap entry that sends a slot's next command (after answer_delay)


@dataclass(frozen=True, slots=True)
class MemberRange:
    """An RTPproxy's RTP port range: a reply port inside it was allocated by ``name``."""

    name: str
    lo: int
    hi: int


@dataclass(frozen=True, slots=True)
class LoadJob:
    """What one load process does; picklable."""

    target: str  # udp:127.0.0.1:PORT, udp6:[::1]:PORT or unix:PATH
    in_flight: int
    max_calls: int
    duration: float  # seconds of the measured window
    ranges: tuple[MemberRange, ...]
    tag: str  # unique per job and process: prefix of call-ids and cookies
    start_at: float = 0.0  # time.monotonic() at which to begin (same clock in all processes)
    mode: Literal["calls", "offers"] = "calls"  # "offers": only U, sessions stay live
    # calls started per second (open loop; slots are then a pool of up to in_flight
    # calls); 0: closed loop, each slot starts its next call as soon as one ends
    arrival_rate: float = 0.0
    waits: tuple[float, ...] = DEFAULT_WAITS
    drain: float = 5.0  # after the window, seconds to let started calls finish
    record_events: bool = False  # keep (send time, owner, ok, latency) of every U
    # Another front end for the L, re-U and D of each call (udp only): the U goes to
    # ``target``, the rest here, as when the SIP answer passes through another server.
    continue_target: str | None = None
    answer_delay: float = 0.0  # seconds from the U's reply to sending the L (the callee)


@dataclass(slots=True)
class LoadResult:
    """Counters of one load process (or several, after :func:`merge`)."""

    commands: int = 0  # successful replies received inside the window
    replies: int = 0  # all replies inside the window (E replies and misrouted ones too)
    window: float = 0.0  # seconds the window lasted (max over processes)
    sent: int = 0  # commands sent (first transmissions)
    retransmits: int = 0
    timeouts: int = 0
    late_replies: int = 0  # replies for a command already answered or given up
    e_replies: Counter[str] = field(default_factory=Counter)
    affinity_errors: int = 0
    calls_done: int = 0  # calls whose every command succeeded
    calls_failed: int = 0
    abandoned: int = 0  # commands still outstanding when the drain time ran out
    arrivals_missed: int = 0  # open loop: a call was due but every slot was busy
    placements: Counter[str] = field(default_factory=Counter)  # successful U per member
    failures_by_owner: Counter[str] = field(default_factory=Counter)
    latencies: array[float] = field(default_factory=lambda: array("d"))  # seconds, successes
    events: list[tuple[float, str, bool, float]] = field(default_factory=list)
    cpu: float = 0.0  # CPU seconds the load process(es) used

    @property
    def failed_commands(self) -> int:
        return sum(self.failures_by_owner.values())

    @property
    def rate(self) -> float:
        return self.commands / self.window if self.window > 0 else 0.0

    def percentile(self, q: float) -> float | None:
        """Nearest-rank percentile of the latencies in seconds (``q`` in 0..100)."""
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        rank = max(0, min(len(ordered) - 1, round(q / 100.0 * len(ordered) + 0.5) - 1))
        return ordered[rank]


def merge(results: list[LoadResult], sequential: bool = False) -> LoadResult:
    """Combine results of processes that ran side by side in one window (or one after
    the other, ``sequential``: then the windows add up)."""
    out = LoadResult()
    for r in results:
        out.commands += r.commands
        out.replies += r.replies
        out.window = out.window + r.window if sequential else max(out.window, r.window)
        out.sent += r.sent
        out.retransmits += r.retransmits
        out.timeouts += r.timeouts
        out.late_replies += r.late_replies
        out.e_replies.update(r.e_replies)
        out.affinity_errors += r.affinity_errors
        out.calls_done += r.calls_done
        out.calls_failed += r.calls_failed
        out.abandoned += r.abandoned
        out.arrivals_missed += r.arrivals_missed
        out.placements.update(r.placements)
        out.failures_by_owner.update(r.failures_by_owner)
        out.latencies.extend(r.latencies)
        out.events.extend(r.events)
        out.cpu += r.cpu
    out.events.sort()
    return out


def parse_target(target: str) -> tuple[int, str | tuple[str, int]]:
    """``udp:H:P`` / ``udp6:[H]:P`` / ``unix:PATH`` -> (address family, sockaddr)."""
    kind, _, rest = target.partition(":")
    if kind == "unix":
        return socket.AF_UNIX, rest
    host, _, port = rest.rpartition(":")
    if kind == "udp6":
        return socket.AF_INET6, (host.strip("[]"), int(port))
    if kind == "udp":
        return socket.AF_INET, (host, int(port))
    raise ValueError(f"unsupported load target {target!r}")


class _Slot:
    __slots__ = (
        "attempt",
        "buf",
        "call_id",
        "cmd_id",
        "cookie",
        "failed",
        "idx",
        "owner",
        "payload",
        "sock",
        "step",
        "t_first",
    )

    def __init__(self, idx: int) -> None:
        self.idx = idx
        self.call_id = ""
        self.cmd_id = -1  # id of the outstanding command, -1 when idle
        self.cookie = ""
        self.failed = False
        self.owner = UNKNOWN
        self.payload = b""
        self.sock: socket.socket | None = None
        self.attempt = 0
        self.buf = b""
        self.step = 0
        self.t_first = 0.0


class _Runner:
    """One load process's state machine; :meth:`run` drives it to completion."""

    def __init__(self, job: LoadJob) -> None:
        self.job = job
        self.family, self.addr = parse_target(job.target)
        self.stream = self.family == socket.AF_UNIX
        self.steps = 1 if job.mode == "offers" else 4
        self.res = LoadResult()
        self.sel = selectors.DefaultSelector()
        self.slots = [_Slot(i) for i in range(job.in_flight)]
        self.pending: dict[str, _Slot] = {}
        self.free: list[_Slot] = []  # open loop: slots without a call
        self.next_arrival = 0.0
        self.heap: list[tuple[float, int, int]] = []  # (deadline, cmd_id, slot index)
        self.next_cmd = 0
        self.calls_started = 0
        self.active = 0
        self.delayed = 0  # calls waiting for their answer_delay to pass
        self.running = True
        self.t_start = 0.0
        self.t_end = 0.0
        self.t_last_in_window = 0.0
        # one port -> member lookup table per run: cheap and exact
        self.ranges = sorted((r.lo, r.hi, r.name) for r in job.ranges)
        self.dgram: socket.socket | None = None
        self.dgram_continue: socket.socket | None = None  # continue_target's, if any
        if not self.stream:
            self.dgram = self._datagram_socket(self.family, self.addr)
            self.dgram_continue = self.dgram
            if job.continue_target is not None:
                family, addr = parse_target(job.continue_target)
                if family == socket.AF_UNIX:
                    raise ValueError("continue_target must be a udp target")
                self.dgram_continue = self._datagram_socket(family, addr)

    def _datagram_socket(self, family: int, addr: str | tuple[str, int]) -> socket.socket:
        s = socket.socket(family, socket.SOCK_DGRAM)
        with contextlib.suppress(OSError):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.connect(addr)
        s.setblocking(False)
        self.sel.register(s, selectors.EVENT_READ, None)
        return s

    # -- helpers -----------------------------------------------------------------------

    def member_of(self, port: int) -> str | None:
        for lo, hi, name in self.ranges:
            if lo <= port <= hi:
                return name
        return None

    def command(self, slot: _Slot) -> str:
        cid = slot.call_id
        step = slot.step
        if step == 0:
            return f"U {cid} 127.0.0.1 {20000 + 2 * (slot.idx % 4000)} ft{slot.idx}"
        if step == 1:
            return f"L {cid} 127.0.0.1 {28000 + 2 * (slot.idx % 2000)} ft{slot.idx} tt{slot.idx}"
        if step == 2:
            return f"U {cid} 127.0.0.1 {20000 + 2 * (slot.idx % 4000)} ft{slot.idx} tt{slot.idx}"
        return f"D {cid} ft{slot.idx} tt{slot.idx}"

    # -- sending -----------------------------------------------------------------------

    def start_call(self, slot: _Slot, now: float) -> None:
        job = self.job
        slot.cmd_id = -1
        if not self.running or self.calls_started >= job.max_calls:
            return
        if job.arrival_rate > 0.0:
            self.free.append(slot)  # the arrival timer starts the next call
            return
        self.begin_call(slot, now)

    def on_arrival(self, now: float) -> None:
        if not self.running or self.calls_started >= self.job.max_calls:
            return
        if self.free:
            self.begin_call(self.free.pop(), now)
        else:
            self.res.arrivals_missed += 1
        self.next_arrival += 1.0 / self.job.arrival_rate
        heapq.heappush(self.heap, (max(self.next_arrival, now), -1, -1))

    def begin_call(self, slot: _Slot, now: float) -> None:
        job = self.job
        self.calls_started += 1
        slot.call_id = f"{job.tag}-{self.calls_started}"
        slot.step = 0
        slot.owner = UNKNOWN
        slot.failed = False
        self.send(slot, now)

    def send(self, slot: _Slot, now: float) -> None:
        self.next_cmd += 1
        slot.cmd_id = self.next_cmd
        slot.attempt = 0
        slot.t_first = now
        self.res.sent += 1
        self.active += 1
        text = self.command(slot)
        if self.stream:
            slot.payload = text.encode()
            deadline = now + sum(self.job.waits)
            heapq.heappush(self.heap, (deadline, slot.cmd_id, slot.idx))
            self.connect(slot, now)
        else:
            slot.cookie = f"{self.job.tag}_{slot.cmd_id}"
            slot.payload = f"{slot.cookie} {text}".encode()
            self.pending[slot.cookie] = slot
            heapq.heappush(self.heap, (now + self.job.waits[0], slot.cmd_id, slot.idx))
            self.transmit(slot)

    def transmit(self, slot: _Slot) -> None:
        sock = self.dgram if slot.step == 0 else self.dgram_continue
        assert sock is not None
        # a full send buffer or a refused port (ICMP) is like a lost datagram: resend later
        with contextlib.suppress(BlockingIOError, ConnectionRefusedError):
            sock.send(slot.payload)

    def connect(self, slot: _Slot, now: float) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(self.addr)
        except BlockingIOError:  # listen backlog full: try again shortly
            s.close()
            self.res.retransmits += 1
            slot.sock = None
            heapq.heappush(self.heap, (now + 0.002, slot.cmd_id, slot.idx))
            return
        except OSError:
            s.close()
            slot.sock = None
            self.finish(slot, None, now)
            return
        try:
            s.send(slot.payload)
        except OSError:
            s.close()
            slot.sock = None
            self.finish(slot, None, now)
            return
        slot.sock = s
        slot.buf = b""
        self.sel.register(s, selectors.EVENT_READ, slot)

    def close_stream(self, slot: _Slot) -> None:
        if slot.sock is not None:
            self.sel.unregister(slot.sock)
            slot.sock.close()
            slot.sock = None

    # -- receiving ---------------------------------------------------------------------

    def on_datagrams(self, sock: socket.socket, now: float) -> None:
        recv = sock.recv
        pending = self.pending
        while True:
            try:
                data = recv(4096)
            except (BlockingIOError, ConnectionRefusedError):
                return
            now = time.monotonic()  # per datagram: a batch can hold later replies
            cookie, _, reply = data.partition(b" ")
            slot = pending.pop(cookie.decode(), None)
            if slot is None:
                self.res.late_replies += 1
                continue
            self.finish(slot, reply.decode().strip(), now)

    def on_stream(self, slot: _Slot, now: float) -> None:
        assert slot.sock is not None
        try:
            data = slot.sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            self.close_stream(slot)
            self.finish(slot, None, now)
            return
        if data:
            slot.buf += data
            return
        self.close_stream(slot)
        self.finish(slot, slot.buf.decode().strip(), now)

    def on_timer(self, slot: _Slot, now: float) -> None:
        if self.stream:
            if slot.sock is None and now < slot.t_first + sum(self.job.waits):
                self.connect(slot, now)  # retry after a full backlog
                return
            self.close_stream(slot)
            self.res.timeouts += 1
            self.finish(slot, None, now)
            return
        slot.attempt += 1
        if slot.attempt < len(self.job.waits):
            self.res.retransmits += 1
            heapq.heappush(self.heap, (now + self.job.waits[slot.attempt], slot.cmd_id, slot.idx))
            self.transmit(slot)
            return
        self.pending.pop(slot.cookie, None)
        self.res.timeouts += 1
        self.finish(slot, None, now)

    def finish(self, slot: _Slot, reply: str | None, now: float) -> None:
        """A command of ``slot`` got ``reply`` (None: no reply); check it, send the next."""
        res = self.res
        self.active -= 1
        slot.cmd_id = -1
        latency = now - slot.t_first
        if reply is not None and now <= self.t_end:
            res.replies += 1
            self.t_last_in_window = now
        step = slot.step
        ok = reply is not None
        if reply is not None and reply.startswith("E"):
            res.e_replies[reply.split()[0]] += 1
            ok = False
            if step == 3 and reply.startswith("E50"):
                res.affinity_errors += 1  # D reached a member without the call
        elif reply is not None and step < 3:
            try:
                port = int(reply.split()[0])
            except (IndexError, ValueError):
                port = 0
            member = self.member_of(port) if port else None
            if step == 0:
                if member is None:
                    ok = False
                    res.affinity_errors += port != 0
                else:
                    slot.owner = member
                    res.placements[member] += 1
            elif member is None or member != slot.owner:
                ok = False
                res.affinity_errors += 1
        elif reply is not None and reply != "0":
            ok = False
        if ok and now <= self.t_end:
            res.commands += 1
            res.latencies.append(latency)
        if step == 0 and self.job.record_events:
            res.events.append((slot.t_first, slot.owner if ok else UNKNOWN, ok, latency))
        if not ok:
            res.failures_by_owner[slot.owner] += 1
            slot.failed = True
        if step == 0 and not ok:
            res.calls_failed += 1
        elif step + 1 < self.steps:
            # after a failed answer or re-offer still delete the call
            slot.step = 3 if slot.failed else step + 1
            if step == 0 and self.job.answer_delay > 0.0:
                self.delayed += 1
                heapq.heappush(self.heap, (now + self.job.answer_delay, _DELAYED, slot.idx))
                return
            self.send(slot, now)
            return
        elif slot.failed:
            res.calls_failed += 1
        else:
            res.calls_done += 1
        self.start_call(slot, now)

    # -- main loop ---------------------------------------------------------------------

    def run(self) -> LoadResult:
        job = self.job
        cpu0 = os.times()
        delay = job.start_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        now = time.monotonic()
        self.t_start = now
        self.t_end = now + job.duration
        for slot in self.slots:
            self.start_call(slot, now)
        if job.arrival_rate > 0.0:
            self.next_arrival = now
            heapq.heappush(self.heap, (now, -1, -1))
        heap = self.heap
        slots = self.slots
        select = self.sel.select
        while True:
            now = time.monotonic()
            if self.running and (now >= self.t_end or self.calls_started >= job.max_calls):
                self.running = False
            if not self.running and self.active == 0 and self.delayed == 0:
                break
            if now >= self.t_end + job.drain:
                self.res.abandoned = self.active + self.delayed
                break
            while heap and heap[0][0] <= now:
                _, cmd_id, idx = heapq.heappop(heap)
                if idx < 0:
                    self.on_arrival(now)
                    continue
                slot = slots[idx]
                if cmd_id == _DELAYED:
                    self.delayed -= 1
                    self.send(slot, now)
                elif slot.cmd_id == cmd_id:
                    self.on_timer(slot, now)
            timeout = min(heap[0][0] - now, 0.05) if heap else 0.05
            for key, _ in select(max(timeout, 0.0)):
                now = time.monotonic()
                if key.data is None:
                    self.on_datagrams(key.fileobj, now)  # type: ignore[arg-type]
                else:
                    self.on_stream(key.data, now)
        end = self.t_end if self.calls_started < job.max_calls else self.t_last_in_window
        self.res.window = max(min(end, self.t_end) - self.t_start, 1e-9)
        for slot in self.slots:
            self.close_stream(slot)
        for sock in {self.dgram, self.dgram_continue}:
            if sock is not None:
                sock.close()
        self.sel.close()
        cpu1 = os.times()
        self.res.cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
        return self.res


def run_load(job: LoadJob) -> LoadResult:
    """Play calls as ``job`` says, in this process; returns the counters."""
    return _Runner(job).run()


# -- several processes ---------------------------------------------------------------------


def _worker(conn: Connection) -> None:
    with contextlib.suppress(EOFError, KeyboardInterrupt):
        while True:
            job = conn.recv()
            if job is None:
                break
            conn.send(run_load(job))
    conn.close()


class LoadPool:
    """Long-lived load processes (started once: no spawn cost inside a measurement)."""

    def __init__(self, processes: int) -> None:
        ctx = mp.get_context("spawn")
        self._conns: list[Connection] = []
        self._procs: list[mp.process.BaseProcess] = []
        for _ in range(processes):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child,), daemon=True)
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)

    @property
    def size(self) -> int:
        return len(self._procs)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p.pid is not None]

    def submit(self, jobs: list[LoadJob]) -> None:
        """Start ``jobs`` (at most one per process) without waiting for them."""
        if len(jobs) > self.size:
            raise ValueError("more jobs than load processes")
        self._busy = len(jobs)
        for conn, job in zip(self._conns, jobs, strict=False):
            conn.send(job)

    def collect(self, timeout: float) -> list[LoadResult]:
        out: list[LoadResult] = []
        deadline = time.monotonic() + timeout
        for conn in self._conns[: self._busy]:
            if not conn.poll(max(deadline - time.monotonic(), 0.0)):
                self.close(force=True)
                raise TimeoutError("a load process did not report in time")
            out.append(conn.recv())
        return out

    def run(self, jobs: list[LoadJob]) -> LoadResult:
        self.submit(jobs)
        bound = max(j.duration + j.drain + sum(j.waits) for j in jobs) + 30.0
        return merge(self.collect(bound))

    def close(self, force: bool = False) -> None:
        for conn in self._conns:
            if not force:
                with contextlib.suppress(OSError):
                    conn.send(None)
            conn.close()
        for proc in self._procs:
            proc.join(0.0 if force else 2.0)
            if proc.is_alive() and proc.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, 9)
                proc.join(2.0)
        self._conns.clear()
        self._procs.clear()


def split_jobs(pool_size: int, job: LoadJob) -> list[LoadJob]:
    """Spread ``job`` (slots, call count, arrival rate) over at most ``pool_size`` processes."""
    n = max(1, min(pool_size, job.in_flight))
    base, extra = divmod(job.in_flight, n)
    return [
        dataclasses.replace(
            job,
            in_flight=base + (1 if i < extra else 0),
            max_calls=max(1, job.max_calls // n),
            arrival_rate=job.arrival_rate / n,
            tag=f"{job.tag}p{i}",
        )
        for i in range(n)
    ]


__all__ = [
    "DEFAULT_WAITS",
    "UNKNOWN",
    "LoadJob",
    "LoadPool",
    "LoadResult",
    "MemberRange",
    "merge",
    "parse_target",
    "run_load",
    "split_jobs",
]
