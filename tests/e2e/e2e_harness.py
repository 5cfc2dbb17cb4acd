"""Kamailio, sipp and the rig of the end-to-end tests, and what they measure.

Everything here runs real programs: RTPproxies (rtp-io, one subprocess each) and
``rtpcluster serve`` from :mod:`testsupport`, Kamailio and sipp from here. Every process
is started by this code, remembered by PID and stopped by PID. All network traffic
stays on 127.0.0.1 or on unix sockets inside the test's temporary directory. Kamailio's
config and the sipp scenarios are files in ``data/``, with ``@name@`` markers that
:func:`fill` replaces.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import secrets
import socket
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from testsupport import (
    MemberEntry,
    RtpclusterProcess,
    RtpProxy,
    cluster_xml,
    free_port,
    free_port_block,
    stop_process,
    wait_until,
)
from testsupport.programs import find_program, missing

DATA = Path(__file__).with_name("data")
_MARKER = re.compile(r"@([a-z_]+)@")

LOOPBACK = "127.0.0.1"

# Where Debian's sip-tester package puts the sample RTP streams; overridable.
PCAP_CANDIDATES = (
    os.environ.get("RTPCLUSTER_E2E_PCAP", ""),
    "/usr/share/sip-tester/g711a.pcap",
    "/usr/share/sipp/pcap/g711a.pcap",
    "/usr/local/share/sipp/pcap/g711a.pcap",
)


# --------------------------------------------------------------------------- tools


def find_tool(name: str) -> str | None:
    """Path of an external program.

    RTPCLUSTER_E2E_<NAME> (e.g. RTPCLUSTER_E2E_KAMAILIO) names it explicitly;
    otherwise PATH plus the sbin directories Debian installs Kamailio into.
    """
    sbin = ("/usr/sbin", "/usr/local/sbin", "/sbin")
    return find_program(name, override=f"RTPCLUSTER_E2E_{name.upper()}", dirs=sbin)


def find_pcap() -> Path | None:
    for candidate in PCAP_CANDIDATES:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def pcap_packet_count(path: Path) -> tuple[int, float]:
    """Number of packets and duration in seconds of a classic pcap file."""
    data = path.read_bytes()
    magic = int.from_bytes(data[:4], "little")
    order: Literal["little", "big"] = "little" if magic in (0xA1B2C3D4, 0xA1B23C4D) else "big"
    scale = 1e-9 if magic in (0xA1B23C4D, 0x4D3CB2A1) else 1e-6
    offset, count, first, last = 24, 0, 0.0, 0.0
    while offset + 16 <= len(data):
        sec = int.from_bytes(data[offset : offset + 4], order)
        frac = int.from_bytes(data[offset + 4 : offset + 8], order)
        incl = int.from_bytes(data[offset + 8 : offset + 12], order)
        stamp = sec + frac * scale
        if count == 0:
            first = stamp
        last = stamp
        count += 1
        offset += 16 + incl
    return count, last - first


@dataclass(frozen=True)
class Tools:
    kamailio: str | None  # None for a rig without Kamailio (the B2BUA's)
    sipp: str
    pcap: Path
    pcap_packets: int
    pcap_seconds: float

    @property
    def talk_ms(self) -> int:
        """How long a call with media stays up: the pcap's length and half a second."""
        return int(self.pcap_seconds * 1000) + 500


def find_tools(*, kamailio: bool) -> tuple[Tools | None, list[str]]:
    """The programs and files a rig needs, or None and what is missing."""
    absent: list[str] = []
    kamailio_path = find_tool("kamailio") if kamailio else None
    sipp = find_tool("sipp")
    pcap = find_pcap()
    if kamailio and kamailio_path is None:
        absent.append("kamailio (Debian package kamailio)")
    elif kamailio:
        try:
            kamailio_modules_dir()
        except RuntimeError:
            absent.append("Kamailio's rtpproxy module (rtpproxy.so)")
    if sipp is None:
        absent.append("sipp (Debian package sip-tester)")
    if pcap is None:
        absent.append("g711a.pcap from sipp (Debian package sip-tester; or RTPCLUSTER_E2E_PCAP)")
    try:
        import rtp.io  # noqa: F401
    except ImportError:
        absent.append("the rtp-io wheel (pip install rtp-io)")
    if absent or sipp is None or pcap is None:
        return None, absent
    packets, seconds = pcap_packet_count(pcap)
    return Tools(kamailio_path, sipp, pcap, packets, seconds), []


