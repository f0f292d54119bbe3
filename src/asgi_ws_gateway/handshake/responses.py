"""Refusing a handshake: an HTTP response through ``websocket.http.response``, or a plain close.

A 5xx refusal is the gateway's or a backend's failure: its detail (a backend URL, an errno, an
exception's text) helps an attacker map the inside and the client not at all. The client gets a
generic problem with the status and, when tracing is on, the trace id an operator can look up;
the detail goes to the log line and the handshake span (``expose_error_details`` shows it).
"""

from __future__ import annotations

import json
from http import HTTPStatus

from .._types import Scope, Send
from ..errors import HandshakeDenied
from ..redact import redact_text

# What a client is told about a 5xx refusal unless ``expose_error_details`` is on.
_GENERIC_DETAIL = {
    500: "the gateway could not handle the request",
    502: "the service behind this API is not available",
    503: "the service is not available right now; try again later",
    504: "the service behind this API did not answer in time",
}


def problem_body(status: int, detail: str, title: str | None = None, *, trace_id: str | None = None) -> bytes:
    """An RFC 9457 ``application/problem+json`` document (with ``trace_id`` when given)."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    problem: dict[str, object] = {"type": "about:blank", "title": title or phrase, "status": status, "detail": detail}
    if trace_id is not None:
        problem["trace_id"] = trace_id
    return json.dumps(problem).encode()


def public_problem(denial: HandshakeDenied, *, expose_details: bool = False, trace_id: str | None = None) -> bytes:
    """The problem document the client gets for ``denial``: 5xx details are replaced unless exposed."""
    if denial.status >= 500:
        if not expose_details:
            detail = _GENERIC_DETAIL.get(denial.status, "the request could not be completed")
            return problem_body(denial.status, detail, trace_id=trace_id)
        # Exposed for development, still without credentials (a configured URL's password, say).
        return problem_body(denial.status, redact_text(denial.detail), denial.title, trace_id=trace_id)
    return problem_body(denial.status, denial.detail, denial.title, trace_id=trace_id)


async def send_denial(
    scope: Scope, send: Send, denial: HandshakeDenied, *, expose_details: bool = False, trace_id: str | None = None
) -> None:
    """Refuse the handshake with ``denial.status`` (servers without the extension answer 403).

    ``denial.body``, when set (an upstream's own refusal), is sent as is; otherwise the body is
    :func:`public_problem`.
    """
    if "websocket.http.response" not in (scope.get("extensions") or {}):
        await send({"type": "websocket.close", "code": 1008, "reason": ""})
        return
    if denial.body is not None:
        body, headers = denial.body, list(denial.headers)
    else:
        body = public_problem(denial, expose_details=expose_details, trace_id=trace_id)
        headers = [(n, v) for n, v in denial.headers if n.lower() != b"content-type"]
        headers.append((b"content-type", b"application/problem+json"))
    headers = [(n, v) for n, v in headers if n.lower() != b"content-length"]
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "websocket.http.response.start", "status": denial.status, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": body, "more_body": False})


__all__ = ["problem_body", "public_problem", "send_denial"]
