"""The admin token and the name are read from exactly one header each (real uvicorn, real management API).

Two ``Authorization`` headers, the right token in the first, used to be a ``200``: the check read the
first while a proxy in front (or its log, or its own rules) may read the last. One credential per
request, as for the handshake policies (docs/security.md, "The management API"). Two ``Host`` lines,
the first a loopback address, were answered too: the DNS-rebinding check read the first, where a
handshake with two is a 400 (RFC 9112 §3.2).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from support.management import TOKEN, Managed, api, managed_gateway
from support.rawhttp import status_of
from support.upstream import UpstreamServer


@pytest.fixture
def managed(upstream: UpstreamServer, tmp_path: Path) -> Iterator[Managed]:
    with managed_gateway({"apis": [api("echo", "/ws/echo", upstream)]}, tmp_path / "state.json") as running:
        yield running


async def _status(managed: Managed, headers: list[tuple[str, str]]) -> int:
    async with httpx2.AsyncClient(base_url=managed.base + "/", trust_env=False, timeout=10) as http:
        return (await http.get("apis", headers=headers)).status_code


@pytest.mark.parametrize(
    "headers",
    [
        [("Authorization", f"Bearer {TOKEN}"), ("Authorization", "Bearer other")],
        [("Authorization", "Bearer other"), ("Authorization", f"Bearer {TOKEN}")],
        [("Authorization", f"Bearer {TOKEN}"), ("authorization", f"Bearer {TOKEN}")],
    ],
    ids=["right-then-wrong", "wrong-then-right", "right-twice"],
)
async def test_two_authorization_headers_are_refused(managed: Managed, headers: list[tuple[str, str]]) -> None:
    assert await _status(managed, headers) == 401


@pytest.mark.parametrize("value", [f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER  {TOKEN}"])
async def test_one_authorization_header_in_any_scheme_case_is_accepted(managed: Managed, value: str) -> None:
    assert await _status(managed, [("Authorization", value)]) == 200


def _raw_get(port: int, host_lines: str) -> bytes:
    request = f"GET /_gateway/apis HTTP/1.1\r\n{host_lines}Authorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request.encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize(
    "host_lines",
    ["Host: 127.0.0.1\r\nHost: evil.example\r\n", "Host: 127.0.0.1\r\nHost: 127.0.0.1\r\n"],
    ids=["loopback-then-foreign", "equal"],
)
async def test_two_host_headers_are_a_400(managed: Managed, host_lines: str) -> None:
    """Exactly one Host (RFC 9112 §3.2), as for a handshake: the DNS-rebinding check read the first."""
    answer = await asyncio.to_thread(_raw_get, managed.server.port, host_lines)
    assert status_of(answer) == 400
    assert b"2 Host headers" in answer
    assert status_of(await asyncio.to_thread(_raw_get, managed.server.port, "Host: 127.0.0.1\r\n")) == 200
