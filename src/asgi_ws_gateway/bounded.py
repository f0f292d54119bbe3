"""What the gateway keeps of client-chosen values: one bounded store (header names, paths), and URLs
split without Python's cache keeping them."""

from __future__ import annotations

import re
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


def may_carry_credential(url: str) -> bool:
    """Whether a URL may hold a client's credential, so that no cache may keep it: a query
    (``?access_token=``), or a path with a named value (``/ws/token=...``, encoded ``token%3D...`` as
    a path parameter goes upstream, ``x-api-key:...``), a scheme's credential (``Bearer%20...``), a
    JWT (``eyJ``) or userinfo, the shapes the redaction finds in a path. Such URLs rarely repeat: a
    cache gave them nothing anyway.

    A URL found without one is remembered (:data:`_PLAIN_URLS`; ``urlsplit``'s cache keeps it too): the
    search tries its four shapes at every character (~9 k instructions for ``ws://host:port/``), and a
    handshake asks twice (its checks, its connect) of a URL that repeats from one handshake to the next.
    """
    if url in _PLAIN_URLS:
        return False
    if _CREDENTIAL_SHAPE(url) is not None:
        return True
    if len(url) <= _PLAIN_URL_LENGTH:
        remember(_PLAIN_URLS, url, None, _PLAIN_URLS_LIMIT)
    return False


_CREDENTIAL_SHAPE = re.compile(r"[?=@\s]|eyJ|%(?:3[DdAa]|[24]0|09)|//[^/?#]*[/?#][^:]*:").search
"""A query, ``name=value``, userinfo, a blank or its escape (``Bearer%20...``, ``Basic%09...``), an
escaped ``=``, ``:`` or ``@``, a JWT, or a ``:`` after the authority (``x-api-key:...``): what the
redaction finds a credential in, as a URL spells it."""

_PLAIN_URLS: dict[str, None] = {}
"""URLs :func:`may_carry_credential` found without a credential's shape (bounded as :func:`remember` bounds)."""
_PLAIN_URLS_LIMIT = 256
_PLAIN_URL_LENGTH = 1024


def split_url(url: str) -> SplitResult:
    """``urlsplit(url)``, split afresh when the URL :func:`may_carry_credential`: ``urlsplit`` keeps
    the last 128 URLs it split (an ``lru_cache`` since Python 3.11), and a credential must not
    outlive its connection in the worker's memory."""
    return _split_afresh(url) if may_carry_credential(url) else urlsplit(url)
