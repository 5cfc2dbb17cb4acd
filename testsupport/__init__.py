"""Support for the tests, the end-to-end rig and the benchmark: real programs, run here.

Everything that starts a real program lives in this package, so that ``tests/``,
``tests/e2e/`` and ``benchmarks/`` start, ask and stop them one way:

* :mod:`testsupport.rtpproxy`: an RTPproxy from rtp-io in a subprocess
  (:mod:`testsupport.rtpproxy_child` is that subprocess);
* :mod:`testsupport.rtpcluster`: ``rtpcluster serve --foreground`` and its config,
  ready when its systemd notification (:mod:`testsupport.notify`) says so;
* :mod:`testsupport.redis_server`: a redis-server for the session-store tests;
* :mod:`testsupport.prometheus`: a Prometheus server scraping loopback targets (the
  observability tests, the benchmark's row with the HTTP endpoint scraped);
* :mod:`testsupport.programs`: finding external programs, or skipping clearly;
* :mod:`testsupport.control`: control clients with cookies (blocking and trio);
* :mod:`testsupport.ports`: free ports and RTP port ranges;
* :mod:`testsupport.processes`: stopping by PID;
* :mod:`testsupport.wait`: the one poll with a deadline, for what cannot be awaited.

A top-level package beside ``tests/`` and ``benchmarks/`` (not inside ``tests/``) so
that the benchmark does not import the test suite: pytest finds it through
``pythonpath = ["."]``, ``python -m benchmarks.run`` through its working directory.
It is not part of the installed ``rtpcluster`` and imports nothing from it; only
``programs`` and ``redis_server`` import pytest (they skip tests), so they are not
imported here.
"""

from testsupport.control import ControlSocket, UdpControlClient, ask, new_cookie, stream_command
from testsupport.notify import NotifyListener
from testsupport.ports import free_port, free_port_block, next_port_range
from testsupport.processes import children_of, gone, stop_process
from testsupport.rtpcluster import (
    FAST_PROBES,
    MemberEntry,
    RtpclusterProcess,
    cluster_xml,
    run_rtpcluster,
)
from testsupport.rtpproxy import RtpProxy
from testsupport.wait import wait_until

__all__ = [
    "FAST_PROBES",
    "ControlSocket",
    "MemberEntry",
    "NotifyListener",
    "RtpProxy",
    "RtpclusterProcess",
    "UdpControlClient",
    "ask",
    "children_of",
    "cluster_xml",
    "free_port",
    "free_port_block",
    "gone",
    "new_cookie",
    "next_port_range",
    "run_rtpcluster",
    "stop_process",
    "stream_command",
    "wait_until",
]
