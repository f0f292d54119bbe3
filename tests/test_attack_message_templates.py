"""Attacks on the templates message policies write into messages (``transform-message``'s ``set``,
``error_reply``): values a JWT may carry that neither UTF-8 nor orjson can write. Real uvicorn (the
relay and the frame relay) in front of a real ``websockets`` upstream whose echo is what it received."""

from __future__ import annotations

import json
import time
from typing import Any

import jwt
import pytest

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.standalone import not_found
from support.clients import connect
from support.jwts import HS_SECRET
from support.relays import both_relays, module_upstream  # noqa: F401 - the fixtures uvicorn_server, upstream_server
from support.servers import UvicornFactory
from support.upstream import UpstreamServer

JWT = {"validate-jwt": {"algorithms": ["HS256"], "secret": HS_SECRET, "audience": "chat"}}


def _serve(uvicorn_server: UvicornFactory, upstream: UpstreamServer, policies: dict[str, Any]) -> str:
    config = {"name": "echo", "path": "/ws/echo", "upstreams": [upstream.url("/echo")], "policies": [JWT],
              "message_policies": policies}  # fmt: skip
    return uvicorn_server(WebSocketGateway(not_found, config={"apis": [config]})).url("/ws/echo")


def _auth(**claims: Any) -> dict[str, Any]:
    """A token with ``claims`` (integers of any size, which Python's json reads back)."""
    body = {"aud": "chat", "sub": "alice", "exp": int(time.time()) + 300, **claims}
    return {"additional_headers": {"Authorization": f"Bearer {jwt.encode(body, HS_SECRET, algorithm='HS256')}"}}


# A claim's value (as the token carries it), a template, and what the upstream reads. A lone surrogate
# ("\ud800") no longer gets this far: validate-jwt refuses the token (tests/test_jwt_lone_surrogate.py).
UNWRITABLE: dict[str, tuple[Any, str, Any]] = {
    "an integer beyond 64 bits": (2**70, "{jwt.c}", str(2**70)),
    "in text": (2**70, "by {jwt.c}", f"by {2**70}"),
    "a negative one": (-(2**63) - 1, "{jwt.c}", str(-(2**63) - 1)),
    "in an object": ({"k": [2**64]}, "{jwt.c}", {"k": [str(2**64)]}),
}


@pytest.mark.parametrize("claim, template, expected", UNWRITABLE.values(), ids=UNWRITABLE.keys())
async def test_a_claim_json_cannot_write_is_stamped_writable(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer, claim: Any, template: str, expected: Any
) -> None:
    """The stamp failed to serialize: every message of the connection closed it with 1011."""
    url = _serve(uvicorn_server, upstream_server, {"inbound": [{"transform-message": {"set": {"who": template}}}]})
    async with await connect(url, **_auth(c=claim)) as ws:
        for _ in range(2):
            await ws.send('{"text": "hi"}')
            assert json.loads(await ws.recv()) == {"text": "hi", "who": expected}


@pytest.mark.parametrize("reply", [{"format": "text", "template": "ERR {error.reason} for {jwt.c}"},
                                   {"format": "json", "template": {"error": "{error.reason}", "for": "{jwt.c}"}}],
                         ids=["text", "json"])  # fmt: skip
async def test_an_error_reply_with_such_a_claim_is_sent(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer, reply: dict[str, Any]
) -> None:
    """The error reply could not be encoded: a dropped message closed both sides with 1011."""
    url = _serve(uvicorn_server, upstream_server, {"inbound": [{"validate-message": {}}], "error_reply": reply})
    async with await connect(url, **_auth(c=2**70)) as ws:
        await ws.send("not JSON")
        answer = await ws.recv()
        assert answer == f"ERR invalid_json for {2**70}" or json.loads(answer) == {
            "error": "invalid_json",
            "for": str(2**70),
        }
        await ws.send("{}")
        assert await ws.recv() == "{}"
