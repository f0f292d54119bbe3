"""What the gateway keeps of client-chosen values: one bounded store (header names, paths), and URLs
split without Python's cache keeping them."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar
from urllib.parse import SplitResult, urlsplit

K = TypeVar("K")
V = TypeVar("V")


def remember(store: dict[K, V], key: K, value: V, limit: int) -> None:
    """``store[key] = value``, the store emptied first when it holds ``limit`` entries: its keys come
    from clients, who must not grow it without bound (emptied, it is refilled by what repeats)."""
    if len(store) >= limit:
        store.clear()
    store[key] = value


_split_afresh: Callable[[str], SplitResult] = getattr(urlsplit, "__wrapped__", urlsplit)


def split_url(url: str) -> SplitResult:
    """``urlsplit(url)``, but a URL with a query is split afresh: ``urlsplit`` keeps the last 128 URLs
    it split (an ``lru_cache`` since Python 3.11), and a client's query may hold a credential, which
    must not outlive its connection. Queries rarely repeat, so the cache gave them nothing anyway."""
    return _split_afresh(url) if "?" in url else urlsplit(url)
