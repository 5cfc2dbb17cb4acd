"""The test-support package's own pure parts: control socket names, cookies, waiting,
stopping by PID, and the markers of the end-to-end data files."""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtpcluster.config import load_config
from tests.e2e.e2e_harness import fill, read_data
from testsupport import (
    FAST_PROBES,
    ControlSocket,
    MemberEntry,
    NotifyListener,
    children_of,
    cluster_xml,
    free_port,
    free_port_block,
    gone,
    new_cookie,
    next_port_range,
    stop_process,
    wait_until,
)
from testsupport.control import DEFAULT_PORT, reply_to
from testsupport.ports import LISTEN_BASE, RANGE_BASE, RANGE_SIZE, RANGE_SLOTS


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("udp:127.0.0.1:5000", ControlSocket("udp", host="127.0.0.1", port=5000)),
        ("udp6:[::1]:5000", ControlSocket("udp6", host="::1", port=5000)),
        ("udp:127.0.0.1", ControlSocket("udp", host="127.0.0.1", port=DEFAULT_PORT)),
        ("udp6:[::1]", ControlSocket("udp6", host="::1", port=DEFAULT_PORT)),
        ("udp6:::1", ControlSocket("udp6", host="::1", port=DEFAULT_PORT)),
        ("tcp:localhost:1", ControlSocket("tcp", host="localhost", port=1)),
        ("unix:/run/rtpproxy.sock", ControlSocket("unix", path="/run/rtpproxy.sock")),
        ("cunix:/tmp/a:b.sock", ControlSocket("cunix", path="/tmp/a:b.sock")),
    ],
)
def test_control_socket_names(spec: str, parsed: ControlSocket) -> None:
    assert ControlSocket.parse(spec) == parsed


@pytest.mark.parametrize("spec", ["udp", "udp:", "unix:", "x:1.2.3.4:5", "udp:h:port"])
def test_control_socket_names_that_are_not(spec: str) -> None:
    with pytest.raises(ValueError):
        ControlSocket.parse(spec)


@given(
    kind=st.sampled_from(["udp", "udp6", "tcp"]),
    host=st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)),
    port=st.integers(1, 65535),
)
def test_control_socket_names_round_trip(
    kind: str, host: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int
) -> None:
    shown = f"[{host}]" if host.version == 6 else str(host)
    parsed = ControlSocket.parse(f"{kind}:{shown}:{port}")
    assert (parsed.kind, parsed.host, parsed.port) == (kind, str(host), port)
    assert parsed.family == (socket.AF_INET6 if host.version == 6 else socket.AF_INET)
    assert parsed.is_datagram == kind.startswith("udp")


def test_a_reply_counts_only_with_its_own_cookie() -> None:
    cookie = new_cookie()
    assert cookie != new_cookie()
    assert reply_to(cookie, f"{cookie} 20040107\n".encode()) == "20040107\n"
    assert reply_to(cookie, b"other 20040107\n") is None
    assert reply_to(cookie, cookie.encode()) == ""  # its cookie alone: an empty reply


def test_ports_are_free_and_ranges_are_blocks() -> None:
    for kind, family in [
        (socket.SOCK_DGRAM, socket.AF_INET),
        (socket.SOCK_STREAM, socket.AF_INET),
        (socket.SOCK_DGRAM, socket.AF_INET6),
    ]:
        port = free_port(kind, family)
        # outside the kernel's ephemeral range and the RTP blocks, free for both kinds
        assert LISTEN_BASE <= port < min(RANGE_BASE, 32768)
        for other in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            with socket.socket(family, other) as sock:
                sock.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", port))
    low, high = next_port_range()
    assert high - low + 1 == RANGE_SIZE
    assert low >= RANGE_BASE and high < RANGE_BASE + RANGE_SLOTS * RANGE_SIZE
    assert next_port_range() != (low, high)


def test_free_ports_are_distinct_and_skip_a_bound_one() -> None:
    seen = [free_port() for _ in range(50)]
    assert len(set(seen)) == 50
    # sipp's media block: even, and none of its ports handed out before or after
    block = free_port_block(4, align=2)
    assert block % 2 == 0
    after = free_port()
    assert not set(range(block, block + 4)) & {*seen, after}
    # a port bound by TCP only is not handed out for UDP either
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", after + 1))
        held.listen()
        assert free_port(socket.SOCK_DGRAM) != after + 1


