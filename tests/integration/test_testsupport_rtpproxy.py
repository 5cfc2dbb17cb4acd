"""The test-support RTPproxy against rtp-io: ready when started, asked, hung, killed, restarted."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import pytest

from tests.conftest import MemberFactory
from testsupport import RtpProxy, ask, free_port, gone, next_port_range

VERSION = "20040107\n"


@pytest.mark.parametrize("kind", ["udp", "udp6", "unix", "cunix", "tcp"])
def test_a_started_rtpproxy_answers_at_once_on_every_kind(
    rtpproxy: MemberFactory, kind: str
) -> None:
    proxy = rtpproxy(kind)
    assert proxy.kind == kind
    assert proxy.ask("V") == VERSION  # no wait: its READY line comes once it is bound
    offer = proxy.ask("U c1 127.0.0.1 4000 f")
    assert offer is not None and proxy.owns_port(int(offer.split()[0]))
    assert proxy.nofile > 0


def test_a_hung_rtpproxy_is_silent_and_still_stops(rtpproxy: MemberFactory) -> None:
    proxy = rtpproxy()
    pid = proxy.pid
    proxy.hang()
    assert proxy.ask("V", timeout=0.3) is None
    proxy.unhang()
    assert proxy.ask("V") == VERSION
    proxy.hang()
    proxy.stop()  # SIGCONT, then SIGTERM: a stopped process would not see SIGTERM
    assert gone(pid) and proxy.process is None


def test_a_killed_rtpproxy_starts_again_on_its_sockets(
    rtpproxy: MemberFactory, tmp_path: Path
) -> None:
    proxy = rtpproxy("unix")  # its socket file is left behind by the SIGKILL
    old = proxy.pid
    proxy.kill()
    assert gone(old) and ask(proxy.control, "V") is None
    proxy.start(tmp_path)
    try:
        assert proxy.pid != old and proxy.ask("V") == VERSION
    finally:
        proxy.stop()


def test_more_control_sockets_and_options(tmp_path: Path) -> None:
    low, high = next_port_range()
    proxy = RtpProxy(
        control=f"udp:127.0.0.1:{free_port()}",
        port_min=low,
        port_max=high,
        extra=["-T", "600"],
        name="two",
        workdir=tmp_path,
        more_controls=[f"unix:{tmp_path / 'two.sock'}"],
    )
    proxy.start()
    try:
        unix = proxy.control_of("unix")
        assert unix is not None and ask(unix, "V") == VERSION
        assert proxy.control_of("tcp") is None
        assert proxy.arguments()[-2:] == ["-T", "600"]
        proxy.signal(signal.SIGSTOP)
        assert proxy.ask("V", timeout=0.3) is None
    finally:
        proxy.stop()
    assert proxy.log_path == tmp_path / "two.log"


def test_an_rtpproxy_that_cannot_start_says_why(tmp_path: Path) -> None:
    low, high = next_port_range()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        proxy = RtpProxy(f"udp:127.0.0.1:{port}", low, high, workdir=tmp_path)
        with pytest.raises(RuntimeError, match=r"did not start: .*Address already in use"):
            proxy.start()
    assert proxy.process is None
