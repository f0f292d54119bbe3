"""The overlay in Redis: shared by every worker and host (the shared mode).

The document, its revision and its epoch live in one hash, ``<prefix>:{mgmt}:state`` (the braces are
a Redis Cluster hash tag), with the ETag key (``etag-key``, made by the first worker that asks). An
update is optimistic: read, derive, then save with a Lua script only if the epoch and revision are
still the ones read (a Redis emptied meanwhile and written again up to the same revision is another
state; a state read without an epoch, from before epochs, is compared by its revision); on a
conflict, read again and retry. Each attempt carries an id saved with the document, so a save
the Redis client sends again (after a timeout or a dropped connection, when the first one may have
been applied) is recognised as done, not applied twice.

Redis down, timing out or failing over is :class:`~.errors.Unavailable` (a 503 with ``Retry-After``
from the management API), never a 500. A ``READONLY`` answer (a master demoted to a replica behind the
same address, as managed Redis services fail over) closes the pooled connections, which still reach
the old master, and the call is sent once more on a fresh one: nothing was written (a replica refuses
the first write), and a save sent again carries the same attempt id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TypeVar
from urllib.parse import parse_qsl, urlsplit

from redis.asyncio import Redis
from redis.exceptions import ReadOnlyError

from ..redact import printable, redact_url_credentials
from ..redis_client import REDIS_FAILURES, AnyRedis, connect, parse_redis_url
from .errors import Unavailable
from .overlay import Overlay
from .store import ETAG_KEY_BYTES, Change, StateFileInvalid, read_state

T = TypeVar("T")

logger = logging.getLogger(__name__)

_SAVE = """
local current = tonumber(redis.call('HGET', KEYS[1], 'revision') or '0')
local epoch, read, made = redis.call('HGET', KEYS[1], 'epoch') or '', ARGV[5] or '', ARGV[6] or ''
if current ~= tonumber(ARGV[1]) or (read ~= '' and epoch ~= read) then
  if current == tonumber(ARGV[3]) and redis.call('HGET', KEYS[1], 'attempt') == ARGV[4] then
    return current  -- this very attempt, sent again by the client: it was applied
  end
  return -1
