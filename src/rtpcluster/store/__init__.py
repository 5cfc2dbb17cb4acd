"""Session stores: where call affinity (call-id -> member name) is shared.

``memory`` keeps today's behaviour (nothing shared); ``redis://``, ``rediss://`` and
``unix://`` share it through Redis or Valkey (the optional ``rtpcluster[redis]`` extra).
"""

from __future__ import annotations

from typing import Any

from rtpcluster.store.base import DELAY_BOUNDS, SessionStore, StoreCounters
from rtpcluster.store.memory import MemoryStore
from rtpcluster.store.statefile import (
    LoadedState,
    StateFileError,
    read_state_file,
    write_state_file,
)
from rtpcluster.store.url import StoreUrl, StoreUrlError, parse_store_url


class StoreUnavailable(Exception):
    """A store that cannot be opened here (the extra missing, TLS files unreadable); one line."""


def open_store(url: str | StoreUrl, **options: Any) -> SessionStore:
    """The store for ``url``; ``options`` go to the Redis store (deadlines, bounds).

    Raises StoreUrlError for a bad URL, StoreUnavailable when coredis is missing or a
    ``rediss://`` store's TLS files cannot be used. Nothing is connected here: the
    store's ``run`` task does that.
    """
    parsed = url if isinstance(url, StoreUrl) else parse_store_url(url)
    if parsed.is_memory:
        return MemoryStore()
    try:
        from rtpcluster.store.redis import RedisStore, TlsFilesError
    except ImportError as exc:
        raise StoreUnavailable(
            f"session store {parsed}: needs the coredis package "
            f"(pip install 'rtpcluster[redis]'): {exc}"
        ) from None
    try:
        return RedisStore(parsed, **options)
    except TlsFilesError as exc:
        raise StoreUnavailable(str(exc)) from None


__all__ = [
    "DELAY_BOUNDS",
    "LoadedState",
    "MemoryStore",
    "SessionStore",
    "StateFileError",
    "StoreCounters",
    "StoreUnavailable",
    "StoreUrl",
    "StoreUrlError",
    "open_store",
    "parse_store_url",
    "read_state_file",
    "write_state_file",
]
