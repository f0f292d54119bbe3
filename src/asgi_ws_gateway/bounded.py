"""One bounded store for what the gateway remembers of client-chosen values (header names, paths)."""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


def remember(store: dict[K, V], key: K, value: V, limit: int) -> None:
    """``store[key] = value``, the store emptied first when it holds ``limit`` entries: its keys come
    from clients, who must not grow it without bound (emptied, it is refilled by what repeats)."""
    if len(store) >= limit:
        store.clear()
    store[key] = value
