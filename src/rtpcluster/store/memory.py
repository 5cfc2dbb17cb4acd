"""The ``memory`` session store: nothing is shared, today's behaviour.

Every write is a no-op and every lookup a miss, answered at once; the in-process
SessionTable is all there is. ``--state-file`` still hands the table over across a
graceful restart.
"""

from __future__ import annotations

import trio

from rtpcluster.store.base import SessionStore, StoreCounters


class MemoryStore(SessionStore):
    remote = False

    def __init__(self) -> None:
        self.counters = StoreCounters(store_up=1)

    def configure(self, cluster: str, idle_timeout: float) -> None:
        pass

    def forget(self, cluster: str) -> None:
        pass

    def bind(self, cluster: str, call_id: str, member: str) -> None:
        pass

    def refresh(self, cluster: str, call_id: str, member: str) -> None:
        pass

    def unbind(self, cluster: str, call_id: str) -> None:
        pass

    async def lookup(self, cluster: str, call_id: str) -> str | None:
        return None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()  # nothing to write: the task ends here

    async def flushed(self) -> None:
        pass

    async def wait_until_up(self, up: bool = True) -> None:
        if not up:
            await trio.sleep_forever()  # the memory store is never down

    def pending(self) -> int:
        return 0

    def describe(self) -> str:
        return "memory (not shared)"
