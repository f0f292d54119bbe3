"""The onHandshake stage: the ``Policy`` protocol, plain functions as policies, and the pipeline that runs them.

The pipeline runs the subscription check (when the API belongs to a product), then the global,
product and API policies in that order, all within one deadline: a policy whose I/O hangs (a JWKS
host that answers a byte at a time, a custom policy's own call) costs the client a 504, not a wait.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Protocol, runtime_checkable

from ..cancellation import POLICY_DEADLINE, OwnCancellation, cancel_requested
from ..deadlines import Deadlines
from ..errors import HandshakeDenied
from .context import HandshakeContext


@runtime_checkable
class Policy(Protocol):
    """A handshake policy: return to allow (maybe having changed the context), raise to deny.

    ``apply`` may be cancelled when the client goes away; it must not leave state behind that a
    cleanup registered with :meth:`HandshakeContext.add_cleanup` would not undo.
    """

    name: str

    async def apply(self, context: HandshakeContext) -> None:
        """Raises :class:`~asgi_ws_gateway.errors.HandshakeDenied` to refuse the handshake."""
        ...


PolicyFunction = Callable[[HandshakeContext], Awaitable[None]]


class FunctionPolicy:
    """A plain ``async def check(context)`` used as a policy (its name is the function's)."""

    def __init__(self, function: PolicyFunction, name: str | None = None) -> None:
        if not inspect.iscoroutinefunction(function) and not inspect.iscoroutinefunction(
            getattr(function, "__call__", None)  # noqa: B004 - an async callable object
        ):
            raise TypeError(f"{function!r} is not an async function")
        self.function = function
        self.name: str = name or str(getattr(function, "__name__", type(function).__name__))

    async def apply(self, context: HandshakeContext) -> None:
        await self.function(context)


async def run_policies(policies: Sequence[Policy], context: HandshakeContext) -> None:
    """Apply ``policies`` in order; a denial is tagged with the name of the policy that raised it."""
    for policy in policies:
        await _apply(policy, context)


async def _apply(policy: Policy, context: HandshakeContext) -> None:
    try:
        await policy.apply(context)
    except HandshakeDenied as denial:
        _blame(denial, policy)
        raise


def _blame(denial: HandshakeDenied, policy: Policy) -> None:
    """Tag ``denial`` with the policy that raised it, unless it names one already."""
    if denial.policy is None:
        denial.policy = policy.name


ProductResolver = Callable[[HandshakeContext], Awaitable[Sequence[str]]]
"""Decides which products' policies apply (checking the subscription key); may deny."""


class HandshakePipeline:
    """One API's handshake policies: subscription check, then global → product → API, all within
    ``timeout`` seconds (None: no limit)."""

    def __init__(
        self,
        global_policies: Sequence[Policy] = (),
        product_policies: Mapping[str, Sequence[Policy]] | None = None,
        api_policies: Sequence[Policy] = (),
        products: ProductResolver | None = None,
        timeout: float | None = None,
    ) -> None:
        self.global_policies = list(global_policies)
        self.product_policies = dict(product_policies or {})
        self.api_policies = list(api_policies)
        self.products = products
        self.timeout = timeout
        self._deadlines: Deadlines | None = None  # this pipeline's runs on the loop that runs it

    def __bool__(self) -> bool:
        return bool(self.global_policies or self.api_policies or self.products is not None)

    async def run(self, context: HandshakeContext) -> None:
        """Apply every policy in scope order; raises the first denial.

        Raises:
            HandshakeDenied: a policy's denial, or 504 ``policy_timeout`` (naming the policy that was
                running) when they have not all finished within ``timeout`` seconds.
        """
        running = SUBSCRIPTION
        deadlines = self._deadlines
        if self.timeout is None:
            deadline = None
        else:
            if deadlines is None or deadlines.loop is not asyncio.get_running_loop():
                deadlines = self._clock()
            deadline = deadlines.start()
        cancelled = False
        try:
            products: Sequence[str] = ()
            if self.products is not None:
                products = await self.products(context)
            policies = self.global_policies + self.api_policies if not products else [
                *self.global_policies, *(policy for p in products for policy in self.product_policies.get(p, ())),
                *self.api_policies,
            ]  # fmt: skip
            for policy in policies:
                running = policy.name
                try:
                    await policy.apply(context)
                except HandshakeDenied as denial:
                    _blame(denial, policy)
                    raise
                except asyncio.CancelledError:
                    if cancel_requested():
                        raise
                    # The policy's own: it awaited something cancelled. Propagated, it read as the
                    # handshake's cancellation: under uvicorn's protocols a traceback and a bare 500,
                    # under run the client dropped unanswered and logged as gone. A 500, as a bug is.
                    raise OwnCancellation(f"handshake policy {policy.name}") from None
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            if deadline is not None and deadlines is not None and deadlines.end(deadline, cancelled):
                raise HandshakeDenied(
                    504, f"handshake policy {running} did not finish within {self.timeout:g} s",
                    reason="policy_timeout", policy=running,
                ) from None  # fmt: skip

    def _clock(self) -> Deadlines:
        """The deadlines of this pipeline's runs on the running loop, made when the loop is new (a loop of
        its own for each, in tests)."""
        loop = asyncio.get_running_loop()
        deadlines = self._deadlines
        if deadlines is None or deadlines.loop is not loop:
            assert self.timeout is not None
            deadlines = self._deadlines = Deadlines(loop, self.timeout, POLICY_DEADLINE)
        return deadlines


SUBSCRIPTION = "subscription"
"""The name the subscription check denies with (``policies.products``), and is named by at a timeout."""


__all__ = [
    "FunctionPolicy",
    "HandshakePipeline",
    "Policy",
    "PolicyFunction",
    "ProductResolver",
    "run_policies",
]
