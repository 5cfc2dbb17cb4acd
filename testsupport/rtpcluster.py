"""``rtpcluster serve --foreground`` in a subprocess, and the XML config it is given."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from testsupport.notify import NotifyListener
from testsupport.processes import stop_process
from testsupport.rtpproxy import RtpProxy

LOOPBACK = "127.0.0.1"
START_TIMEOUT = 20.0  # seconds from exec to READY=1; about 1 s on an idle machine
STOP_GRACE = 20.0  # seconds from SIGTERM to SIGKILL; it stops in well under 1 s
# Cluster settings for a test: a member's state changes are seen within 0.2 s, not 5 s.
FAST_PROBES = {"heartbeat_interval": 0.2, "offline_probe_interval": 0.2}


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
    """One ``<rtpproxy>`` of the config; the optional elements only where given."""

    name: str
    address: str  # as the config writes it: 127.0.0.1:PORT, a socket path ...
    protocol: str = "udp"
    weight: int | None = None
    capacity: int | None = None
    status: str | None = None

    @classmethod
    def of(cls, name: str, proxy: RtpProxy, **elements: Any) -> MemberEntry:
        """The entry for a test-support RTPproxy, over its ``control`` socket."""
        return cls(name, proxy.address, proxy.kind, **elements)

    def xml(self) -> list[str]:
        optional = {"weight": self.weight, "capacity": self.capacity, "status": self.status}
        out = ["    <rtpproxy>", f"      <name>{escape(self.name)}</name>"]
        out.append(f"      <protocol>{self.protocol}</protocol>")
        out.append(f"      <address>{escape(self.address)}</address>")
        out += [f"      <{k}>{escape(str(v))}</{k}>" for k, v in optional.items() if v is not None]
        return [*out, "    </rtpproxy>"]


def cluster_xml(
    name: str,
    udp_port: int,
    members: Sequence[MemberEntry],
    *,
    listen: Sequence[str] = (),
    notify: tuple[int, str] | None = None,
    settings: Mapping[str, object] | None = None,
    http: str | None = None,
    session_store: str | None = None,
) -> str:
    """A config of one cluster on udp 127.0.0.1:``udp_port`` (plus ``<listen>``s).

    ``notify``: (relay port, dest_socket_prefix) for a ``<disconnect_notify>``;
    ``settings``: more elements of the cluster (``heartbeat_interval``: 0.2 ...);
    ``http``: the service's ``<http>`` endpoint; ``session_store``: its ``<session_store>``.
    """
    out = ['<?xml version="1.0" encoding="UTF-8"?>', "<rtp_cluster_config>"]
    if http is not None:
        out.append(f"  <http>{escape(http)}</http>")
    if session_store is not None:
        out.append(f"  <session_store>{escape(session_store)}</session_store>")
    out += [
        "  <rtp_cluster>",
        f"    <name>{escape(name)}</name>",
        "    <protocol>udp</protocol>",
        f"    <address>{LOOPBACK}:{udp_port}</address>",
    ]
    out += [f"    <listen>{escape(spec)}</listen>" for spec in listen]
    out += [f"    <{k}>{escape(str(v))}</{k}>" for k, v in (settings or {}).items()]
    if notify is not None:
        out += [
            "    <disconnect_notify>",
            f"      <inbound_address>{LOOPBACK}:{notify[0]}</inbound_address>",
            f"      <dest_socket_prefix>{escape(notify[1])}</dest_socket_prefix>",
            "    </disconnect_notify>",
        ]
    for member in members:
        out += member.xml()
    out += ["  </rtp_cluster>", "</rtp_cluster_config>"]
    return "\n".join(out) + "\n"


@dataclass
class RtpclusterProcess:
    """The service in its own process: config ``<workdir>/rtpcluster.xml``, log beside it.

    ``udp_port``: its udp control socket on 127.0.0.1 (and ``unix_path`` a unix one, if
    the config has it). ``admin_path``: its admin socket, by default in ``workdir``; the
    systemd notification socket the harness listens on goes beside it (a unix socket
    path holds at most 107 bytes: keep that directory short).
    """

    workdir: Path
    udp_port: int
    unix_path: Path | None = None
    admin_path: Path | None = None
    log_level: str = "info"
    proc: subprocess.Popen[bytes] | None = None
    notify: NotifyListener | None = None  # while it runs: what it tells systemd

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

    def start(
        self,
        *args: str,
        config: str | None = None,
        env: dict[str, str] | None = None,
        timeout: float = START_TIMEOUT,
    ) -> dict[str, str]:
        """Start it (with more ``serve`` arguments); returns its ``READY=1`` notification.

        ``config``: the XML to write first (else ``config_path`` is used as it is).
        READY=1 comes once every listener is bound: awaited, not polled. One that exits
        or stays silent is stopped, and the error says what its log said.
        """
        self.workdir.mkdir(parents=True, exist_ok=True)
        if config is not None:
            self.config_path.write_text(config)
        self.notify = NotifyListener(self.admin.parent / "notify.sock")
        cmd = [sys.executable, "-m", "rtpcluster", "serve", "--foreground"]
        cmd += ["-c", str(self.config_path), "-s", str(self.admin)]
        cmd += ["--log-level", self.log_level, *args]
        environment = {**os.environ, "NOTIFY_SOCKET": str(self.notify.path), **(env or {})}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.workdir,
                env=environment,
            )
        try:
            return self.notify.until(lambda f: f.get("READY") == "1", timeout, self.proc)
        except (RuntimeError, AssertionError) as exc:
            self.stop()
            raise RuntimeError(f"rtpcluster did not start ({exc}): {self.log_tail()}") from None

    def log_tail(self, chars: int = 2000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def ctl(self, *args: str, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
        """``rtpcluster ctl`` on its admin socket."""
        return run_rtpcluster("ctl", "-s", str(self.admin), *args, timeout=timeout)

    def ls_json(self, *args: str) -> dict[str, Any]:
        """``ctl ls [CLUSTER] --json`` as a document."""
        result = self.ctl("ls", *args, "--json")
        text = result.stdout
        start, end = text.find("{"), text.rfind("}")
        if result.returncode != 0 or start < 0:
            raise AssertionError(f"ctl ls failed ({result.returncode}): {text}{result.stderr}")
        document: dict[str, Any] = json.loads(text[start : end + 1])
        return document

    def members_info(self, cluster: str) -> dict[str, dict[str, object]]:
        """``ctl ls CLUSTER --json``: the cluster's members by name."""
        document = self.ls_json(cluster)
        return {str(m["name"]): dict(m) for m in document.get("members", [])}

    def session_store(self) -> dict[str, Any]:
        """``ctl ls --json``: the session store's state and counters."""
        store: dict[str, Any] = self.ls_json()["session_store"]
        return store

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def exit_code(self, timeout: float = STOP_GRACE) -> int:
        """Wait for it to end by itself (after a signal already sent); its exit status."""
        assert self.proc is not None
        code = self.proc.wait(timeout=timeout)
        self.stop()
        return code

    def stop(self) -> int:
        """Stop it by its PID (SIGTERM, SIGKILL after STOP_GRACE); its exit status."""
        process, self.proc = self.proc, None
        code = 0
        if process is not None:
            stop_process(process, grace=STOP_GRACE)
            code = process.returncode
        if self.notify is not None:
            self.notify.close()
            self.notify = None
        return code
