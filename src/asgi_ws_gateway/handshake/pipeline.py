"""The onHandshake stage: the ``Policy`` protocol, plain functions as policies, and the pipeline that runs them.

The pipeline runs the subscription check (when the API belongs to a product), then the global,
product and API policies in that order, all within one deadline: a policy whose I/O hangs (a JWKS
host that answers a byte at a time, a custom policy's own call) costs the client a 504, not a wait.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Protocol, runtime_checkable

from ..cancellation import POLICY_DEADLINE, OwnCancellation, cancel_requested
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
        self._deadlines: _Deadlines | None = None  # this pipeline's runs on the loop that runs it

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

    def _clock(self) -> _Deadlines:
        """The deadlines of this pipeline's runs on the running loop, made when the loop is new (a loop of
        its own for each, in tests)."""
        loop = asyncio.get_running_loop()
        deadlines = self._deadlines
        if deadlines is None or deadlines.loop is not loop:
            assert self.timeout is not None
            deadlines = self._deadlines = _Deadlines(loop, self.timeout)
        return deadlines


class _Deadline:
    """One run's deadline as ``asyncio.timeout`` keeps one: its expiry cancels the task, and only that
    cancellation is the deadline's (a task cancelled for its own reasons, the client gone, stays
    cancelled). Without the context manager's state machine and two coroutines per handshake."""

    __slots__ = ("at", "cancelling", "expired", "task")

    def __init__(self, task: asyncio.Task[object], at: float) -> None:
        self.task: asyncio.Task[object] | None = task  # None once the run has ended
        self.at = at
        self.cancelling, self.expired = task.cancelling(), False

    def expire(self) -> None:
        assert self.task is not None
        self.expired = True
        self.task.cancel(POLICY_DEADLINE)


class _Deadlines:
    """The deadlines of one pipeline's runs on one loop, watched by one timer.

    Every run has the same ``timeout``, so runs reach their deadlines in the order they started: the
    timer waits for the oldest run still going, expires each run whose time is up, and waits for the
    next. A timer per run (uvloop's ``call_later`` and its cancel) was ~14 k instructions a handshake.
    Runs that ended leave the queue as they reach its head; the timer, once set, stays until it fires
    (at most once per ``timeout`` while runs start)."""

    __slots__ = ("_runs", "_timer", "loop", "timeout")

    _SLACK = 0.001
    """Seconds early a deadline may be met: a loop's timers fire to their clock's millisecond (uvloop's)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.loop, self.timeout = loop, timeout
        self._runs: deque[_Deadline] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> _Deadline:
        """The deadline of a run starting now, in the calling task."""
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a handshake pipeline with a timeout runs in a task")
        run = _Deadline(task, self.loop.time() + self.timeout)
        self._runs.append(run)
        if self._timer is None:
            self._timer = self.loop.call_at(run.at, self._expire)
        return run

    def end(self, run: _Deadline, cancelled: bool) -> bool:
        """``run`` is over; whether it ended because it ran out (``cancelled``: it ended cancelled)."""
        task, run.task = run.task, None
        assert task is not None
        runs = self._runs
        while runs and runs[0].task is None:
            runs.popleft()
        return run.expired and task.uncancel() <= run.cancelling and cancelled

    def __len__(self) -> int:
        """Runs in the queue (going, or ended behind one still going); tests read it."""
        return len(self._runs)

    def _expire(self) -> None:
        self._timer = None
        runs, now = self._runs, self.loop.time() + self._SLACK
        while runs:
            run = runs[0]
            if run.task is not None:
                if run.at > now:
                    self._timer = self.loop.call_at(run.at, self._expire)
                    return
                run.expire()  # its end() is still to come; it leaves the queue now
            runs.popleft()


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
