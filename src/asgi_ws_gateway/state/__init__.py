"""Shared state for limits, quotas and concurrency leases: in memory (default) or in Redis."""

from __future__ import annotations

from .base import Decision, Store, StoreUnavailable, retry_after, store_key
from .leases import LeaseKeeper
from .memory import MemoryState

__all__ = ["Decision", "LeaseKeeper", "MemoryState", "Store", "StoreUnavailable", "retry_after", "store_key"]
