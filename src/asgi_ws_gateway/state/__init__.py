"""Shared state for limits, quotas and concurrency leases: in memory (default) or in Redis."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports
from .base import Decision, Store, StoreUnavailable, retry_after, store_key
from .leases import LeaseKeeper
from .memory import MemoryState

if TYPE_CHECKING:
    from .redis import RedisState

if not TYPE_CHECKING:  # redis-py (90 ms) is imported by the first configuration with a Redis store
    __getattr__, __dir__ = lazy_exports(__name__, {"RedisState": ".redis"})

__all__ = [
    "Decision",
    "LeaseKeeper",
    "MemoryState",
    "RedisState",
    "Store",
    "StoreUnavailable",
    "retry_after",
    "store_key",
]
