"""``rtpcluster serve`` as a process: under systemd's eyes (this test holds
$NOTIFY_SOCKET), and where its HTTP endpoint comes from.

One process run with a watchdog and ``--log-format json``: READY=1 comes once the
listeners are bound, STATUS follows the members, WATCHDOG=1 keeps coming, a SIGHUP is
framed by RELOADING=1 and READY=1, SIGTERM sends STOPPING=1, and every log line is JSON.
"""

from __future__ import annotations

import json
import re
import signal
import socket

import pytest

from tests.conftest import MemberFactory
from tests.integration.harness import OFFLINE_WITH_CAUSE
from tests.integration.observe_harness import get, rtpcluster_process
from testsupport import free_port


def test_notifications_and_json_logs_of_a_real_run(rtpproxy: MemberFactory) -> None:
    members = [("m0", rtpproxy()), ("m1", rtpproxy())]
    with rtpcluster_process(members) as cluster:
        ready = cluster.start("--log-format", "json", env={"WATCHDOG_USEC": "400000"})
        assert ready["READY"] == "1"
        # READY=1 came after every listener was bound: all three answer at once
        assert get(cluster.url + "/healthz")[0] == 200
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(5)
            client.sendto(b"c1 V", ("127.0.0.1", cluster.udp_port))
            assert client.recv(100) == b"c1 20040107\n"
        assert cluster.admin.exists()

        # STATUS follows the members: in READY=1 already if they were online by then
        if "2 of 2" not in ready["STATUS"]:
            ready = cluster.notify.until(lambda f: "2 of 2" in f.get("STATUS", ""))
        assert ready["STATUS"] == "1 cluster, 2 of 2 members online"
        cluster.notify.until(lambda f: f == {"WATCHDOG": "1"})
        cluster.notify.until(lambda f: f == {"WATCHDOG": "1"})

        members[0][1].kill()
        offline = cluster.notify.until(lambda f: "offline" in f.get("STATUS", ""))
        assert offline["STATUS"] == "1 cluster, 1 of 2 members online; offline: c1/m0"

        cluster.signal(signal.SIGHUP)
        reloading = cluster.notify.until(lambda f: "RELOADING" in f)
        assert reloading["RELOADING"] == "1" and int(reloading["MONOTONIC_USEC"]) > 0
        assert cluster.notify.until(lambda f: "READY" in f)["READY"] == "1"

        cluster.signal(signal.SIGTERM)
        assert cluster.notify.until(lambda f: "STOPPING" in f)["STOPPING"] == "1"
        assert cluster.exit_code() == 0
        lines = cluster.log_path.read_text().splitlines()

    assert lines
    documents = [json.loads(line) for line in lines]  # every line is one JSON object
    for document in documents:
        assert {"time", "level", "logger", "message"} <= document.keys()
    messages = [d["message"] for d in documents]
    assert any("reload on SIGHUP" in m for m in messages)
    assert any(m.startswith("Running on http://127.0.0.1:") for m in messages)
    # the SIGKILLed member: one "offline" line with its cause, keyed by cluster and member
    [offline] = [d for d in documents if d.get("member") == "m0" and ": offline (" in d["message"]]
    assert offline["cluster"] == "c1" and offline["level"] == "WARNING"
    assert re.fullmatch(OFFLINE_WITH_CAUSE, offline["message"]), offline


def test_http_from_the_xml_and_the_flag_winning_over_it(rtpproxy: MemberFactory) -> None:
    members = [("m0", rtpproxy())]
    xml_port = free_port(socket.SOCK_STREAM)
    with rtpcluster_process(members, http_in_xml=xml_port) as cluster:
        cluster.start(http_flag=False)  # <http> alone turns the endpoint on
        assert get(f"http://127.0.0.1:{xml_port}/healthz") == (200, b"ok\n")
        assert cluster.stop() == 0
        cluster.start()  # --http on another port wins over <http>
        assert get(cluster.url + "/healthz") == (200, b"ok\n")
        with pytest.raises(OSError):
            get(f"http://127.0.0.1:{xml_port}/healthz")
