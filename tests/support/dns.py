"""Host names a test gives addresses to, answered by ``socket.getaddrinfo`` in this process."""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import Any

import pytest

_REAL_GETADDRINFO = socket.getaddrinfo


@contextlib.contextmanager
def fake_dns() -> Iterator[dict[str, list[str]]]:
    """``dns[name] = [address, ...]`` (IPv4 or IPv6) while inside; any other name resolves as usual."""
    names: dict[str, list[str]] = {}

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name not in names:
            return _REAL_GETADDRINFO(host, port, *args, **kwargs)
        return [
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, int(port), 0, 0))
            if ":" in address
            else (socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port)))
            for address in names[name]
        ]

    socket.getaddrinfo = getaddrinfo
    try:
        yield names
    finally:
        socket.getaddrinfo = _REAL_GETADDRINFO


__all__ = ["fake_dns"]


GUARD_LOG = "asgi_ws_gateway.upstream.address_guard"


def guard_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The WARNINGs of the upstream address guard (an address not connected to) ``caplog`` captured."""
    return [r.getMessage() for r in caplog.records if r.name == GUARD_LOG and r.levelno == logging.WARNING]