end
redis.call('HSET', KEYS[1], 'doc', ARGV[2], 'revision', ARGV[3], 'attempt', ARGV[4], 'epoch', made)
return tonumber(ARGV[3])
"""
MAX_ATTEMPTS = 50


class ConcurrentUpdate(Unavailable):
    """Other writers kept winning: the update was retried ``MAX_ATTEMPTS`` times and gave up."""


def _changed(change: Change, current: Overlay) -> tuple[Overlay, str]:
    new = change(current)
    return new, new.to_json()


def open_redis_warning(url: str) -> str | None:
    """The WARNING for a management store on a Redis that asks no credential (the URL has no password, nor a
    client certificate), or None. Whoever can write to it changes the gateway's APIs and sends the bus's
    commands (close, message a connection) without the admin token; on loopback that is every local user."""
    try:
        target = parse_redis_url(url)
    except ValueError:
        return None  # refused where it is connected
    if target.password is not None or url.startswith("unix:"):
        return None  # a Unix socket is guarded by its file's mode
    if target.kind == "single" and _query_credential(url):
        return None
    return (f"management API: its changes and commands go through {redact_url_credentials(url)}, "
            "which asks no password: whoever can write to that Redis (on 127.0.0.1: every local user) can change "
            "the gateway's APIs and close or message its connections without the admin token; set requirepass (or "
            "an ACL user) and give the password in the URL (ASGI_WS_GATEWAY_REDIS keeps it out of ps)")  # fmt: skip


def _query_credential(url: str) -> bool:
    """Whether a single server's URL gives a credential in its query, as redis-py reads it: ``?password=``
    (the userinfo's alternative) or a client certificate (``?ssl_certfile=``), either with a value."""
    options = parse_qsl(urlsplit(url).query, keep_blank_values=True)
    return any(name in ("password", "ssl_certfile") and value for name, value in options)


def state_key(prefix: str) -> str:
    return f"{prefix}:{{mgmt}}:state"


class RedisStore:
    """The overlay in Redis.

    Args:
        client: a ``redis.asyncio`` client (plain, Sentinel or cluster: see
            :func:`~asgi_ws_gateway.redis_client.connect`) created with ``decode_responses=True``.
        prefix: namespace of the keys (default ``asgi-ws-gw``).
        url: the URL ``client`` was made from, if known: a failed start-up names it, credentials hidden.
    """

    def __init__(self, client: AnyRedis, *, prefix: str = "asgi-ws-gw", url: str | None = None) -> None:
        self.client = client
        self.prefix = prefix
        self._key = state_key(prefix)
        self.location = f"the field doc of the Redis hash {printable(self._key)}"
        """Where the stored changes are, for the operator to read."""
        self.shown_url = redact_url_credentials(url) if url is not None else "Redis"
        """The store's URL as a log line may show it (no user name or password)."""
        self._save = client.register_script(_SAVE)
        self._ready = False
        self._ready_lock = asyncio.Lock()

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "asgi-ws-gw") -> RedisStore:
        return cls(connect(url, decode_responses=True), prefix=prefix, url=url)

    async def load(self) -> Overlay:
        document = await self._call(lambda: self.client.hget(self._key, "doc"))
        try:  # a 16 MB state takes seconds to parse: not on the event loop
            return await asyncio.to_thread(read_state, document, f"{self._key} in Redis") if document else Overlay()
        except StateFileInvalid as exc:  # written there by something else
            raise Unavailable.of("state store (Redis)", exc) from exc

    async def update(self, change: Change) -> Overlay:
        for _ in range(MAX_ATTEMPTS):
            current = await self.load()
            new, document = await asyncio.to_thread(_changed, change, current)  # CPU-bound: off the event loop
            attempt: list[str | int] = [
                current.revision, document, new.revision, uuid.uuid4().hex, current.epoch, new.epoch
            ]  # fmt: skip
            saved = await self._call(partial(self._save, [self._key], attempt))  # sent again: the same id, applied once
            if int(saved) == new.revision:
                return new
            logger.debug("state revision moved past %d while updating; retrying", current.revision)
        raise ConcurrentUpdate(f"gave up after {MAX_ATTEMPTS} conflicting attempts")

    async def revision(self) -> int:
        value = await self._call(lambda: self.client.hget(self._key, "revision"))
        return int(value) if value else 0

    async def version(self) -> tuple[str, int, str]:
        read = await self._call(lambda: self.client.hmget(self._key, ["epoch", "revision", "attempt"]))
        epoch, revision, attempt = read
        return str(epoch or ""), int(revision) if revision else 0, str(attempt or "")

    async def etag_key(self) -> bytes:
        made = secrets.token_hex(ETAG_KEY_BYTES)
        await self._call(lambda: self.client.hsetnx(self._key, "etag-key", made))  # the first one made stays
        key = await self._call(lambda: self.client.hget(self._key, "etag-key"))
        return str(key or made).encode()

    async def _call(self, operation: Callable[[], Awaitable[T]]) -> T:
        """One Redis call; any failure (redis-py has retried already) is :class:`Unavailable`."""
        try:
            try:
                if not self._ready:
                    await self._initialize()
                return await operation()
            except AttributeError:  # redis-py's cluster race (``REDIS_FAILURES``): once more, on a sound connection
                return await operation()
            except ReadOnlyError:
                # The pooled connections reach a master demoted to a replica behind this address: redis-py's
                # plain client kept them, and every change was a 503 until the process restarted. Its
                # Sentinel client reconnects by itself; a cluster's follows MOVED.
                if type(self.client) is not Redis:
                    raise
                await self._forget_connections()
                return await operation()
        except REDIS_FAILURES as exc:
            if isinstance(exc, ReadOnlyError):  # still a replica there: the next call connects afresh too
                await self._forget_connections()
            raise Unavailable.of("state store (Redis)", exc) from exc

    async def _forget_connections(self) -> None:
        if type(self.client) is Redis:
            with contextlib.suppress(*REDIS_FAILURES):
                await self.client.connection_pool.disconnect()

    async def _initialize(self) -> None:
        # A cold cluster client sent several commands at once races while it maps the slots: map them
        # (and open the first connection) once, before the first burst.
        async with self._ready_lock:
            if not self._ready:
                await self.client.initialize()
                self._ready = True

    async def aclose(self) -> None:
        await self.client.aclose()


__all__ = [
    "ConcurrentUpdate",
    "RedisStore",
    "open_redis_warning",
    "state_key",
]
