"""The access log as a test reads it from ``caplog``."""

from __future__ import annotations

import asyncio
import logging
import re

import pytest

ACCESS_LOGGER = "asgi_ws_gateway.access"
_KEEPALIVE_WARNING = re.compile(r"API \S+: ping_(interval|timeout): ")


def warnings_after_start(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The WARNING (and worse) records, but the start-up warning about a sub-second keepalive, which a
    test that waits for a ping to time out sets on purpose (config/keepalive_warnings.py)."""
    return [
        r for r in caplog.records
        if r.levelno >= logging.WARNING
        and not (r.name == "asgi_ws_gateway.middleware" and _KEEPALIVE_WARNING.match(r.getMessage()))
    ]  # fmt: skip


async def access_line(caplog: pytest.LogCaptureFixture) -> str:
    """The one connection's access line, once written (when both its sides are over)."""
    for _ in range(200):
        lines = [r.getMessage() for r in caplog.records if r.name == ACCESS_LOGGER]
        if lines:
            (line,) = lines
            return line
        await asyncio.sleep(0.05)
    raise AssertionError("no access line")
