"""Processes and measurements for the end-to-end tests.

Everything here runs real programs: RTPproxies (rtp-io, one subprocess each),
Kamailio, sipp and ``rtpcluster serve``. Every process is started by this module,
remembered by PID and stopped by PID. All network traffic stays on 127.0.0.1
or on unix sockets inside the test's temporary directory.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

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
    explicit = os.environ.get(f"RTPCLUSTER_E2E_{name.upper()}")
    if explicit is not None:
        return explicit if os.access(explicit, os.X_OK) else None
    extra = os.pathsep.join(["/usr/sbin", "/usr/local/sbin", "/sbin"])
    return shutil.which(name, path=os.environ.get("PATH", "") + os.pathsep + extra)


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


# --------------------------------------------------------------------------- ports


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def env_port(name: str) -> int:
    """Port from environment variable ``name``, or a free one picked now."""
    value = os.environ.get(name)
    return int(value) if value else free_udp_port()


def rtp_base() -> int:
    """First RTP port of the members; each member gets its own block above it."""
    return int(os.environ.get("RTPCLUSTER_E2E_RTP_BASE", "61000"))


RTP_BLOCK = 1000  # ports per member: 250 concurrent sessions with rtp+rtcp pairs


# --------------------------------------------------------------------------- processes


def _children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc), for programs that fork workers."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found.extend(int(x) for x in (task / "children").read_text().split())
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is not alive for our purposes
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def stop_process(proc: subprocess.Popen[bytes], *, grace: float = 5.0) -> None:
    """Stop a process we started (and any workers it forked) by PID.

    SIGCONT first in case a test left it stopped, then SIGTERM, then SIGKILL
    after ``grace`` seconds; forked children still alive afterwards are
    killed by their own PIDs.
    """
    if proc.poll() is not None:
        return
    children = _children_of(proc.pid)
    for sig in (signal.SIGCONT, signal.SIGTERM):
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=grace)
    for child in children:
        if _alive(child):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)


def wait_until(predicate: object, *, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate()`` until it is true or ``timeout`` seconds pass."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


# --------------------------------------------------------------------------- control queries


def udp_command(port: int, command: str, *, timeout: float = 1.0) -> str | None:
    """Send one RTPproxy control command over UDP with a cookie; reply text or None."""
    cookie = secrets.token_hex(8)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.connect((LOOPBACK, port))
        try:
            sock.send(f"{cookie} {command}".encode())
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                data = sock.recv(65536).decode(errors="replace")
                head, _, rest = data.partition(" ")
                if head == cookie:
                    return rest
        except (TimeoutError, ConnectionRefusedError):
            return None
    return None


@dataclass(frozen=True)
class MemberStats:
    active_sessions: int
    npkts_rcvd: int
    npkts_relayed: int


# --------------------------------------------------------------------------- RTPproxy members

_MEMBER_SCRIPT = """
import signal, sys
import rtp.io
proxy = rtp.io.rtpproxy(extra_args=sys.argv[1:], modules=[])
sys.stdout.write("started\\n")
sys.stdout.flush()
while True:
    signal.pause()
