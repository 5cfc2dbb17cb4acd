"""Member: one RTPproxy of a cluster, its configuration and what we know of it now."""

from __future__ import annotations

from collections import deque

import trio

from rtpcluster.config.models import MemberConfig, MemberStatus
from rtpcluster.protocol import reply_lines
from rtpcluster.protocol.command import Command
from rtpcluster.transport.member_client import (
    MemberClient,
    MemberError,
    ReplyCallback,
    UdpMemberClient,
    make_client,
)

# Consecutive failed commands or heartbeats after which a member is taken offline.
OFFLINE_AFTER_FAILURES = 2
# Deletes kept for a member that does not answer: how many, and for how long. 100,000 is
# 25 times a member's default capacity (4,000 sessions): every call on it can end while
# it is away, several times over. About 240 bytes each with a 36-character call-id and two
# tags (the command string, its tuple, a deque and a set slot; tracemalloc): 24 MB full.
DEFERRED_MAX = 100_000
DEFERRED_TTL = 3600.0


class DeferredDeletes:
    """Deletes kept for a member that did not answer, delivered oldest first.

    Each command is kept once: a second copy of the same delete (same modifiers, call-id
    and tags) is the same delete. The Router keeps only deletes for calls it bound to the
    member and for offers it left unanswered there, so a full queue means that many real
    calls; a delete that finds it full is dropped, not an older one, and counted in
    :attr:`dropped`. Read like a deque: ``deferred[0]`` is the oldest ``(deadline,
    command)``, ``popleft()`` removes it.
    """

    __slots__ = ("_commands", "_queue", "dropped", "max_entries", "ttl")

    def __init__(self, max_entries: int = DEFERRED_MAX, ttl: float = DEFERRED_TTL) -> None:
        self.max_entries = max_entries
        self.ttl = ttl
        self._queue: deque[tuple[float, str]] = deque()  # (deadline, command), oldest first
        self._commands: set[str] = set()  # the commands in the queue
        self.dropped = 0  # deletes refused because the queue was full

    def __len__(self) -> int:
        return len(self._queue)

    def __bool__(self) -> bool:
        return bool(self._queue)

    def __getitem__(self, index: int) -> tuple[float, str]:
        return self._queue[index]

    def add(self, command: str, now: float) -> bool:
        """Keep ``command`` until ``now + ttl``; False if it was kept already or is dropped."""
        if command in self._commands:
            return False
        if len(self._queue) >= self.max_entries:
            self.dropped += 1
            return False
        self._queue.append((now + self.ttl, command))
        self._commands.add(command)
        return True

    def popleft(self) -> tuple[float, str]:
        entry = self._queue.popleft()
        self._commands.discard(entry[1])
        return entry


class Member:
    """Live state of one member. The Router and the health task both update it."""

    def __init__(self, config: MemberConfig, client: MemberClient | None = None) -> None:
        self.config = config
        self.client: MemberClient = client or make_client(config.address, config.cmd_out_address)
        self.status: MemberStatus = config.status
        self.online = False
        self.removed = False
        self.leaving = False  # being drained out of the cluster (modify ... delete)
        self.reported_sessions = 0  # "active sessions" of the last heartbeat
        self.placed_since_report = 0  # new sessions we placed since that heartbeat
        self.info: dict[str, int | float] = {}  # last Ib reply
        self.stats_cache: dict[str, int | float] = {}  # last good G value per name
        self.capabilities: dict[str, bool] = {}  # VF date -> supported
        self.failures = 0
        self.deferred = DeferredDeletes(DEFERRED_MAX)  # deletes to deliver when it is back
        self.state_changed = trio.Event()  # set (and replaced) on online/offline changes
        self.drain_deadline: float | None = None
        self.zero_heartbeats = 0  # consecutive heartbeats reporting no active session
        self.heartbeats = 0  # heartbeats answered so far

    # --- configuration ------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def weight(self) -> int:
        return self.config.weight

    @property
    def capacity(self) -> int:
        return self.config.capacity

    # --- load -----------------------------------------------------------------------------

    @property
    def load(self) -> int:
        return self.reported_sessions + self.placed_since_report

    @property
    def utilisation(self) -> float:
        return self.load / self.capacity

    @property
    def accepts_new_sessions(self) -> bool:
        return self.online and self.status is MemberStatus.ACTIVE and not self.removed

    # --- talking to it ----------------------------------------------------------------------

    @property
    def can_submit(self) -> bool:
        """True when commands can go out without a task (a UDP member)."""
        return isinstance(self.client, UdpMemberClient)

    def submit(self, command: Command, timeout: float, callback: ReplyCallback) -> None:
        """Send without waiting; the caller's callback counts success or failure."""
        client = self.client
        assert isinstance(client, UdpMemberClient)
        client.submit(command.serialize(), timeout, callback)

    async def send(self, command: Command | str, timeout: float) -> str:
        """Send a command; count the outcome towards the member's health."""
        if isinstance(command, Command):
            text, lines = command.serialize(), reply_lines(command)
        else:
            text, lines = command, 1
        try:
            reply = await self.client.request(text, timeout, lines)
        except MemberError:
            self.note_failure()
            raise
        self.failures = 0
        return reply

    def note_failure(self) -> None:
        self.failures += 1
        if self.failures >= OFFLINE_AFTER_FAILURES and self.online:
            self.set_online(False)

    def set_online(self, online: bool) -> None:
        if online == self.online:
            return
        self.online = online
        if online:
            self.failures = 0
        event, self.state_changed = self.state_changed, trio.Event()
        event.set()

    def defer(self, command: str, now: float) -> None:
        """Keep a delete for delivery when the member answers again (once, bounded)."""
        self.deferred.add(command, now)

    def heartbeat(self, info: dict[str, int | float], placed_before: int) -> None:
        """A heartbeat reply; ``placed_before`` sessions were placed when it was asked.

        Those are in the member's figure now; sessions placed while the heartbeat was
        on its way are not, so they stay counted on top of it.
        """
        self.heartbeats += 1
        self.info = info
        self.reported_sessions = int(info.get("active sessions", 0))
        self.placed_since_report = max(0, self.placed_since_report - placed_before)
        if self.reported_sessions == 0:
            self.zero_heartbeats += 1
        else:
            self.zero_heartbeats = 0
