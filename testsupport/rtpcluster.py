"""``rtpcluster serve --foreground`` in a subprocess, and the XML config it is given."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from testsupport.control import ask
from testsupport.processes import stop_process
from testsupport.wait import wait_until

LOOPBACK = "127.0.0.1"
PROTOCOL_VERSION = "20040107\n"  # what V answers: the service is reading its sockets
START_TIMEOUT = 20.0  # seconds from exec to answering V; about 1 s on an idle machine


def run_rtpcluster(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """``python -m rtpcluster ARGS...`` to its end: its exit status, stdout and stderr."""
    return subprocess.run(
        [sys.executable, "-m", "rtpcluster", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@dataclass(frozen=True)
class MemberEntry:
    """One ``<rtpproxy>`` of the config: a member on a udp control socket."""

    name: str
    port: int  # its udp control port on 127.0.0.1
    weight: int = 100
    capacity: int = 1000


def cluster_xml(
    name: str,
    udp_port: int,
    members: Sequence[MemberEntry],
    *,
    listen: Sequence[str] = (),
    notify: tuple[int, str] | None = None,
) -> str:
    """A config of one cluster on udp 127.0.0.1:``udp_port`` (plus ``<listen>``s).

    ``notify``: (relay port, dest_socket_prefix) for a ``<disconnect_notify>``.
    """
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        "<rtp_cluster_config>",
        "  <rtp_cluster>",
        f"    <name>{escape(name)}</name>",
        "    <protocol>udp</protocol>",
        f"    <address>{LOOPBACK}:{udp_port}</address>",
    ]
    out += [f"    <listen>{escape(spec)}</listen>" for spec in listen]
    if notify is not None:
        out += [
            "    <disconnect_notify>",
            f"      <inbound_address>{LOOPBACK}:{notify[0]}</inbound_address>",
            f"      <dest_socket_prefix>{escape(notify[1])}</dest_socket_prefix>",
            "    </disconnect_notify>",
        ]
    for member in members:
        out += [
            "    <rtpproxy>",
            f"      <name>{escape(member.name)}</name>",
            "      <protocol>udp</protocol>",
            f"      <address>{LOOPBACK}:{member.port}</address>",
            f"      <weight>{member.weight}</weight>",
            f"      <capacity>{member.capacity}</capacity>",
            "      <status>active</status>",
            "    </rtpproxy>",
        ]
    out += ["  </rtp_cluster>", "</rtp_cluster_config>"]
    return "\n".join(out) + "\n"


@dataclass
class RtpclusterProcess:
    """The service in its own process: config ``<workdir>/rtpcluster.xml``, log beside it.

    ``udp_port`` is the control socket that must answer ``V`` before :meth:`start`
    returns (and ``unix_path`` too, if given). ``admin_path``: its admin socket, by
    default in ``workdir`` (a unix socket path holds at most 107 bytes).
    """

    workdir: Path
    udp_port: int
    unix_path: Path | None = None
    admin_path: Path | None = None
    log_level: str = "info"
    proc: subprocess.Popen[bytes] | None = None

    @property
    def udp(self) -> str:
        return f"udp:{LOOPBACK}:{self.udp_port}"

    @property
    def unix(self) -> str | None:
        return None if self.unix_path is None else f"unix:{self.unix_path}"

    @property
    def config_path(self) -> Path:
        return self.workdir / "rtpcluster.xml"

    @property
    def log_path(self) -> Path:
        return self.workdir / "rtpcluster.log"

    @property
    def admin(self) -> Path:
        return self.admin_path or self.workdir / "admin.sock"

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def start(self, config: str, timeout: float = START_TIMEOUT) -> None:
        """Write ``config``, start the service; returns once its sockets answer ``V``."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(config)
        cmd = [sys.executable, "-m", "rtpcluster", "serve", "--foreground"]
        cmd += ["-c", str(self.config_path), "-s", str(self.admin)]
        cmd += ["--log-level", self.log_level]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.workdir
            )
        controls = [self.udp] if self.unix is None else [self.udp, self.unix]
        try:
            # No readiness message to await: poll V, and stop at once if it exited.
            wait_until(lambda: all(self._answers(c) for c in controls), "V", timeout, 0.1)
        except AssertionError:
            self.stop()
            raise RuntimeError(f"rtpcluster did not answer V: {self.log_tail()}") from None

    def _answers(self, control: str) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"rtpcluster exited with {self.proc.returncode}: {self.log_tail()}")
        return ask(control, "V", timeout=0.2) == PROTOCOL_VERSION

    def log_tail(self, chars: int = 2000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def ctl(self, *args: str, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
        """``rtpcluster ctl`` on its admin socket."""
        return run_rtpcluster("ctl", "-s", str(self.admin), *args, timeout=timeout)

    def members_info(self, cluster: str) -> dict[str, dict[str, object]]:
        """``ctl ls CLUSTER --json``: the cluster's members by name."""
        result = self.ctl("ls", cluster, "--json")
        text = result.stdout
        start, end = text.find("{"), text.rfind("}")
        if result.returncode != 0 or start < 0:
            raise AssertionError(f"ctl ls failed ({result.returncode}): {text}{result.stderr}")
        document = json.loads(text[start : end + 1])
        return {str(m["name"]): dict(m) for m in document.get("members", [])}

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
