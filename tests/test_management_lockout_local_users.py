"""On loopback the admin lockout counts each local user, not the address every local user shares.

Keyed by 127.0.0.1, any local user locked the administrator out for a minute at a time with 30 wrong
tokens, and a guesser took a fresh key per address of 127.0.0.0/8 (any user may bind one). The kernel
says which user owns a loopback client's socket: that user is the key now. A real management server;
the other user is ``nobody``, its requests sent by bash's ``/dev/tcp`` (it cannot read this Python).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from asgi_ws_gateway.management.local_user import loopback_user
from support.management import TOKEN, Managed, api, managed_gateway
from support.upstream import UpstreamServer

NOBODY = 65534
pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.geteuid() != 0, reason="Linux, and root to send as another user"
)


def _request(managed: Managed, token: str) -> str:
    return (f"GET /_gateway/apis HTTP/1.1\r\nHost: 127.0.0.1:{managed.server.port}\r\n"
            f"Authorization: Bearer {token}\r\nConnection: close\r\n\r\n")  # fmt: skip


async def _as_root(managed: Managed, token: str, source: str = "127.0.0.1") -> int:
    """The status of one request with ``token``, from this process's user and ``source``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", managed.server.port, local_addr=(source, 0))
    try:
        writer.write(_request(managed, token).encode())
        return int((await reader.readline()).split()[1])
    finally:
        writer.close()
        await writer.wait_closed()


async def _as_nobody(managed: Managed, tokens: list[str]) -> list[int]:
    """The statuses of one request per token, each on its own connection, sent as user ``nobody``."""
    script = "".join(
        f"exec 3<>/dev/tcp/127.0.0.1/{managed.server.port}; printf %s {_quoted(_request(managed, token))} >&3; "
        'IFS= read -r line <&3; echo "$line"; exec 3<&-\n'
        for token in tokens
    )

    def run() -> str:
        done = subprocess.run(["bash", "-c", script], user=NOBODY, group=NOBODY, extra_groups=[], cwd="/",
                              capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
        return done.stdout

    return [int(line.split()[1]) for line in (await asyncio.to_thread(run)).splitlines()]


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


async def test_another_local_user_guessing_locks_out_only_itself(upstream: UpstreamServer, tmp_path: Path) -> None:
    with managed_gateway({"apis": [api("echo", "/ws/echo", upstream)]}, tmp_path / "state.json") as managed:
        guesses = await _as_nobody(managed, [f"guess-{n}" for n in range(31)] + [TOKEN])
        assert guesses == [401] * 30 + [429, 429]  # locked: its next guess, and the right token, wait
        assert await _as_root(managed, TOKEN) == 200  # the administrator, from the same address: admitted
        assert await _as_root(managed, TOKEN, source="127.0.0.2") == 200
        assert await _as_nobody(managed, ["guess-again", TOKEN]) == [429, 429]  # still locked out
        # The administrator's own user is counted too: its wrong tokens lock it, over any loopback address.
        mine = [await _as_root(managed, f"mine-{n}", source=f"127.0.0.{2 + n % 3}") for n in range(31)]
        assert mine == [401] * 30 + [429]
        assert await _as_root(managed, TOKEN) == 429


async def test_a_guesser_gets_no_fresh_key_per_loopback_address(upstream: UpstreamServer, tmp_path: Path) -> None:
    """Every address of 127.0.0.0/8 is this host's: 40 of them were 40 keys, 30 guesses each."""
    with managed_gateway({"apis": [api("echo", "/ws/echo", upstream)]}, tmp_path / "state.json") as managed:
        statuses = [await _as_root(managed, f"guess-{n}", source=f"127.0.0.{n + 2}") for n in range(40)]
    assert statuses == [401] * 30 + [429] * 10


def test_only_the_tcp_peer_itself_is_looked_up() -> None:
    """A client a proxy reported, an address that is not loopback, a Unix socket: no look-up (None)."""
    scope = {"client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2)}
    assert loopback_user(scope, "203.0.113.7") is None  # the client is the one a trusted proxy named
    assert loopback_user({"client": ("203.0.113.7", 1), "server": ("203.0.113.1", 2)}, "203.0.113.7") is None
    assert loopback_user({"client": None, "server": ("/run/gw.sock", None)}, "unknown") is None
    assert loopback_user(scope, "127.0.0.1") is None  # no such connection: the address keys it
