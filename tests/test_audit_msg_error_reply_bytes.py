"""Audit, end to end: an error reply is held to the API's ``max_message_size`` in bytes, as sent.

docs/security.md's limits: "`transform-message` `set` values of one message, an `error_reply`:
`max_message_size` together, never built past; the reply: the default one". The templates counted
characters as they rendered, and the reply goes out as UTF-8, JSON-escaped: a client's query value
of 600 ``"`` (a JSON reply) or 900 ``é`` (a text reply) within a 1,024-byte limit came back as a
reply of 1,208 or 1,800 bytes (found by a black-box pass against ``asgi-ws-gateway run``, on the
frame relay and the relay alike). The gateway's protocol under a real uvicorn, a real upstream.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest

from support.clients import connect
from support.configs import api_entry
from support.gateway import PASSTHROUGH, ProbedGateway
from support.servers import UvicornFactory
from support.upstream import UpstreamServer

LIMIT = 1024
CONNECTORS: dict[str, dict[str, Any]] = {"frame relay": {}, "relay": {"passthrough": False}}
DROP = {"inbound": [{"limit-message-size": {"max": 10, "action": "drop"}}]}


async def _reply_to_a_drop(url: str) -> bytes:
    async with await connect(url, max_size=None) as ws:
        await ws.send("x" * 20)  # over the policy's 10 bytes: dropped, answered
        answer = await ws.recv()
        await ws.send("ok")  # the connection goes on
        assert await ws.recv() == "ok"
    return answer.encode() if isinstance(answer, str) else answer


def _serve(uvicorn_server: UvicornFactory, upstream: UpstreamServer, connector: str, reply: dict[str, Any]) -> str:
    entry = api_entry(upstream, max_message_size=LIMIT, message_policies={**DROP, "error_reply": reply},
                      **CONNECTORS[connector])  # fmt: skip
    return uvicorn_server(ProbedGateway({"apis": [entry]}), ws=PASSTHROUGH).url("/ws/echo")


@pytest.mark.parametrize("connector", list(CONNECTORS))
@pytest.mark.parametrize("value", ['"' * 600, "\x01" * 200], ids=["quotes", "controls"])
async def test_a_json_reply_escaped_past_the_limit_is_the_default_reply(
    upstream: UpstreamServer, uvicorn_server: UvicornFactory, connector: str, value: str
) -> None:
    url = _serve(uvicorn_server, upstream, connector, {"format": "json", "template": {"e": "{query.x}"}})
    answer = await _reply_to_a_drop(f"{url}?x={quote(value)}")
    assert len(answer) <= LIMIT
    assert json.loads(answer)["type"] == "error"  # the default reply


@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_a_text_reply_of_multibyte_characters_past_the_limit_is_the_default_reply(
    upstream: UpstreamServer, uvicorn_server: UvicornFactory, connector: str
) -> None:
    url = _serve(uvicorn_server, upstream, connector, {"format": "text", "template": "{query.x}"})
    answer = await _reply_to_a_drop(f"{url}?x={quote('é' * 900)}")  # 900 characters, 1,800 bytes
    assert len(answer) <= LIMIT
    assert json.loads(answer)["type"] == "error"


@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_a_reply_of_exactly_the_limit_is_sent_as_configured_one_byte_more_is_not(
    upstream: UpstreamServer, uvicorn_server: UvicornFactory, connector: str
) -> None:
    url = _serve(uvicorn_server, upstream, connector, {"format": "json", "template": {"e": "{query.x}"}})
    fits = "a" * (LIMIT - len('{"e":""}'))
    assert await _reply_to_a_drop(f"{url}?x={fits}") == b'{"e":"' + fits.encode() + b'"}'
    answer = await _reply_to_a_drop(f"{url}?x={fits}a")
    assert json.loads(answer)["type"] == "error"