def required_tools(what: str, *, kamailio: bool, more: Sequence[str | None] = ()) -> Tools:
    """:func:`find_tools`, or skip the test saying what is missing (fail in CI).

    ``more``: further reasons the rig cannot run here (None: no reason).
    """
    found, absent = find_tools(kamailio=kamailio)
    absent += [reason for reason in more if reason is not None]
    if found is None or absent:
        message = f"{what} tools missing: " + "; ".join(absent)
        missing(message + " (run .ci/install-e2e-deps as root)", "RTPCLUSTER_E2E_REQUIRED")
    return found


# --------------------------------------------------------------------------- ports


def env_port(name: str) -> int:
    """Port from environment variable ``name``, or a free one picked now."""
    value = os.environ.get(name)
    return int(value) if value else free_port()


# sipp's -mp: its media sockets take that even port and the ones after it (RTP and RTCP,
# and with -rtp_echo the video pair); a free block of 4 leaves room for all of them.
SIPP_MEDIA_PORTS = 4


def env_media_port(name: str) -> int:
    """An even first port of SIPP_MEDIA_PORTS free ones, from ``name`` or picked now."""
    value = os.environ.get(name)
    return int(value) & ~1 if value else free_port_block(SIPP_MEDIA_PORTS, align=2)


def rtp_base() -> int:
    """First RTP port of the members; each member gets its own block above it."""
    return int(os.environ.get("RTPCLUSTER_E2E_RTP_BASE", "61000"))


RTP_BLOCK = 1000  # ports per member: 250 concurrent sessions with rtp+rtcp pairs

CLUSTER = "e2e"  # the name of the one cluster rtpcluster runs in the rig
RUN_TIMEOUT = 150.0  # seconds a sipp UAC run may take before it is stopped


# --------------------------------------------------------------------------- data files


def read_data(name: str) -> str:
    """A file of ``data/`` as text (markers not yet replaced)."""
    return (DATA / name).read_text()


def fill(template: str, **values: object) -> str:
    """``template`` with each ``@name@`` marker replaced by ``values[name]``.

    A marker without a value is an error (a config or scenario half filled in would
    fail later and less clearly); values without a marker are allowed.
    """
    missing = sorted(set(_MARKER.findall(template)) - set(values))
    if missing:
        raise KeyError(f"no value for the markers {missing}")
    return _MARKER.sub(lambda m: str(values[m.group(1)]), template)


# --------------------------------------------------------------------------- RTPproxy members


@dataclass(frozen=True)
class MemberStats:
    active_sessions: int
    npkts_rcvd: int
    npkts_relayed: int


@dataclass
class Member(RtpProxy):
    """A member of the rig: one RTPproxy on a udp control port, and its weight."""

    weight: int = 1

    def stats(self, *, timeout: float = 1.0) -> MemberStats | None:
        info = self.ask("Ib", timeout=timeout)
        counters = self.ask("G npkts_rcvd npkts_relayed", timeout=timeout)
        if info is None or counters is None:
            return None
        match = re.search(r"active sessions: (\d+)", info)
        values = counters.split()
        if match is None or len(values) != 2:
            raise AssertionError(f"unexpected replies from {self.name}: {info!r} {counters!r}")
        return MemberStats(int(match.group(1)), int(values[0]), int(values[1]))


@contextlib.contextmanager
def members(
    workdir: Path, weights: Sequence[int], *, prefix: str = "m", extra: Sequence[str] = ()
) -> Iterator[list[Member]]:
    """Start one RTPproxy per weight, each with its own control port and RTP block."""
    started: list[Member] = []
    base = rtp_base()
    try:
        for index, weight in enumerate(weights):
            low = base + index * RTP_BLOCK
            member = Member(
                control=f"udp:{LOOPBACK}:{env_port(f'RTPCLUSTER_E2E_MEMBER{index + 1}_PORT')}",
                port_min=low,
                port_max=low + RTP_BLOCK - 1,
                extra=list(extra),
                name=f"{prefix}{index + 1}",
                workdir=workdir / f"{prefix}{index + 1}",
                weight=weight,
            )
            started.append(member)
            member.start()
        yield started
    finally:
        for member in started:
            member.stop()


# --------------------------------------------------------------------------- rtpcluster


