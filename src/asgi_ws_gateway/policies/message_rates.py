"""``rate-limit-messages``: messages and bytes per window, per connection or per key across workers.

Windows are fixed: at most ``messages`` messages and ``bytes`` bytes in each window of ``window``
seconds. Without ``key`` the budget is the connection's own, counted in memory. With ``key``
(``{jwt.sub}``, ``{subscription.id}``) every connection with that key, on every worker and host,
shares it through the store (Redis or memory). To avoid a round trip per message, each worker
reserves a *batch* of the window's budget at a time (``batch`` x the limit) and spends it locally:
a busy key costs about ``1 / batch`` store calls per window and worker, and a key whose window is
spent costs none until the window ends. The price is that a worker may hold up to a batch it does
not use while another worker is refused: at most ``workers x batch x limit`` of a window.

A worker keeps a key's budget while a connection holds it, and the last ``IDLE_BUDGETS`` keys'
budgets besides (their windows, whether the store said a window is spent); the others are dropped,
and a key coming back reserves again. When the last connection of a key on the worker ends, what
the worker reserved in the window and did not use is given back to the store
(:meth:`SharedBudget.held`), so that the other workers are not refused it until the window ends.
(Budgets were kept for every value seen, for two windows: 50,000 connections with a fresh key each,
33.9 MB, whatever ``max_keys``.)

On excess: ``delay`` holds the message until the window has room (backpressure: the sender's
next messages wait in its socket), ``drop`` drops it and answers the sender, ``close`` closes with
``close_code`` (1013 try again later, or 1008).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable
from typing import Literal

from pydantic import Field, field_validator, model_validator

from .._types import Data
from ..errors import CloseConnection, DropMessage
from ..log_throttle import OutageLog
from ..messages.context import ConnectionContext, Direction, MessageCheck, MessageHandler, WsMessage
from ..state.base import Store, StoreUnavailable, store_key
from .base import PolicyEnv, StoreErrorSettings, key_template, template
from .message_base import register_message_policy

logger = logging.getLogger(__name__)
IDLE_BUDGETS = 1024
"""Shared budgets a policy keeps (the keys attached last) beyond those its open connections hold."""
UNLIMITED = 2**62  # a dimension (messages or bytes) without a limit
MIN_WAIT = 0.001
"""Seconds a refused message waits (``delay``) at least before its key's budget is asked again."""


class RateLimitMessagesSettings(StoreErrorSettings):
    """``rate-limit-messages``: at most ``messages`` messages and ``bytes`` bytes per ``window`` seconds."""

    messages: int | None = Field(default=None, gt=0, le=1_000_000_000, description="Messages per window (1 to 10**9).")
    bytes: int | None = Field(
        default=None, gt=0, le=2**40, description="Payload bytes per window (UTF-8 length of text; 1 to 2**40)."
    )
    window: float = Field(
        default=1.0,
        ge=0.01,  # 1e-300 counted nothing; 10 ms is about the event loop's timer resolution
        le=86_400,
        description="Window length in seconds (fixed windows), 0.01 to 86400.",
    )
    key: str | None = Field(
        default=None, description="Template of a shared key ('{jwt.sub}'); none: per connection, in memory."
    )
    action: Literal["delay", "drop", "close"] = Field(
        default="delay", description="delay (backpressure), drop (answer the sender) or close."
    )
    close_code: Literal[1008, 1013] = Field(default=1013, description="With action close: 1013 or 1008.")
    batch: float = Field(
        default=0.1, gt=0, le=1, description="With key: the fraction of each limit a worker reserves at a time."
    )

    @field_validator("key")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        return template(value) if value is not None else None

    @model_validator(mode="after")
    def _some_limit(self) -> RateLimitMessagesSettings:
        if self.messages is None and self.bytes is None:
            raise ValueError("set messages, bytes or both")
        return self


class LocalBudget:
    """One connection's fixed windows, in memory: what is left of the window that ends at ``ends``."""

    __slots__ = ("bytes_left", "ends", "limits", "messages_left", "window")

    def __init__(self, limits: tuple[int, int], window: float) -> None:
        self.limits = limits
        self.window = window
        self.messages_left, self.bytes_left = limits
        self.ends = 0.0

    def take(self, now: float, size: int) -> bool:
        if now >= self.ends:
            self.ends = now + self.window
            self.messages_left, self.bytes_left = self.limits
        if self.messages_left and size <= self.bytes_left:
            self.messages_left -= 1
            self.bytes_left -= size
            return True
        return False

    def passes(self, _data: Data, size: int) -> bool:
        """:meth:`take` now: the pipeline's shortcut. A message within the current window is taken
        here, in one call per message; a new window (or none left) is :meth:`take`'s."""
        now = time.monotonic()
        if now < self.ends and self.messages_left and size <= self.bytes_left:
            self.messages_left -= 1
            self.bytes_left -= size
            return True
        return self.take(now, size)

    async def refill(self, now: float, size: int) -> float:
        return 0.0 if self.take(now, size) else self.ends - now


