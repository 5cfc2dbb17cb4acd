"""Sizes of what the transport asks of the kernel: socket buffers and reads."""

from __future__ import annotations

# A UDP socket's receive buffer, listeners' and member clients' alike: 4 MiB holds about
# 20,000 short commands or replies, a burst of several seconds at the rate one process
# serves, where the default (about 200 KiB) drops datagrams after a few hundred.
UDP_RCVBUF = 4 * 1024 * 1024
# One read from a stream, or one datagram from a member: 64 KiB is the largest datagram
# there is, and a read of it costs no more than a smaller one until data is there.
RECV_SIZE = 65536