def start_cluster(
    workdir: Path,
    nodes: Sequence[Member],
    sockets: Path,
    *,
    notify: tuple[int, str] | None = None,
    log_level: str = "info",
) -> RtpclusterProcess:
    """rtpcluster with one cluster, CLUSTER, on udp and unix, one element per member.

    Its config and log are ``rtpcluster.xml`` and ``rtpcluster.log`` in ``workdir``, its
    unix control socket ``ctl.sock`` and admin socket ``admin.sock`` in ``sockets`` (a
    short directory: a socket path holds 107 bytes); its udp port is
    RTPCLUSTER_E2E_CLUSTER_PORT or a free one. ``notify``: (relay port,
    dest_socket_prefix) for a ``<disconnect_notify>``. Returns once it is ready (one that
    does not come up is stopped before the error); the caller stops it.
    """
    cluster = RtpclusterProcess(
        workdir,
        env_port("RTPCLUSTER_E2E_CLUSTER_PORT"),
        unix_path=sockets / "ctl.sock",
        admin_path=sockets / "admin.sock",
        log_level=log_level,
    )
    entries = [
        MemberEntry.of(n.name, n, weight=n.weight, capacity=1000, status="active") for n in nodes
    ]
    listen = [f"unix:{cluster.unix_path}"]
    cluster.start(
        config=cluster_xml(CLUSTER, cluster.udp_port, entries, listen=listen, notify=notify)
    )
    return cluster


# --------------------------------------------------------------------------- Kamailio


def kamailio_modules_dir() -> str:
    for candidate in (
        os.environ.get("RTPCLUSTER_E2E_KAMAILIO_MODULES", ""),
        "/usr/lib/x86_64-linux-gnu/kamailio/modules",
        "/usr/lib/aarch64-linux-gnu/kamailio/modules",
        "/usr/lib/kamailio/modules",
        "/usr/local/lib64/kamailio/modules",
        "/usr/local/lib/kamailio/modules",
    ):
        if candidate and (Path(candidate) / "rtpproxy.so").is_file():
            return candidate
    raise RuntimeError("Kamailio's rtpproxy.so not found; set RTPCLUSTER_E2E_KAMAILIO_MODULES")


