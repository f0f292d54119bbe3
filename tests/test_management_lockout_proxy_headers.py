"""The admin lockout keys the connection's real peer, even under uvicorn's default proxy headers.

``uvicorn app:app`` believes ``X-Forwarded-For`` from 127.0.0.1 unless told otherwise, and wrote it into
``scope["client"]``, which keyed the lockout: a local guesser gave every guess a new address and was
never locked, or wrote the administrator's address and locked the administrator out. The key is now
the transport's peer (on loopback, its socket's owner), a forwarding header believed only from the
gateway's own ``trusted_proxies``. Real uvicorn with its defaults, both HTTP implementations.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from support.management import TOKEN, Managed, api, managed_gateway
from support.upstream import UpstreamServer

pytestmark = pytest.mark.parametrize("http", ["h11", "httptools"])


async def _status(managed: Managed, token: str, forwarded_for: str | None = None, source: str = "127.0.0.1") -> int:
    """The status of ``GET /_gateway/apis`` with ``token``, from ``source``, on a connection of its own."""
    reader, writer = await asyncio.open_connection("127.0.0.1", managed.server.port, local_addr=(source, 0))
    head = (f"GET /_gateway/apis HTTP/1.1\r\nHost: 127.0.0.1:{managed.server.port}\r\n"
            f"Authorization: Bearer {token}\r\nConnection: close\r\n")  # fmt: skip
    if forwarded_for is not None:
        head += f"X-Forwarded-For: {forwarded_for}\r\n"
    try:
        writer.write(f"{head}\r\n".encode())
        return int((await reader.readline()).split()[1])
    finally:
        writer.close()
        await writer.wait_closed()


async def test_guesses_spread_over_forged_addresses_are_one_client(
    upstream: UpstreamServer, tmp_path: Path, http: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Each guess naming another X-Forwarded-For address: locked after 30 all the same (none was).
    The rewrite is said once, in a WARNING."""
    config = {"apis": [api("echo", "/ws/echo", upstream)]}
    with managed_gateway(config, tmp_path / "state.json", proxy_headers=True, http=http) as managed:
        with caplog.at_level(logging.WARNING, logger="asgi_ws_gateway.management"):
            statuses = [await _status(managed, f"guess-{n}", f"10.9.{n // 200}.{n % 200 + 1}") for n in range(40)]
        assert statuses == [401] * 30 + [429] * 10
        assert await _status(managed, TOKEN, "10.200.0.1") == 429  # a fresh forged address: still the same client
    said = [r for r in caplog.records if "rewrote the client address" in r.getMessage()]
    assert len(said) == 1


async def test_a_forged_address_does_not_lock_its_owner_out(
    upstream: UpstreamServer, tmp_path: Path, http: str
) -> None:
    """A local client writing the administrator's address (who comes through the trusted proxy at
    127.0.0.2) locks out only itself; the administrator's right token is answered."""
    config = {"apis": [api("echo", "/ws/echo", upstream)], "trusted_proxies": ["127.0.0.2"]}
    with managed_gateway(config, tmp_path / "state.json", proxy_headers=True, http=http) as managed:
        guesses = [await _status(managed, f"guess-{n}", "203.0.113.5") for n in range(31)]
        assert guesses == [401] * 30 + [429]
        assert await _status(managed, TOKEN, "203.0.113.5", source="127.0.0.2") == 200
        assert await _status(managed, TOKEN, "203.0.113.5") == 429  # the guesser itself, whatever it writes


async def test_a_trusted_proxy_still_names_its_clients(
    upstream: UpstreamServer, tmp_path: Path, http: str, caplog: pytest.LogCaptureFixture
) -> None:
    """uvicorn and trusted_proxies agreeing on 127.0.0.1: one forwarded client's guesses lock out neither
    the proxy nor another client behind it, and nothing is warned about."""
    config = {"apis": [api("echo", "/ws/echo", upstream)], "trusted_proxies": ["127.0.0.1"]}
    with managed_gateway(config, tmp_path / "state.json", proxy_headers=True, http=http) as managed:
        with caplog.at_level(logging.WARNING, logger="asgi_ws_gateway.management"):
            guesses = [await _status(managed, f"guess-{n}", "203.0.113.5") for n in range(31)]
        assert guesses == [401] * 30 + [429]
        assert await _status(managed, TOKEN, "198.51.100.7") == 200
    assert not [r for r in caplog.records if "rewrote the client address" in r.getMessage()]
