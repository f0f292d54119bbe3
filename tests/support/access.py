"""The access log as a test reads it from ``caplog``."""

from __future__ import annotations

import asyncio

import pytest

ACCESS_LOGGER = "asgi_ws_gateway.access"


async def access_line(caplog: pytest.LogCaptureFixture) -> str:
    """The one connection's access line, once written (when both its sides are over)."""
    for _ in range(200):
        lines = [r.getMessage() for r in caplog.records if r.name == ACCESS_LOGGER]
        if lines:
            (line,) = lines
            return line
        await asyncio.sleep(0.05)
    raise AssertionError("no access line")
