"""The cases of a parametrized test run at once, for tests whose time is a pace or a timer, not CPU.

A slow reader of a backlog, a client held past ``close_timeout``: each case of such a test mostly sleeps,
one after another on a worker. :class:`AtOnce` runs a test's cases together (each on its own connection
and API path) the first time one of them asks, and hands each case its own result, or raises its own
exception, so every case still asserts, and fails, on its own::

    @pytest.fixture(scope="module")
    def at_once() -> AtOnce:
        return AtOnce()

    @pytest.mark.parametrize("name", PATHS)
    async def test_x(gateway: int, at_once: AtOnce, name: str) -> None:
        result = await at_once.result("x", name, lambda each: asyncio.to_thread(_read, gateway, each), PATHS)
        assert result == ...

Only for cases that share nothing but the gateway (no shared list of what an upstream read, no count of
the process's files) and whose timing holds with the others running beside them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

__all__ = ["AtOnce"]

T = TypeVar("T")


class AtOnce:
    """Each test's cases, run together the first time one of them asks (a module's, in its event loop)."""

    def __init__(self) -> None:
        self._results: dict[str, dict[str, Any]] = {}

    async def result(self, test: str, case: str, run: Callable[[str], Awaitable[T]], cases: Iterable[str]) -> T:
        """``run(case)``'s result, run alongside ``run`` of every other of ``cases`` (the test ``test``'s)."""
        if test not in self._results:  # (a module's tests run one at a time: its first case is alone here)
            names = list(cases)
            results = await asyncio.gather(*(run(name) for name in names), return_exceptions=True)
            self._results[test] = dict(zip(names, results, strict=True))
        result = self._results[test][case]
        if isinstance(result, BaseException):
            raise result
        found: T = result
        return found
