from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from testsupport import RtpProxy, free_port, next_port_range

MemberFactory = Callable[..., RtpProxy]


@pytest.fixture
def rtpproxy(tmp_path: Path) -> Iterator[MemberFactory]:
    """Start real RTPproxies: ``rtpproxy()`` (udp), ``rtpproxy("unix")``, ``("cunix")``...

    Every one is stopped (by its PID) when the test ends; each one's log is
    ``rtpp<N>.log`` in the test's ``tmp_path``.
    """
    started: list[RtpProxy] = []

    def start(kind: str = "udp", extra: list[str] | None = None) -> RtpProxy:
        if kind in ("unix", "cunix"):
            control = f"{kind}:{tmp_path / f'rtpp{len(started)}.sock'}"
        elif kind == "udp6":
            control = f"udp6:[::1]:{free_port(family=socket.AF_INET6)}"
        elif kind == "tcp":
            control = f"tcp:127.0.0.1:{free_port(socket.SOCK_STREAM)}"  # free for TCP
        else:
            control = f"udp:127.0.0.1:{free_port()}"
        low, high = next_port_range()
        proxy = RtpProxy(
            control=control,
            port_min=low,
            port_max=high,
            extra=extra or [],
            name=f"rtpp{len(started)}",
        )
        proxy.start(tmp_path)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()
