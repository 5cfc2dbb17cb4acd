"""CommandFront counts every reply it sends once: by op and result, with its latency.

The executors are replaced by a dispatch that keeps each command's ``respond`` until the
test answers it, so a retransmit can arrive while its first copy is in flight.
"""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st

from rtpcluster.cluster.counters import COMMAND_RESULTS, ClusterCounters
from rtpcluster.cluster.front import CommandFront
from rtpcluster.protocol import MAX_DATAGRAM_BYTES

ADDR = ("127.0.0.1", 5060)


class Rig:
    def __init__(self) -> None:
        self.counters = ClusterCounters()
        self.pending: list[tuple[bytes, Callable[[str], None]]] = []
        self.sent: list[bytes] = []
        self.front = CommandFront(self._dispatch, self._handle, self.counters)

    def _dispatch(
        self, body: bytes, respond: Callable[[str], None], abandon: Callable[[], None]
    ) -> None:
        self.pending.append((body, respond))

    async def _handle(self, data: bytes) -> str:
        return "E997\n" if data.startswith(b"L") else "0\n"

    def datagram(self, data: bytes) -> None:
        self.front.on_datagram(data, ADDR, lambda out, addr: self.sent.append(out))

    def answer(self, reply: str, index: int = 0) -> None:
        _, respond = self.pending.pop(index)
        respond(reply)

    def counted(self) -> dict[tuple[str, str], int]:
        return {
            (op, result): n
            for op, results in self.counters.commands.items()
            for result, n in results.items()
            if n
        }


def test_each_reply_is_counted_by_op_and_result() -> None:
    rig = Rig()
    for cookie, body in ((b"a", b"U c1 1.2.3.4 5 f"), (b"b", b"l c1 1.2.3.4 5 f t"), (b"c", b"K")):
        rig.datagram(cookie + b" " + body)
    rig.answer("35000 127.0.0.1\n")
    rig.answer("E997\n")
    rig.answer("E0\n")
    assert rig.counted() == {("U", "ok"): 1, ("L", "timeout"): 1, ("-", "error"): 1}
    assert rig.counters.latency.count == 3 and rig.counters.latency.total_seconds >= 0


def test_a_retransmit_is_cached_once_answered_and_nothing_while_in_flight() -> None:
    rig = Rig()
    rig.datagram(b"x D c1 f")
    rig.datagram(b"x D c1 f")  # while the first is in flight: absorbed, no reply
    assert rig.counters.latency.count == 0 and rig.sent == []
    rig.answer("0\n")
    rig.datagram(b"x D c1 f")  # now answered from the cache
    assert rig.sent == [b"x 0\n", b"x 0\n"]
    assert rig.counted() == {("D", "ok"): 1, ("D", "cached"): 1}
    assert rig.counters.retransmits == 1 and rig.counters.latency.count == 2


def test_an_oversized_datagram_is_an_error_reply_and_counted() -> None:
    rig = Rig()
    rig.datagram(b"big U " + b"x" * MAX_DATAGRAM_BYTES)
    assert rig.sent == [b"big E5\n"] and rig.pending == []
    assert rig.counted() == {("U", "error"): 1}


def test_a_datagram_without_a_cookie_gets_no_reply_and_counts_nothing() -> None:
    rig = Rig()
    rig.datagram(b"   ")
    assert rig.counted() == {} and rig.counters.latency.count == 0


async def test_stream_commands_are_counted_as_they_are_answered() -> None:
    rig = Rig()
    assert await rig.front.on_command(b"L c1 1.2.3.4 5 f t") == "E997\n"
    assert await rig.front.on_command(b"D c1 f") == "0\n"
    assert rig.counted() == {("L", "timeout"): 1, ("D", "ok"): 1}
    assert rig.counters.latency.count == 2


replies = st.sampled_from(["0\n", "35000 127.0.0.1\n", "E997\n", "E5\n", "E0\n", "1\n"])
steps = st.lists(
    st.tuples(
        st.sampled_from(["send", "answer"]),
        st.integers(0, 5),  # which cookie is sent, or which pending command answered
        st.sampled_from([b"U c", b"D c", b"V", b"K", b""]),
        replies,
    ),
    max_size=60,
)


@given(steps)
def test_the_histogram_counts_every_reply_sent_and_only_those(
    script: list[tuple[str, int, bytes, str]],
) -> None:
    rig = Rig()
    for action, number, body, reply in script:
        if action == "send":
            rig.datagram(b"k%d " % number + body)
        elif rig.pending:
            rig.answer(reply, number % len(rig.pending))
    counters = rig.counters
    counted = rig.counted()
    assert counters.latency.count == sum(counted.values()) == len(rig.sent)
    cached = sum(n for (_, result), n in counted.items() if result == "cached")
    assert cached == counters.retransmits
    assert {result for _, result in counted} <= set(COMMAND_RESULTS)
