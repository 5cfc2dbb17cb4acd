"""One real RTPproxy (rtp-io) in this process, until stdin closes or SIGTERM arrives.

Started by :class:`benchmarks.procs.RtpproxyProcess` as ``python -m benchmarks.member``,
so that it has a PID of its own to SIGKILL or SIGSTOP like a real RTPproxy.
Prints ``READY`` once the RTPproxy is running.
"""

from __future__ import annotations

import argparse
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


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="benchmarks.member")
    ap.add_argument("--control", action="append", required=True, help="-s spec, repeatable")
    ap.add_argument("--port-min", type=int, required=True)
    ap.add_argument("--port-max", type=int, required=True)
    ap.add_argument("--ttl", type=int, default=600)
    args = ap.parse_args(argv)
    nofile = raise_nofile()

    import rtp.io

    extra: list[str] = []
    for spec in args.control:
        extra += ["-s", spec]
    extra += ["-l", "127.0.0.1", "-F", "-d", "err"]
    extra += ["-m", str(args.port_min), "-M", str(args.port_max)]
    extra += ["-T", str(args.ttl), "-W", str(args.ttl)]
    proxy = rtp.io.rtpproxy(extra_args=extra, modules=[])

    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    print(f"READY nofile={nofile}", flush=True)

    def wait_stdin() -> None:
        sys.stdin.read()  # returns when the parent closes our stdin (or dies)
        done.set()

    threading.Thread(target=wait_stdin, daemon=True).start()
    while not done.wait(0.5):
        pass
    del proxy


if __name__ == "__main__":
    main()