@dataclass
class Kamailio:
    """Kamailio in the foreground with ``data/kamailio.cfg`` filled in; stopped by PID."""

    workdir: Path
    port: int
    rtpproxy_sock: str
    uas_port: int
    tout: int = 1
    retr: int = 5
    disable_tout: int = 60
    children: int = 4
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "kamailio.log"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg = self.workdir / "kamailio.cfg"
        cfg.write_text(
            fill(
                read_data("kamailio.cfg"),
                children=self.children,
                host=LOOPBACK,
                port=self.port,
                modules=kamailio_modules_dir(),
                rtpproxy_sock=self.rtpproxy_sock,
                tout=self.tout,
                retr=self.retr,
                disable_tout=self.disable_tout,
                uas_host=LOOPBACK,
                uas_port=self.uas_port,
            )
        )
        binary = find_tool("kamailio")
        assert binary is not None
        check = subprocess.run(
            [binary, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30
        )
        if check.returncode != 0:
            raise RuntimeError(f"kamailio rejected its config:\n{check.stderr[-3000:]}")
        rundir = self.workdir / "run"
        rundir.mkdir(exist_ok=True)
        cmd = [
            binary,
            "-f",
            str(cfg),
            "-DD",
            "-E",
            "-m",
            "64",
            "-M",
            "8",
            "-w",
            str(self.workdir),
            "-Y",
            str(rundir),
            "-P",
            str(rundir / "kamailio.pid"),
        ]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        try:
            wait_until(self._answers_options, "kamailio to answer OPTIONS", 20, 0.1)
        except AssertionError:
            self.terminate()
            raise RuntimeError(f"kamailio did not answer OPTIONS; see {self.log_path}") from None

    def _answers_options(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"kamailio exited with {self.proc.returncode}: "
                + self.log_path.read_text(errors="replace")[-3000:]
            )
        branch = "z9hG4bK" + secrets.token_hex(6)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((LOOPBACK, 0))
            local = sock.getsockname()[1]
            msg = (
                f"OPTIONS sip:{LOOPBACK}:{self.port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {LOOPBACK}:{local};branch={branch}\r\n"
                "Max-Forwards: 5\r\n"
                f"From: <sip:probe@{LOOPBACK}>;tag={secrets.token_hex(4)}\r\n"
                f"To: <sip:{LOOPBACK}:{self.port}>\r\n"
                f"Call-ID: {secrets.token_hex(8)}@{LOOPBACK}\r\n"
                "CSeq: 1 OPTIONS\r\n"
                "Content-Length: 0\r\n\r\n"
            )
            sock.settimeout(0.3)
            sock.sendto(msg.encode(), (LOOPBACK, self.port))
            try:
                data = sock.recv(65536)
            except TimeoutError:
                return False
            return data.startswith(b"SIP/2.0 200")

    def terminate(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, grace=10.0)


# --------------------------------------------------------------------------- sipp

UAS_SCENARIO = read_data("uas.xml")
UAC_SCENARIO = read_data("uac.xml")  # markers: pcap, talk_ms

_STAMP_RE = r"([0-9.]+)"
# what the scenarios log of an SDP: its c= line, a bar, its m= line; group: the port
_SDP_RE = r"sdp=c=IN IP4 [0-9.]+\|m=audio (\d+)"


def _stamp(token: str) -> float:
    """Wall-clock time from the ``[$sec].[$usec]`` pair sipp's gettimeofday gives.

    sipp prints its variables as doubles ("1795591966.000000") or as integers
    depending on the version, and never zero-pads the microseconds.
    """
    parts = token.split(".")
    if len(parts) == 4:
        sec, usec = parts[0], parts[2]
    elif len(parts) == 2:
        sec, usec = parts
    else:
        raise ValueError(f"unexpected sipp time stamp {token!r}")
    return int(sec) + int(usec) / 1e6


@dataclass
class CallRecord:
    """One call as both sipp instances saw it."""

    call_id: str
    invite_at: float
    setup_s: float
    answer_port: int  # port in the SDP the UAC received (200 OK)
    offer_port: int | None = None  # port in the SDP the UAS received (INVITE)
    bye_s: float | None = None  # BYE sent to its 200 received; None: not completed
    ended_at: float | None = None  # wall-clock time the BYE's 200 arrived

    @property
    def completed(self) -> bool:
        return self.bye_s is not None


def parse_uac_log(text: str) -> dict[str, CallRecord]:
    calls: dict[str, CallRecord] = {}
    setup = re.compile(rf"E2E-SETUP cid=(\S+) inv={_STAMP_RE} ok={_STAMP_RE} {_SDP_RE}")
    done = re.compile(rf"E2E-DONE cid=(\S+) bye={_STAMP_RE} end={_STAMP_RE}")
    for m in setup.finditer(text):
        invite = _stamp(m.group(2))
        calls[m.group(1)] = CallRecord(
            call_id=m.group(1),
            invite_at=invite,
            setup_s=_stamp(m.group(3)) - invite,
            answer_port=int(m.group(4)),
        )
    for m in done.finditer(text):
        record = calls.get(m.group(1))
        if record is not None:
            record.ended_at = _stamp(m.group(3))
            record.bye_s = record.ended_at - _stamp(m.group(2))
    return calls


def parse_uas_log(text: str) -> dict[str, int]:
    return {m.group(1): int(m.group(2)) for m in re.finditer(rf"E2E-UAS cid=(\S+) {_SDP_RE}", text)}


@dataclass
class Sipp:
    """A sipp UAS that echoes RTP, and UAC runs that play the pcap through Kamailio."""

    workdir: Path
    binary: str
    pcap: Path
    uas_port: int
    uas_media_port: int
    talk_ms: int
    uas: subprocess.Popen[bytes] | None = None
    _runs: int = 0
    _uacs: list[UacRun] = field(default_factory=list)
    uas_scenario: str = UAS_SCENARIO

    @property
    def uas_log(self) -> Path:
        return self.workdir / "uas_messages.log"

    def start_uas(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        scenario = self.workdir / "uas.xml"
        scenario.write_text(self.uas_scenario)
        cmd = [
            self.binary,
            "-sf",
            str(scenario),
            "-i",
            LOOPBACK,
            "-p",
            str(self.uas_port),
            "-mi",
            LOOPBACK,
            "-mp",
            str(self.uas_media_port),
            "-rtp_echo",
            "-nostdin",
            "-trace_logs",
            "-log_file",
            str(self.uas_log),
            "-trace_err",
            "-error_file",
            str(self.workdir / "uas_errors.log"),
        ]
        with (self.workdir / "uas_stdout.log").open("ab") as out:
            self.uas = subprocess.Popen(
                cmd, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )
        # sipp binds before it starts reading the scenario loop; wait for the socket.
        wait_until(lambda: _udp_bound(self.uas_port), "the sipp UAS to bind its port", 10, 0.05)

    def uas_offers(self) -> dict[str, int]:
        if not self.uas_log.exists():
            return {}
        return parse_uas_log(self.uas_log.read_text(errors="replace"))

    def start_uac(
        self,
        target_port: int,
        calls: int,
        rate: float,
        *,
        limit: int = 200,
        media: bool = True,
        talk_ms: int | None = None,
        scenario_text: str = UAC_SCENARIO,
    ) -> UacRun:
        """Place ``calls`` calls at ``rate`` per second through Kamailio.

        With ``media`` each call plays the pcap towards the relay port it was
        given and stays up ``talk_ms`` (default: the pcap's length plus a margin).
        """
        self._runs += 1
        tag = f"uac{self._runs}"
        scenario = self.workdir / f"{tag}.xml"
        text = fill(
            scenario_text, pcap=self.pcap, talk_ms=self.talk_ms if talk_ms is None else talk_ms
        )
        if not media:
            text = re.sub(
                r"<nop>\s*<action>\s*<exec play_pcap_audio.*?</nop>", "", text, flags=re.S
            )
        scenario.write_text(text)
        log = self.workdir / f"{tag}_messages.log"
        cmd = [
            self.binary,
            f"{LOOPBACK}:{target_port}",
            "-sf",
            str(scenario),
            "-s",
            "echo",
            "-i",
            LOOPBACK,
            "-p",
            str(free_port()),
            "-mi",
            LOOPBACK,
            "-mp",
            str(free_port_block(SIPP_MEDIA_PORTS, align=2)),
            "-m",
            str(calls),
            "-r",
            str(rate),
            "-l",
            str(limit),
            "-nostdin",
            "-timeout",
            "120",
            "-timeout_error",
            "-trace_logs",
            "-log_file",
            str(log),
            "-trace_err",
            "-error_file",
            str(self.workdir / f"{tag}_errors.log"),
        ]
        out = self.workdir / f"{tag}_stdout.log"
        with out.open("ab") as stdout:
            proc = subprocess.Popen(
                cmd, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stdout
            )
        run = UacRun(proc=proc, log=log, errors=self.workdir / f"{tag}_errors.log", calls=calls)
        self._uacs.append(run)
        return run

    def stop(self) -> None:
        """Stop the UAS and any UAC run still going (a test that failed half way)."""
        for run in self._uacs:
            run.stop()
        if self.uas is not None:
            stop_process(self.uas)


@contextlib.contextmanager
def sipp_uas(
    workdir: Path, tools: Tools, *, talk_ms: int | None = None, uas_scenario: str = UAS_SCENARIO
) -> Iterator[Sipp]:
    """The sipp UAS, bound and answering; it and every UAC run are stopped at the end.

    ``talk_ms``: how long UAC calls with media stay up (default: ``tools.talk_ms``).
    """
    sipp = Sipp(
        workdir=workdir,
        binary=tools.sipp,
        pcap=tools.pcap,
        uas_port=env_port("RTPCLUSTER_E2E_UAS_PORT"),
        uas_media_port=env_media_port("RTPCLUSTER_E2E_UAS_MEDIA_PORT"),
        talk_ms=tools.talk_ms if talk_ms is None else talk_ms,
        uas_scenario=uas_scenario,
    )
    try:
        sipp.start_uas()
        yield sipp
    finally:
        sipp.stop()


def _udp_bound(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return True
    return False


@dataclass
class UacRun:
    proc: subprocess.Popen[bytes]
    log: Path
    errors: Path
    calls: int

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_process(self.proc)
            raise

    def records(self) -> dict[str, CallRecord]:
        if not self.log.exists():
            return {}
        return parse_uac_log(self.log.read_text(errors="replace"))

    def error_tail(self) -> str:
        if not self.errors.exists():
            return ""
        return self.errors.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        stop_process(self.proc)


# --------------------------------------------------------------------------- checks


def owner_of(port: int, nodes: Sequence[Member]) -> Member | None:
    for node in nodes:
        if node.owns_port(port):
            return node
    return None


def chi_square_p_upper(stat: float, dof: int) -> float:
    """P(X >= stat) for a chi-square variable with ``dof`` (1 or 2) degrees of freedom."""
    if dof == 1:
        return float(math.erfc(math.sqrt(stat / 2)))
    if dof == 2:
        return float(math.exp(-stat / 2))
    raise ValueError("only 1 or 2 degrees of freedom")


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[index]


# --------------------------------------------------------------------------- the rig and figures

# Lines for the terminal summary: the figures each test measured (see conftest).
FIGURES: list[str] = []


def report(line: str) -> None:
    """Record a measured figure; printed in the summary at the end of the run."""
    FIGURES.append(line)
    print(line)


@dataclass
class Rig:
    """Members, optionally rtpcluster in front of them, Kamailio and the sipp UAS."""

    tools: Tools
    workdir: Path
    nodes: list[Member]
    kamailio: Kamailio
    sipp: Sipp
    cluster: RtpclusterProcess | None = None

    def node(self, name: str) -> Member:
        for member in self.nodes:
            if member.name == name:
                return member
        raise KeyError(name)


class RigFactory(Protocol):
    def __call__(self, mode: str, weights: list[int], *, talk_ms: int | None = None) -> Rig: ...
