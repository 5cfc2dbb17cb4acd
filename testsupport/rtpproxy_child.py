"""One real RTPproxy (rtp-io) in this process; started by :class:`testsupport.RtpProxy`.

``python -P rtpproxy_child.py RTPPROXY-ARGS...``: starts the RTPproxy with those
arguments, prints ``READY nofile=N`` once it runs (its control sockets are bound by
then), and lives until its stdin closes (the parent stopped or died) or SIGTERM comes.
A process of its own, so that a test can SIGKILL or SIGSTOP it like a real RTPproxy.
Imports nothing of ours: it runs as a script, not as part of the package.
"""

from __future__ import annotations

import os
import resource
import signal
import sys
import threading


def raise_nofile() -> int:
    """Raise the open-files limit to the hard limit (each RTP session holds sockets)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def main(args: list[str]) -> None:
    nofile = raise_nofile()
    import rtp.io

    try:
        # Runs while this object lives (rtp-io stops the RTPproxy when it goes).
        _running = rtp.io.rtpproxy(extra_args=args, modules=[])
    except RuntimeError as exc:  # RTPproxy has logged why (a port in use, a bad option)
        sys.exit(f"rtp-io: {exc}")
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())

    def wait_stdin() -> None:
        sys.stdin.read()  # returns when the parent closes our stdin (or dies)
        done.set()

    threading.Thread(target=wait_stdin, daemon=True).start()
    print(f"READY nofile={nofile}", flush=True)
    # The main thread must wake to run the SIGTERM handler: wait in 0.5 s steps.
    while not done.wait(0.5):
        pass
    # Out at once, as a SIGKILL would: rtp-io's own teardown takes a second,
    # a second per member in every test, and leaves nothing that this does not.
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