def test_wait_until_returns_once_true_and_names_what_it_waited_for() -> None:
    calls = iter([False, False, True])
    wait_until(lambda: next(calls), "the third call", timeout=10, interval=0)
    asked: list[int] = []

    def what() -> str:
        asked.append(1)
        return "something that never came"

    with pytest.raises(AssertionError, match="waiting for something that never came"):
        wait_until(lambda: False, what, timeout=0.05, interval=0.01)
    assert asked == [1]  # the message is asked for once, at the deadline


def test_wait_until_stops_at_an_error_of_the_condition() -> None:
    def exited() -> bool:
        raise RuntimeError("the process exited")

    with pytest.raises(RuntimeError, match="exited"):
        wait_until(exited, "never", timeout=10)


# A parent that forks a worker ignoring SIGTERM, like Kamailio's children.
_FORKING_PARENT = """
import signal, subprocess, sys
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c",
    "import signal, sys; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True);"
    " sys.stdin.read()"], stdout=subprocess.PIPE, stdin=subprocess.PIPE)
child.stdout.readline()
print("forked", flush=True)
sys.stdin.read()
"""


def test_stop_process_kills_what_ignores_sigterm_and_its_workers() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _FORKING_PARENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"forked\n"
        workers = children_of(proc.pid)
        assert len(workers) == 1 and not gone(workers[0])
        stop_process(proc, grace=0.2)
        assert proc.returncode == -signal.SIGKILL
        wait_until(lambda: gone(workers[0]), "the worker to be killed too", timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()
        proc.stdout.close()


def test_gone_is_true_for_a_reaped_process_and_false_for_this_one() -> None:
    with subprocess.Popen([sys.executable, "-c", "pass"]) as finished:
        finished.wait()
    assert gone(finished.pid)
    assert not gone(os.getpid())


# The markers each end-to-end data file has: the harness gives exactly these values.
DATA_MARKERS = {
    "kamailio.cfg": {
        "children",
        "host",
        "port",
        "modules",
        "rtpproxy_sock",
        "tout",
        "retr",
        "disable_tout",
        "uas_host",
        "uas_port",
    },
    "uac.xml": {"pcap", "talk_ms"},
    "uas.xml": set(),
    "uac_waits_for_bye.xml": set(),
}


@pytest.mark.parametrize("name", sorted(DATA_MARKERS))
def test_every_marker_of_an_e2e_data_file_is_filled(name: str) -> None:
    template = read_data(name)
    values = {key: f"<{key}>" for key in DATA_MARKERS[name]}
    text = fill(template, **values)
    assert all(f"<{key}>" in text for key in values)
    assert "@" not in text.replace("@[", "")  # sipp's user@[host] is not a marker
    for key in DATA_MARKERS[name]:
        with pytest.raises(KeyError, match=key):
            fill(template, **{k: v for k, v in values.items() if k != key})


def test_cluster_xml_is_a_config_the_service_loads(tmp_path: Path) -> None:
    members = [
        MemberEntry("m1", "127.0.0.1:5001", weight=300, capacity=50, status="active"),
        MemberEntry("m2", str(tmp_path / "m2.sock"), protocol="unix"),
    ]
    text = cluster_xml(
        "c<1>",  # escaped in the XML, itself again once loaded
        5000,
        members,
        listen=[f"unix:{tmp_path / 'ctl.sock'}"],
        notify=(5002, "/run/b2bua/"),
        settings=FAST_PROBES,
        http="127.0.0.1:8080",
    )
    path = tmp_path / "rtp_cluster.xml"
    path.write_text(text)
    config = load_config(path)
    [cluster] = config.clusters
    assert cluster.name == "c<1>"
    assert [str(e) for e in cluster.listen] == [
        "udp:127.0.0.1:5000",
        f"unix:{tmp_path / 'ctl.sock'}",
    ]
    assert cluster.heartbeat_interval == 0.2
    assert cluster.disconnect_notify is not None
    first, second = cluster.members
    assert (first.name, first.weight, first.capacity) == ("m1", 300, 50)
    assert second.name == "m2"
    assert str(config.http) == "tcp:127.0.0.1:8080"


def test_a_notification_is_awaited_and_a_process_exit_ends_the_wait(tmp_path: Path) -> None:
    with NotifyListener(tmp_path / "n.sock") as listener:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as service:
            service.sendto(b"STATUS=starting", str(listener.path))
            service.sendto(b"READY=1\nSTATUS=up", str(listener.path))
        fields = listener.until(lambda f: f.get("READY") == "1", timeout=10)
        assert fields == {"READY": "1", "STATUS": "up"}
        with (
            subprocess.Popen([sys.executable, "-c", "pass"]) as silent,
            pytest.raises(RuntimeError, match="exited with 0"),
        ):
            listener.until(lambda f: True, timeout=30, process=silent)
    assert not listener.path.exists()
