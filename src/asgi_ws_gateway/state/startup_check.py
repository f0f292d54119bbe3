"""One look at the store as a process starts serving: a WARNING if its Redis cannot be reached.

A store's failure was logged by the first call that needed it: with a wrong URL, password or database
a gateway started and served without a word, and its operator learnt of it from clients' 503s (or
not at all, limits admitting unchecked). The check runs in the background (start-up and readiness
wait for nothing), tries once within the store's timeout, and says nothing when Redis answers. Each
worker checks its own store: ``run --workers 4`` logs up to 4 such lines.
"""

from __future__ import annotations

import logging
from typing import Protocol, runtime_checkable

from ..redact import printable, redact_text
from .base import Store

logger = logging.getLogger(__name__)


@runtime_checkable
class Reachable(Protocol):
    """A store on a server (:class:`~.redis.RedisState`); the in-memory store has none to reach."""

    shown_url: str

    async def reach(self) -> None: ...


async def warn_if_unreachable(store: Store) -> None:
    """Log one WARNING naming ``store``'s URL (credentials hidden) and why, if one attempt to reach it fails."""
    if not isinstance(store, Reachable):
        return
    try:
        await store.reach()
    except Exception as exc:  # whatever failed is the news; nothing of it may end the worker
        logger.warning(
            "Redis store %s cannot be reached at start-up: %s. The gateway serves meanwhile: until Redis "
            "answers, each limit does what its on_store_error says (open: admitted unchecked, closed: "
            "refused with 503); every check tries Redis again",
            store.shown_url, why(exc),
        )  # fmt: skip
        return
    logger.debug("Redis store %s answers", store.shown_url)


def why(exc: BaseException) -> str:
    """The reason an operator acts on (refused, authentication, database, timeout), then the error's own text."""
    text = printable(redact_text(str(exc))[:200], quote=False)
    name = type(exc).__name__
    kinds = {kind.__name__ for kind in type(exc).__mro__}  # redis-py's classes, not imported for a memory store
    upper = text.upper()
    if isinstance(exc, TimeoutError) or "TimeoutError" in kinds:
        reason = "no answer within the store's timeout"
    elif "AuthenticationError" in kinds or "WRONGPASS" in upper or "NOAUTH" in upper:
        reason = "authentication failed (user name or password)"
    elif "DB INDEX" in upper or "SELECT" in upper:
        reason = "the server refuses the URL's database"
    elif isinstance(exc, ConnectionRefusedError) or "REFUSED" in upper:
        reason = "connection refused"
    else:
        reason = "it failed"
    return f"{reason} ({name}: {text})" if text else f"{reason} ({name})"


__all__ = ["Reachable", "warn_if_unreachable", "why"]