class SharedBudget:
    """A key's budget on this worker: batches reserved from the store, spent locally."""

    def __init__(self, store: Store, key: str, limits: tuple[int, int], window: float, batch: float,
                 fail_open: bool, log: OutageLog | None = None) -> None:  # fmt: skip
        self.store = store
        self.log = log or OutageLog()  # the policy's, shared by its keys
        self.key = key
        self.limits = limits
        self.window = window
        self.batches = (max(1, int(limits[0] * batch)), max(1, int(limits[1] * batch)))
        self.dims = [i for i in (0, 1) if limits[i] < UNLIMITED]
        self.fail_open = fail_open
        self.left = self._empty()
        self.index: int | None = None
        self.ends = 0.0  # monotonic end of the window the local budget belongs to
        self.spent = False  # the store granted nothing more in this window
        self._inflight: asyncio.Future[None] | None = None
        self.holders = 0  # connections of the key on this worker that run now

    async def held(self) -> None:
        """Hold the budget while a connection runs (its policy task, cancelled at its end); when the last
        holder ends, give back to the store what this worker reserved in the window and did not use.

        Kept, it stayed counted until the window ended while the worker kept it for connections that
        might come (``IDLE_BUDGETS``): one message sent and the connection closed left 9 of a batch of 10
        counted in Redis, and another worker was admitted 90 of 100. Given back, the budget is emptied
        first: a connection of the key that comes meanwhile reserves again, never spends what the store
        no longer counts."""
        self.holders += 1
        try:
            await asyncio.Future()  # until the connection ends
        finally:
            self.holders -= 1
            if not self.holders:
                await self._give_back()

    async def _give_back(self) -> None:
        if self._inflight is not None:  # a reservation under way: what it grants is given back too
            with contextlib.suppress(Exception):
                await asyncio.shield(self._inflight)
        index, dims, left = self.index, self.dims, self.left
        if self.holders or index is None or time.monotonic() >= self.ends:
            return  # (held again meanwhile; a fail-open budget, never reserved; the window is over)
        amounts = [left[i] for i in dims]
        if not any(amounts):
            return
        self.left, self.spent = self._empty(), False
        with contextlib.suppress(StoreUnavailable):  # left counted until the window ends, as before
            await self.store.refund(self.key, index, amounts)

    def take(self, now: float, size: int) -> bool:
        left = self.left
        if now < self.ends and left[0] >= 1 and left[1] >= size:
            left[0] -= 1
            left[1] -= size
            return True
        return False

    def passes(self, _data: Data, size: int) -> bool:
        """:meth:`take` now: the pipeline's shortcut."""
        return self.take(time.monotonic(), size)

    async def refill(self, now: float, size: int) -> float:
        """0 when the message was admitted, else seconds until the window ends."""
        while True:
            if self.take(now, size):
                return 0.0
            if now < self.ends and self.spent:
                return self.ends - now
            if self._inflight is None:
                break
            await asyncio.shield(self._inflight)  # another connection of this key is asking already
            now = time.monotonic()
        self._inflight = asyncio.get_running_loop().create_future()
        try:
            await self._reserve(now, size)
        finally:
            self._inflight.set_result(None)
            self._inflight = None
        # Not taken: a wait, never 0 (which admits the message). A window that ended as it was reserved
        # (Redis's last millisecond: nothing granted, 0 ms left) admitted it uncounted.
        return 0.0 if self.take(time.monotonic(), size) else max(MIN_WAIT, self.ends - time.monotonic())

    async def _reserve(self, now: float, size: int) -> None:
        dims = self.dims
        if now >= self.ends:
            self.left = self._empty()
        left = self.left
        need = (max(self.batches[0], 1 - left[0]), max(self.batches[1], size - left[1]))
        try:
            reservation = await self.store.reserve(self.key, self.window, [(need[i], self.limits[i]) for i in dims])
        except StoreUnavailable as exc:
            count = self.log.event()  # shared by the policy's keys: not a line per key and window
            if count:
                logger.warning("message rate limit unchecked (%s) for %d key window(s) of %g s since the last "
                               "such line: %s", "fail-open" if self.fail_open else "fail-closed", count, self.window,
                               exc)  # fmt: skip
            self.ends, self.index, self.spent = time.monotonic() + self.window, None, not self.fail_open
            self.left = [need[i] if i in dims else UNLIMITED for i in (0, 1)] if self.fail_open else self._empty()
            return
        if reservation.window != self.index:
            left = self._empty()
        granted = dict(zip(dims, reservation.granted, strict=True))
        self.left = [left[i] + granted[i] if i in dims else UNLIMITED for i in (0, 1)]
        self.index = reservation.window
        self.ends = time.monotonic() + reservation.resets_in
        self.spent = any(granted[i] < need[i] for i in dims)

    def _empty(self) -> list[int]:
        return [0 if i in self.dims else UNLIMITED for i in (0, 1)]


