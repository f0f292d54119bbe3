"""Refusing a handshake: an HTTP response through ``websocket.http.response``, or a plain close."""

from __future__ import annotations

import json
from http import HTTPStatus

from ._types import Scope, Send
from .errors import HandshakeDenied


def problem_body(status: int, detail: str, title: str | None = None) -> bytes:
    """An RFC 9457 ``application/problem+json`` document."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return json.dumps({"type": "about:blank", "title": title or phrase, "status": status, "detail": detail}).encode()


async def send_denial(scope: Scope, send: Send, denial: HandshakeDenied) -> None:
    """Refuse the handshake with ``denial.status`` (servers without the extension answer 403)."""
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008, "reason": ""})
        return
    if denial.body is not None:
        body, headers = denial.body, list(denial.headers)
    else:
        body = problem_body(denial.status, denial.detail, denial.title)
        headers = [(n, v) for n, v in denial.headers if n.lower() != b"content-type"]
        headers.append((b"content-type", b"application/problem+json"))
    headers = [(n, v) for n, v in headers if n.lower() != b"content-length"]
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "websocket.http.response.start", "status": denial.status, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": body, "more_body": False})


__all__ = ["problem_body", "send_denial"]
