"""Limits: ``rate-limit-by-key``, ``quota-by-key`` and ``limit-concurrency``, counted in the store.

* ``rate-limit-by-key`` keeps a sliding log: an attempt is admitted when fewer than ``limit``
  admitted attempts lie in the last ``window`` seconds. There are no window edges, so no burst of
  2 x limit across one; ``Retry-After`` says when the oldest counted attempt leaves the window.
* ``quota-by-key`` counts per calendar period in UTC (day, week from Monday, month) on the store's
  clock (Redis's ``TIME``: hosts with skewed clocks agree); the counter renews at the period's
  end, which the denial states. Each kind of period counts under its own key: a day and a month
  quota sharing a ``counter:`` count apart (on the 1st of a month they were one key, and the day's
  expiry ended the month's count).
* ``limit-concurrency`` holds a lease per open connection: leases expire ``lease_ttl`` seconds
  after their last renewal, so a dead worker's connections stop counting on their own.

When the store fails, ``on_store_error: open`` admits (and logs), ``closed`` refuses with 503.
An admission unchecked is named on the handshake span and counted (``ws_gateway.policy.unchecked``);
the log gets the first at once, then one line per ``OutageLog.interval`` with how many: an outage
under load must not write a line per handshake.

A call whose answer never came (``store.timeout``, a cancelled handshake) may have counted all the
same: a rate-limit or quota attempt then counts once, for its window or period, as any attempt
does; a concurrency lease is released (see :mod:`asgi_ws_gateway.state.leases`), or the tenant
would lose a slot for the whole ``lease_ttl``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal

from pydantic import Field, field_validator

from .._context import current_handshake
from ..handshake.context import HandshakeContext
from ..log_throttle import OutageLog
from ..state.base import Decision, StoreKeys, StoreUnavailable, retry_after
from ..state.leases import LeaseKeeper
from ..state.periods import Period, period_bounds
from .base import PolicyEnv, StoreErrorSettings, deny, key_template, register_policy, template

logger = logging.getLogger(__name__)


class StoreFailed:
    """What one policy does when its store fails: refuse (fail-closed) or admit unchecked (fail-open)."""

    def __init__(self, name: str, on_error: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.fail_open = on_error == "open"
        self.log = OutageLog(clock=clock)

    def __call__(self, api: str, exc: StoreUnavailable) -> None:
        """Admit (returns) or refuse (raises a 503) the handshake of ``api`` that ``exc`` left unchecked."""
        if not self.fail_open:
            # The store's error is for the log and the span: a 5xx body does not carry it.
            raise deny(503, f"the limit cannot be checked right now ({exc})", reason="store_unavailable",
                       headers=[(b"retry-after", b"1")])  # fmt: skip
        handshake = current_handshake()
        if handshake is not None:
            handshake.unchecked(self.name)
        count = self.log.event()
        if count == 1:
            logger.warning("API %s: %s admitted a handshake unchecked (fail-open): %s", api, self.name, exc)
        elif count:
            logger.warning("API %s: %s admitted %d handshakes unchecked (fail-open) since its last such line: %s",
                           api, self.name, count, exc)  # fmt: skip


class RateLimitSettings(StoreErrorSettings):
    """``rate-limit-by-key``: at most ``limit`` handshakes per ``window`` seconds per key."""

    key: str = Field(description="Template of the counter key, e.g. '{subscription.id}' or '{client.network}'.")
    limit: int = Field(gt=0, le=100_000, description="Handshakes admitted per window.")
    window: float = Field(
        ge=1,  # 1e-300 counted nothing (3 of limit 1 admitted); Retry-After counts whole seconds anyway
        le=86_400,
        description="Window length in seconds (sliding), 1 to 86400.",
    )

    _key = field_validator("key")(template)


@register_policy("rate-limit-by-key")
class RateLimitByKey:
    Settings = RateLimitSettings

    def __init__(self, settings: RateLimitSettings, env: PolicyEnv) -> None:
        self.name = "rate-limit-by-key"
        self.store_failed = StoreFailed(self.name, settings.on_store_error)
        self.settings = settings
        self.store = env.store
        self.key = key_template(settings.key, env)
        self.counter = settings.counter or env.counter
        self.store_keys = StoreKeys(self.store.prefix, "rate", self.counter)

    async def apply(self, context: HandshakeContext) -> None:
        s = self.settings
        key = self.store_keys[self.key.render_key(context)]
        try:
            decision = await self.store.hit(key, s.limit, s.window, os.urandom(16).hex())
        except StoreUnavailable as exc:
            self.store_failed(context.api, exc)
            return
        if not decision.allowed:
            raise deny(
                429,
                f"rate limit of {s.limit} handshakes per {s.window:g} s exceeded",
                reason="rate_limited",
                headers=[(b"retry-after", retry_after(decision.retry_after).encode())],
            )


class QuotaSettings(StoreErrorSettings):
    """``quota-by-key``: at most ``limit`` handshakes per calendar ``period`` (UTC) per key."""

    key: str = Field(description="Template of the counter key, e.g. '{subscription.id}'.")
    limit: int = Field(gt=0, le=1_000_000_000, description="Handshakes admitted per period (1 to 10**9).")
    period: Period = Field(default="day", description="minute, hour, day, week (from Monday) or month; UTC.")
    status: Literal[403, 429] = Field(default=429, description="Status when the quota is spent.")

    _key = field_validator("key")(template)


@register_policy("quota-by-key")
class QuotaByKey:
    Settings = QuotaSettings

    def __init__(self, settings: QuotaSettings, env: PolicyEnv) -> None:
        self.name = "quota-by-key"
        self.store_failed = StoreFailed(self.name, settings.on_store_error)
        self.settings = settings
        self.store = env.store
        self.key = key_template(settings.key, env)
        self.counter = f"{settings.counter or env.counter}:{settings.period}"
        self.store_keys = StoreKeys(self.store.prefix, "quota", self.counter)

    async def apply(self, context: HandshakeContext) -> None:
        s = self.settings
        key = self.store_keys[self.key.render_key(context)]
        try:
            decision = await self.store.consume(key, s.limit, s.period)
        except StoreUnavailable as exc:
            self.store_failed(context.api, exc)
            return
        if not decision.allowed:
            # The period is the store's (Redis's clock), and so are both times the client is told.
            renews = datetime.fromtimestamp(decision.resets_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            raise deny(
                s.status,
                f"quota of {s.limit} handshakes per {s.period} exceeded; it renews at {renews}",
                reason="quota_exceeded",
                headers=[(b"retry-after", retry_after(decision.retry_after).encode())],
            )


class ConcurrencySettings(StoreErrorSettings):
    """``limit-concurrency``: at most ``max`` open connections per key, across workers and hosts."""

    key: str = Field(description="Template of the key, e.g. '{jwt.sub}', '{subscription.id}', '{client.network}'.")
    max: int = Field(
        gt=0, le=10_000_000, description="Open connections allowed per key (1 to 10**7, as max_connections)."
    )
    lease_ttl: float = Field(
        default=30.0,
        ge=1,
        le=86_400,  # kept in milliseconds by the store: a day is already longer than any renewal needs
        description="Seconds a lease outlives its last renewal (renewed every third of it).",
    )
    retry_after: int = Field(
        default=5, ge=1, le=86_400, description="Retry-After seconds when the cap is reached (1 to 86400)."
    )

    _key = field_validator("key")(template)


SHORT_LEASE = 10.0
"""Seconds of ``lease_ttl`` below which its renewals are warned about."""


def _short_lease_text(ttl: float) -> str:
    # Measured: 300 open connections under lease_ttl 1 made 5,900 Redis commands a second (about 200
    # at the default 30): the renewals are batched, but each key is a script call every ttl / 3.
    return (
        f"{ttl:g} s renews every open connection's lease {3 / ttl:.3g} times a second (a store call each, per key: "
        "at 1 s, 300 connections made 5,900 Redis commands a second, 30 times the default's); a shorter lease "
        f"only frees a crashed worker's connections sooner: {SHORT_LEASE:g} s at least (default 30)"
    )


@register_policy("limit-concurrency")
class LimitConcurrency:
    Settings = ConcurrencySettings

    def __init__(self, settings: ConcurrencySettings, env: PolicyEnv) -> None:
        self.name = "limit-concurrency"
        self.store_failed = StoreFailed(self.name, settings.on_store_error)
        self.settings = settings
        self.store = env.store
        self.key = key_template(settings.key, env)
        self.counter = settings.counter or env.counter
        self.store_keys = StoreKeys(self.store.prefix, "conc", self.counter)
        self.leases = LeaseKeeper(env.store, settings.lease_ttl)
        if settings.lease_ttl < SHORT_LEASE:
            env.warn(("lease_ttl",), _short_lease_text(settings.lease_ttl))

    async def apply(self, context: HandshakeContext) -> None:
        s = self.settings
        key = self.store_keys[self.key.render_key(context)]
        lease = os.urandom(16).hex()

        async def release() -> None:
            await self.leases.release(lease)

        # Before the call: a store that times out, or a cancelled call, may have taken the lease all
        # the same, and it must go when the handshake or connection ends, whatever the outcome.
        context.add_cleanup(release)
        try:
            decision: Decision = await self.leases.acquire(key, lease, s.max)
        except StoreUnavailable as exc:
            self.store_failed(context.api, exc)
            return
        if not decision.allowed:
            raise deny(
                429,
                f"too many open connections (at most {s.max})",
                reason="concurrency_limited",
                headers=[(b"retry-after", str(s.retry_after).encode())],
            )

    async def aclose(self, *, keep_held: bool = True) -> None:
        """See :meth:`LeaseKeeper.aclose`: by default the leases of open connections go on being renewed."""
        await self.leases.aclose(keep_held=keep_held)


__all__ = ["SHORT_LEASE", "LimitConcurrency", "QuotaByKey", "RateLimitByKey", "StoreFailed", "period_bounds"]
