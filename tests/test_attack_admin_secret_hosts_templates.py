"""A ``set-backend-service`` host written as a template is never a host the operator named.

The file's API picks its backend by a token claim (``ws://{jwt.region}:PORT``); the secret-host rule
took the text ``{jwt.region}`` as one of the operator's hosts, so an API created here with the same
template, and its own ``validate-jwt`` key, went wherever the holder's token said, with the global
credential. The "attacker's" server listens on 127.0.0.2, on the port of the real upstream.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
from websockets.exceptions import InvalidStatus

from support.clients import connect
from support.management import api, managed_gateway
from support.upstream import UpstreamServer

SECRET = "operator-upstream-key-0123456789"
AUTH = {"set-header": {"header": "X-Internal-Auth", "value": SECRET}}
OPERATOR_KEY = "o" * 40
HOLDER_KEY = "h" * 40


class Listener:
    """A TCP server on 127.0.0.2 that records each request head it receives and answers 403."""

    def __init__(self) -> None:
        self.heads: list[bytes] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            self.heads.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def listener(upstream: UpstreamServer) -> AsyncIterator[Listener]:
    recorder = Listener()
    server = await asyncio.start_server(recorder.serve, "127.0.0.2", upstream.port)
    async with server:
        yield recorder


def _by_region(name: str, path: str, upstream: UpstreamServer, key: str) -> dict[str, Any]:
    """An API whose backend host is a claim; its backends on loopback, which a claim's host reaches only
    where upstream_networks.allow names it."""
    return api(name, path, upstream, policies=[
        {"validate-jwt": {"secret": key, "algorithms": ["HS256"]}},
        {"set-backend-service": {"base_url": f"ws://{{jwt.region}}:{upstream.port}"}},
    ], upstream_networks={"allow": ["127.0.0.0/8"]})  # fmt: skip


def _token(key: str, region: str) -> dict[str, str]:
    token = jwt.encode({"region": region, "exp": int(time.time()) + 300}, key, algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


async def test_a_templated_backend_host_is_not_the_operators(
    tmp_path: Any, upstream: UpstreamServer, listener: Listener
) -> None:
    config = {"apis": [_by_region("chat", "/chat", upstream, OPERATOR_KEY)], "policies": [AUTH]}
    with managed_gateway(config, tmp_path / "state.json") as running:
        async with running.http() as http:
            refused = await http.post("apis", json=_by_region("mine", "/mine", upstream, HOLDER_KEY))
            assert refused.status_code == 422, refused.text
            (problem,) = refused.json()["problems"]
            assert problem.startswith(
                f"policies (set-backend-service): ws://{{jwt.region}}:{upstream.port} (a host written as a template"
            )
            assert "the global set-header X-Internal-Auth" in problem and SECRET not in problem
        with pytest.raises(InvalidStatus):
            await connect(running.url("/mine"), additional_headers=_token(HOLDER_KEY, "127.0.0.2"))
        # The file's own API is the operator's: it runs as written.
        async with await connect(running.url("/chat"), additional_headers=_token(OPERATOR_KEY, "127.0.0.1")) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
    assert listener.heads == []
    assert [h.headers["x-internal-auth"] for h in upstream.handshakes] == [[SECRET]]


async def test_a_templated_backend_host_is_not_an_allowed_host_either(
    tmp_path: Any, upstream: UpstreamServer, listener: Listener
) -> None:
    """Allowing the hosts a template may name today does not allow the template: any value picks the host."""
    config = {
        "apis": [_by_region("chat", "/chat", upstream, OPERATOR_KEY)],
        "policies": [AUTH],
        "management": {"allowed_upstream_hosts": ["127.0.0.1"]},
    }
    with managed_gateway(config, tmp_path / "state.json") as running:
        async with running.http() as http:
            refused = await http.post("apis", json=_by_region("mine", "/mine", upstream, HOLDER_KEY))
            assert refused.status_code == 422, refused.text
    assert listener.heads == []