SHARED_WINDOW = 1.0
"""Seconds of a keyed ``window`` below which its store calls are warned about."""


def _short_shared_window_text(window: float) -> str:
    # A batch is reserved per window: a window shorter than a key's messages are apart reserves for
    # each message. Measured: 50 connections sending 50 messages a second each made 17,000 Redis
    # commands a second at 0.01 s, 500 at 1 s.
    return (
        f"{window:g} s with a key: each window's budget is reserved from the store afresh, up to a store call per "
        "message when messages are further apart than the window (at 0.01 s, 50 connections sending 50 messages "
        f"a second made 17,000 Redis commands a second, 500 at 1 s); {SHARED_WINDOW:g} s at least, or no key "
        "(each connection's own budget, in memory)"
    )


@register_message_policy("rate-limit-messages")
class RateLimitMessages:
    Settings = RateLimitMessagesSettings

    def __init__(self, settings: RateLimitMessagesSettings, env: PolicyEnv) -> None:
        self.name = "rate-limit-messages"
        self.settings = s = settings
        self.store = env.store
        self.counter = s.counter or env.counter
        self.key = key_template(s.key, env) if s.key is not None else None
        if self.key is not None and s.window < SHARED_WINDOW:
            env.warn(("window",), _short_shared_window_text(s.window))
        self.limits = (s.messages or UNLIMITED, s.bytes or UNLIMITED)
        # Every budget a connection holds (its handlers do: the entry goes when the last of them
        # does), and the last IDLE_BUDGETS keys' kept for connections to come.
        self._shared: weakref.WeakValueDictionary[str, SharedBudget] = weakref.WeakValueDictionary()
        self._recent: OrderedDict[str, SharedBudget] = OrderedDict()
        self._outage = OutageLog()
        what = " and ".join(x for x in (s.messages and f"{s.messages} messages", s.bytes and f"{s.bytes} bytes") if x)
        self.detail = f"more than {what} per {s.window:g} s"

    def attach(self, connection: ConnectionContext, direction: Direction) -> MessageHandler:
        budget = self._budget(connection)
        if isinstance(budget, SharedBudget):
            connection.start(budget.held)
        take, refill = budget.take, budget.refill
        s, name, detail = self.settings, self.name, self.detail
        byte_limit = self.limits[1]
        clock = time.monotonic

        async def slow(size: int, now: float) -> None:
            delayed = False
            while True:
                wait = await refill(now, size)
                if wait <= 0:
                    return
                if s.action == "delay" and size <= byte_limit:
                    if not delayed:
                        connection.count(name, "delay", direction, "rate_limited")
                        delayed = True
                    await asyncio.sleep(wait)
                    now = clock()
                    continue
                if s.action == "close":
                    raise CloseConnection(s.close_code, "rate_limited", "message rate exceeded")
                raise DropMessage("rate_limited", detail)

        def check(message: WsMessage) -> Awaitable[None] | None:
            now, size = clock(), message.size
            if take(now, size):
                return None
            return slow(size, now)

        return MessageCheck(check, budget.passes)

    def _budget(self, connection: ConnectionContext) -> LocalBudget | SharedBudget:
        s = self.settings
        if self.key is None:
            return LocalBudget(self.limits, s.window)
        key = store_key(self.store.prefix, "msgrate", self.counter, self.key.render_key(connection))
        budget = self._shared.get(key)
        if budget is None:
            budget = self._shared[key] = SharedBudget(self.store, key, self.limits, s.window, s.batch,
                                                      s.on_store_error == "open", self._outage)  # fmt: skip
        recent = self._recent
        recent[key] = budget
        recent.move_to_end(key)
        if len(recent) > IDLE_BUDGETS:
            recent.popitem(last=False)
        return budget


__all__ = ["IDLE_BUDGETS", "MIN_WAIT", "SHARED_WINDOW", "LocalBudget", "RateLimitMessages", "SharedBudget"]
