"""The files shipped for operators agree with the code: the systemd unit, the Grafana
dashboard. (Prometheus itself checks the dashboard queries and the alert rules in
tests/integration/test_prometheus.py.)"""

from __future__ import annotations

import json
from pathlib import Path

from rtpcluster.cli.app import CTL_SOCKETS

CONFIG = Path(__file__).resolve().parents[2] / "config"


def unit_settings() -> dict[str, str]:
    settings: dict[str, str] = {}
    logical = ""
    for raw in (CONFIG / "rtpcluster.service").read_text().splitlines():
        if raw.startswith("#") or not raw.strip():
            continue
        if raw.endswith("\\"):
            logical += raw[:-1]
            continue
        line, logical = logical + raw, ""
        if "=" in line and not line.startswith("["):
            key, _, value = line.partition("=")
            settings[key.strip()] = " ".join(value.split())
    return settings


def test_unit_is_notify_with_a_watchdog_and_hardening() -> None:
    unit = unit_settings()
    assert unit["Type"] == "notify"
    assert int(unit["WatchdogSec"]) > 0
    assert unit["User"] == "rtpcluster" and unit["RuntimeDirectory"] == "rtpcluster"
    assert int(unit["LimitNOFILE"]) >= 65536
    assert unit["ProtectSystem"] == "strict" and unit["NoNewPrivileges"] == "yes"
    assert unit["RestrictAddressFamilies"] == "AF_UNIX AF_INET AF_INET6"
    assert "--foreground" in unit["ExecStart"]


def test_unit_puts_the_admin_socket_where_ctl_looks_first() -> None:
    words = unit_settings()["ExecStart"].split()
    socket = words[words.index("--admin-socket") + 1]
    assert socket == CTL_SOCKETS[0]
    assert socket.startswith("/run/rtpcluster/")


def test_dashboard_panels() -> None:
    dashboard = json.loads((CONFIG / "grafana-dashboard.json").read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    titles = " ".join(panel["title"] for panel in dashboard["panels"]).lower()
    for topic in ("members up", "sessions", "utilisation", "commands/s", "p99", "broadcast"):
        assert topic in titles, topic
    assert "failover" in titles
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}"
            assert "rtpcluster_" in target["expr"]