"""


@dataclass
class Member:
    """One real RTPproxy (rtp-io) in its own subprocess, controlled over UDP."""

    name: str
    ctl_port: int
    rtp_min: int
    rtp_max: int
    weight: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)
    extra: list[str] = field(default_factory=list)  # more RTPproxy options (-n, -T ...)

    def __post_init__(self) -> None:
        self.log_path = self.workdir / f"{self.name}.log"

    def owns(self, port: int) -> bool:
        return self.rtp_min <= port <= self.rtp_max

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [
            "-s",
            f"udp:{LOOPBACK}:{self.ctl_port}",
            "-l",
            LOOPBACK,
            "-F",
            "-m",
            str(self.rtp_min),
            "-M",
            str(self.rtp_max),
            "-d",
            "err",
            *self.extra,
        ]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _MEMBER_SCRIPT, *args],
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        ok = wait_until(lambda: self.query("V", timeout=0.2) is not None, timeout=15)
        if not ok:
            self.terminate()
            raise RuntimeError(f"RTPproxy {self.name} did not answer V; see {self.log_path}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def query(self, command: str, *, timeout: float = 1.0) -> str | None:
        return udp_command(self.ctl_port, command, timeout=timeout)

    def stats(self, *, timeout: float = 1.0) -> MemberStats | None:
        info = self.query("Ib", timeout=timeout)
        counters = self.query("G npkts_rcvd npkts_relayed", timeout=timeout)
        if info is None or counters is None:
            return None
        match = re.search(r"active sessions: (\d+)", info)
        values = counters.split()
        if match is None or len(values) != 2:
            raise AssertionError(f"unexpected replies from {self.name}: {info!r} {counters!r}")
        return MemberStats(int(match.group(1)), int(values[0]), int(values[1]))

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait(timeout=10)

    def terminate(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, grace=3.0)


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
                name=f"{prefix}{index + 1}",
                ctl_port=env_port(f"RTPCLUSTER_E2E_MEMBER{index + 1}_PORT"),
                rtp_min=low,
                rtp_max=low + RTP_BLOCK - 1,
                weight=weight,
                workdir=workdir / f"{prefix}{index + 1}",
                extra=list(extra),
            )
            started.append(member)
            member.start()
        yield started
    finally:
        for member in started:
            member.terminate()


# --------------------------------------------------------------------------- rtpcluster


def cluster_config(
    name: str,
    udp_port: int,
    unix_path: Path,
    nodes: Sequence[Member],
    notify: tuple[int, str] | None = None,
) -> str:
    """Minimal XML config: one cluster listening on udp and unix, one element per member.

    ``notify``: (relay port, dest_socket_prefix) for a ``<disconnect_notify>``.
    """
    parts = [
        "<rtp_cluster_config>",
        "  <rtp_cluster>",
        f"    <name>{name}</name>",
        "    <protocol>udp</protocol>",
        f"    <address>{LOOPBACK}:{udp_port}</address>",
        f"    <listen>unix:{unix_path}</listen>",
    ]
    if notify is not None:
        parts += [
            "    <disconnect_notify>",
            f"      <inbound_address>{LOOPBACK}:{notify[0]}</inbound_address>",
            f"      <dest_socket_prefix>{notify[1]}</dest_socket_prefix>",
            "    </disconnect_notify>",
        ]
    for node in nodes:
        parts += [
            "    <rtpproxy>",
            f"      <name>{node.name}</name>",
            "      <protocol>udp</protocol>",
            f"      <address>{LOOPBACK}:{node.ctl_port}</address>",
            f"      <weight>{node.weight}</weight>",
            "      <capacity>1000</capacity>",
            "      <status>active</status>",
            "    </rtpproxy>",
        ]
    parts += ["  </rtp_cluster>", "</rtp_cluster_config>", ""]
    return "\n".join(parts)


@dataclass
class Cluster:
    """``rtpcluster serve --foreground`` as a subprocess."""

    name: str
    udp_port: int
    unix_path: Path
    admin_path: Path
    config_path: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    notify: tuple[int, str] | None = None  # see cluster_config
    log_level: str = "info"

    def start(self, nodes: Sequence[Member]) -> None:
        self.config_path.write_text(
            cluster_config(self.name, self.udp_port, self.unix_path, nodes, self.notify)
        )
        cmd = [
            sys.executable,
            "-m",
            "rtpcluster",
            "serve",
            "--foreground",
            "-c",
            str(self.config_path),
            "-s",
            str(self.admin_path),
            "--log-level",
            self.log_level,
        ]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.config_path.parent
            )

        def answers() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"rtpcluster exited with {self.proc.returncode}: "
                    + self.log_path.read_text(errors="replace")[-2000:]
                )
            return udp_command(self.udp_port, "V", timeout=0.2) == "20040107\n"

        if not wait_until(answers, timeout=20, interval=0.1):
            self.terminate()
            raise RuntimeError("rtpcluster did not answer V on its udp socket")

    def ctl(self, *args: str, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "rtpcluster", "ctl", "-s", str(self.admin_path), *args]
        return subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )

    def members_info(self) -> dict[str, dict[str, object]]:
        """``ctl ls CLUSTER --json``: the cluster's members by name."""
        result = self.ctl("ls", self.name, "--json")
        text = result.stdout
        start, end = text.find("{"), text.rfind("}")
        if result.returncode != 0 or start < 0:
            raise AssertionError(f"ctl ls failed ({result.returncode}): {text}{result.stderr}")
        document = json.loads(text[start : end + 1])
        return {str(m["name"]): dict(m) for m in document.get("members", [])}

    def terminate(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)


# --------------------------------------------------------------------------- Kamailio

