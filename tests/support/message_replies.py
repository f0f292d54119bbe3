"""An API whose message policies are under test, in front of an upstream echoing what it received,
and how to read what comes back: the upstream's echo, the gateway's error reply or its ack."""

from __future__ import annotations

import json
from typing import Any

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.standalone import not_found
from support.jwts import HS_SECRET, token
from support.servers import UvicornFactory
from support.upstream import UpstreamServer

JWT = {"validate-jwt": {"algorithms": ["HS256"], "secret": HS_SECRET, "audience": "chat"}}
STAMP = {"transform-message": {"set": {"user": "{jwt.sub}"}}}


def serve(uvicorn_server: UvicornFactory, upstream: UpstreamServer, inbound: list[Any], **api: Any) -> str:
    """One API at /ws/echo in front of the upstream's echo (what it received comes back); its URL."""
    config = {"name": "echo", "path": "/ws/echo", "upstreams": [upstream.url("/echo")], "policies": [JWT],
              "message_policies": {"inbound": inbound}, **api}  # fmt: skip
    return uvicorn_server(WebSocketGateway(not_found, config={"apis": [config]})).url("/ws/echo")


def auth(sub: str = "alice") -> dict[str, Any]:
    return {"additional_headers": {"Authorization": f"Bearer {token(sub=sub)}"}}


async def reply(ws: Any, message: str | bytes) -> str | bytes:
    await ws.send(message)
    answer: str | bytes = await ws.recv()
    return answer


def error(answer: str | bytes) -> str | None:
    """The gateway's error reply's reason, or None when ``answer`` is the upstream's echo."""
    try:
        read = json.loads(answer)
    except ValueError:
        return None
    return str(read["error"]) if isinstance(read, dict) and read.get("type") == "error" else None


def answer_kind(answer: str | bytes) -> str:
    """What the gateway answered (an error's reason, or the ack's type), or ``echo``: the upstream's."""
    try:
        read = json.loads(answer)
    except ValueError:
        return "echo"
    if isinstance(read, dict) and read.get("type") == "error":
        return str(read["error"])
    if isinstance(read, dict) and read.get("type") == "auth.refresh.ok":
        return "auth.refresh.ok"
    return "echo"
