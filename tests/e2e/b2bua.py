"""The Sippy B2BUA (PyPI ``sippy``) as a second real RTPproxy client of rtpcluster.

sipp UAC -> B2BUA -> sipp UAS. The B2BUA sends its ``U``/``D`` commands to rtpcluster
over UDP (``-r udp:HOST:PORT``) and listens for commands, media-timeout notifications
included, on its unix socket (``-c PATH``): a line ``r <call number>`` there makes it
hang the call up. It asks for those notifications (notify arguments on ``U``) only if
``VF 20081224`` answered 1 when it came online, so it is started once the members are.

Like the rest of the e2e support, every process is started here, remembered by PID and
stopped by PID; traffic stays on 127.0.0.1 and unix sockets in the test's directories.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.e2e_harness import LOOPBACK, UAC_SCENARIO, UAS_SCENARIO, read_data
from testsupport import stop_process, wait_until

# sippy 2.5.0 compares a Contact's "transport=UDP" with "udp" case-sensitively and then
# sends its BYE nowhere: the UAS must not put the parameter in its Contact.
_TRANSPORT_PARAM = ";transport=[transport]"
_UAS_BYE = '<recv request="BYE"/>'
assert _TRANSPORT_PARAM in UAS_SCENARIO and _UAS_BYE in UAS_SCENARIO
B2BUA_UAS_SCENARIO = UAS_SCENARIO.replace(_TRANSPORT_PARAM, "").replace(
    _UAS_BYE,
    '<recv request="BYE"><action><log message="E2E-UAS-BYE cid=[call_id]"/></action></recv>',
)

# sipp builds [next_url] from the whole Contact, display name included, and the B2BUA's
# Contact has one ("Anonymous <sip:...>"): its ACK and BYE would not parse. The B2BUA
# sends no Record-Route and its Contact is its listening address, so in-dialog requests
# go to the same URI as the INVITE.
_NEXT_URL = "[next_url]"
_B2BUA_URI = "sip:[service]@[remote_ip]:[remote_port]"
assert _NEXT_URL in UAC_SCENARIO
B2BUA_UAC_SCENARIO = UAC_SCENARIO.replace(_NEXT_URL, _B2BUA_URI)

# A caller that sends no media and waits for the far end's BYE (see the file).
UAC_WAITS_FOR_BYE = read_data("uac_waits_for_bye.xml")


def sippy_missing() -> str | None:
    """Why the B2BUA cannot run here, or None."""
    probe = subprocess.run(
        [sys.executable, "-c", "import sippy.b2bua"], capture_output=True, timeout=60
    )
    if probe.returncode != 0:
        return "the Sippy B2BUA (pip install sippy; the e2e nox session installs it)"
    return None


def uas_hangups(log: Path) -> list[str]:
    """Call-ids of the calls whose BYE reached the UAS."""
    if not log.exists():
        return []
    return re.findall(r"E2E-UAS-BYE cid=(\S+)", log.read_text(errors="replace"))


def uac_hangups(log: Path) -> dict[str, str]:
    """Call-id -> time stamp token of the BYE each UAC call received."""
    if not log.exists():
        return {}
    text = log.read_text(errors="replace")
    return dict(re.findall(r"E2E-HUNG-UP cid=(\S+) at=([0-9.]+)", text))


@dataclass
class B2bua:
    """``python -m sippy.b2bua`` in the foreground, relaying media through rtpcluster."""

    workdir: Path
    sip_port: int
    route: str  # host:port every call is sent on to (the sipp UAS)
    rtp_proxy: str  # -r: rtpcluster's control socket, e.g. udp:127.0.0.1:PORT
    command_socket: Path  # -c: its command and notify socket
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "b2bua.log"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "sippy.b2bua",
            "-f",  # foreground: no pidfile, log to stderr
            "-u",  # no RADIUS authentication
            "-A",
            "0",  # no accounting
            "-l",
            LOOPBACK,
            "-p",
            str(self.sip_port),
            "-s",
            self.route,
            "-r",
            self.rtp_proxy,
            "-c",
            str(self.command_socket),
        ]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )

        def listening() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"b2bua exited with {self.proc.returncode}: "
                    + self.log_path.read_text(errors="replace")[-3000:]
                )
            return self.command_socket.exists()

        try:
            wait_until(listening, f"the b2bua to open {self.command_socket}", 30, 0.1)
        except AssertionError:
            self.stop()
            raise RuntimeError(
                f"b2bua did not open {self.command_socket}; see {self.log_path}"
            ) from None

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, grace=5.0)
