"""Client helpers for tests, on the ``websockets`` asyncio client."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as _connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

__all__ = ["WAIT_TIMEOUT", "assert_echoes_or_refused", "connect", "count_handshake", "expect_close", "expect_status"]

WAIT_TIMEOUT = 5.0
"""Seconds ``expect_close`` waits before raising ``TimeoutError``."""

_DEFAULTS: dict[str, Any] = {"proxy": None, "open_timeout": 5, "max_size": None}


async def connect(url: str, **kw: Any) -> ClientConnection:
    """Open a WebSocket to ``url`` with test defaults: no proxy, 5 s open timeout, no size limit.

    ``kw`` goes to ``websockets.asyncio.client.connect`` and overrides the defaults. Redirects are
    followed. Use the result as ``async with await connect(url) as ws:``.
    """
    return await _connect(url, **{**_DEFAULTS, **kw})


async def expect_close(ws: ClientConnection) -> tuple[int, str]:
    """Discard messages until the connection closes; return the close ``(code, reason)`` received.

    Returns ``(1006, "")`` when no close frame arrived (the TCP connection just dropped).

    Raises:
        TimeoutError: If the connection is still open after ``WAIT_TIMEOUT`` seconds (wrap the call
            in ``asyncio.timeout`` for a shorter bound).
    """
    async with asyncio.timeout(WAIT_TIMEOUT):
        try:
            while True:
                await ws.recv()
        except ConnectionClosed as exc:
            if exc.rcvd is None:
                return 1006, ""
            return exc.rcvd.code, exc.rcvd.reason


class _NoRedirects(_connect):
    """``connect`` that reports a redirect as the ``InvalidStatus`` it is instead of following it."""

    def process_redirect(self, exc: Exception) -> Exception | str:
        return exc


async def expect_status(url: str, **kw: Any) -> tuple[int, dict[str, str], bytes]:
    """Attempt a handshake that must be refused; return ``(status, headers, body)`` of the refusal.

    Header names are lower-cased; repeated headers are joined with ``", "``. Redirects are not
    followed, so a 302 is returned as such. ``kw`` is as for ``connect``.

    Raises:
        AssertionError: If the server accepted the WebSocket.
    """
    try:
        ws = await _NoRedirects(url, **{**_DEFAULTS, **kw})
    except InvalidStatus as exc:
        response = exc.response
        headers: dict[str, str] = {}
        for name, value in response.headers.raw_items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        return response.status_code, headers, bytes(response.body)
    await ws.close()
    raise AssertionError(f"handshake to {url} was accepted (subprotocol {ws.subprotocol!r})")


async def assert_echoes_or_refused(url: str, status: int, **kw: Any) -> None:
    """``status`` 101: the handshake to ``url`` is accepted and echoes a message; else it is refused with ``status``."""
    if status != 101:
        assert (await expect_status(url, **kw))[0] == status
        return
    async with await connect(url, **kw) as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"


async def echo_status(url: str, headers: dict[str, str] | None = None, **kw: Any) -> int:
    """101 for a handshake (with ``headers``; ``kw`` as for ``connect``) accepted and echoing a message, else
    the refusal's status."""
    if headers is not None:
        kw["additional_headers"] = headers
    try:
        ws = await connect(url, **kw)
    except InvalidStatus as refusal:
        return refusal.response.status_code
    async with ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"
    return 101


async def count_handshake(url: str, outcomes: Counter[int]) -> None:
    """Open and close a WebSocket to ``url``; count its outcome in ``outcomes``: 101, or the refusal's status."""
    try:
        async with await connect(url, open_timeout=30):
            outcomes[101] += 1
    except InvalidStatus as refused:
        outcomes[refused.response.status_code] += 1
