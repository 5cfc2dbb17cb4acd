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
# Deletes kept for a member that does not answer: how many, and for how long.
DEFERRED_MAX = 100_000
DEFERRED_TTL = 3600.0


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
        self.deferred: deque[tuple[float, str]] = deque()  # (deadline, command) to deliver
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
        """Keep a delete for delivery when the member answers again."""
        if len(self.deferred) >= DEFERRED_MAX:
            self.deferred.popleft()
        self.deferred.append((now + DEFERRED_TTL, command))

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