KAMAILIO_CFG = """#!KAMAILIO
# Generated by the rtpcluster end-to-end tests.
debug=1
log_stderror=yes
fork=yes
children={children}
auto_aliases=no
listen=udp:{host}:{port}
disable_tcp=yes

mpath="{modules}"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "maxfwd.so"
loadmodule "pv.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "rtpproxy.so"

modparam("rr", "append_fromtag", 1)
modparam("rtpproxy", "rtpproxy_sock", "{rtpproxy_sock}")
modparam("rtpproxy", "rtpproxy_tout", {tout})
modparam("rtpproxy", "rtpproxy_retr", {retr})
modparam("rtpproxy", "rtpproxy_disable_tout", {disable_tout})

request_route {{
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (is_method("OPTIONS") && uri == myself && $rU == $null) {{
        sl_send_reply("200", "Alive");
        exit;
    }}
    if (has_totag()) {{
        if (loose_route()) {{
            if (is_method("BYE")) {{
                rtpproxy_destroy();
            }}
            t_relay();
            exit;
        }}
        if (is_method("ACK") && t_check_trans()) {{
            t_relay();
        }}
        exit;
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans()) {{
            t_relay();
        }}
        exit;
    }}
    if (is_method("INVITE")) {{
        record_route();
        if (has_body("application/sdp")) {{
            if (!rtpproxy_offer()) {{
                sl_send_reply("503", "No media relay");
                exit;
            }}
        }}
        t_on_reply("MEDIA_ANSWER");
        t_on_failure("MEDIA_RELEASE");
    }}
    $du = "sip:{uas_host}:{uas_port}";
    if (!t_relay()) {{
        sl_reply_error();
    }}
    exit;
}}

onreply_route[MEDIA_ANSWER] {{
    if (status =~ "^2[0-9][0-9]$" && has_body("application/sdp")) {{
        rtpproxy_answer();
    }}
}}

failure_route[MEDIA_RELEASE] {{
    unforce_rtp_proxy();
}}
"""


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
    """Kamailio in the foreground with a generated config; stopped by PID."""

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
            KAMAILIO_CFG.format(
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
        if not wait_until(self._answers_options, timeout=20, interval=0.1):
            self.terminate()
            raise RuntimeError(f"kamailio did not answer OPTIONS; see {self.log_path}")

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

UAS_SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="rtpcluster e2e UAS">
  <recv request="INVITE" crlf="true">
    <action>
      <ereg regexp="m=audio [0-9]+" search_in="body" check_it="true" assign_to="om"/>
      <ereg regexp="c=IN IP4 [0-9.]+" search_in="body" check_it="true" assign_to="oc"/>
      <log message="E2E-UAS cid=[call_id] sdp=[$oc]|[$om]"/>
    </action>
  </recv>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]e2euas[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      [last_Record-Route:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=uas 1 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 8
      a=rtpmap:8 PCMA/8000

    ]]>
  </send>
  <recv request="ACK" crlf="true"/>
  <recv request="BYE"/>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <timewait milliseconds="1000"/>
</scenario>
"""

UAC_SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="rtpcluster e2e UAC">
  <nop>
    <action>
      <gettimeofday assign_to="is,iu"/>
    </action>
  </nop>
  <send retrans="500">
    <![CDATA[

      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: e2e <sip:e2e@[local_ip]:[local_port]>;tag=[pid]e2euac[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: sip:e2e@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=uac 1 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 8
      a=rtpmap:8 PCMA/8000

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rrs="true">
    <action>
      <gettimeofday assign_to="os,ou"/>
      <ereg regexp="m=audio [0-9]+" search_in="body" check_it="true" assign_to="am"/>
      <ereg regexp="c=IN IP4 [0-9.]+" search_in="body" check_it="true" assign_to="ac"/>
      <log message="E2E-SETUP cid=[call_id] inv=[$is].[$iu] ok=[$os].[$ou] sdp=[$ac]|[$am]"/>
    </action>
  </recv>
  <send>
    <![CDATA[

      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: e2e <sip:e2e@[local_ip]:[local_port]>;tag=[pid]e2euac[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <nop>
    <action>
      <exec play_pcap_audio="{pcap}"/>
    </action>
  </nop>
  <pause milliseconds="{talk_ms}"/>
  <nop>
    <action>
      <gettimeofday assign_to="bye_s,bye_us"/>
    </action>
  </nop>
  <send retrans="500">
    <![CDATA[

      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: e2e <sip:e2e@[local_ip]:[local_port]>;tag=[pid]e2euac[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200">
    <action>
      <gettimeofday assign_to="end_s,end_us"/>
      <log message="E2E-DONE cid=[call_id] bye=[$bye_s].[$bye_us] end=[$end_s].[$end_us]"/>
    </action>
  </recv>
</scenario>
"""

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
        if not wait_until(lambda: _udp_bound(self.uas_port), timeout=10):
            raise RuntimeError("sipp UAS did not bind its port")

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
        text = scenario_text.replace("{pcap}", str(self.pcap)).replace(
            "{talk_ms}", str(self.talk_ms if talk_ms is None else talk_ms)
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
            str(free_udp_port()),
            "-mi",
            LOOPBACK,
            "-mp",
            str(free_udp_port() & ~1),
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
        if node.owns(port):
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


@dataclass(frozen=True)
class Tools:
    kamailio: str
    sipp: str
    pcap: Path
    pcap_packets: int
    pcap_seconds: float


@dataclass
class Rig:
    """Members, optionally rtpcluster in front of them, Kamailio and the sipp UAS."""

    tools: Tools
    workdir: Path
    nodes: list[Member]
    kamailio: Kamailio
    sipp: Sipp
    cluster: Cluster | None = None

    def node(self, name: str) -> Member:
        for member in self.nodes:
            if member.name == name:
                return member
        raise KeyError(name)


class RigFactory(Protocol):
    def __call__(self, mode: str, weights: list[int], *, talk_ms: int | None = None) -> Rig: ...
