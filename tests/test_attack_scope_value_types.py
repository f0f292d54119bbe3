"""Scope values of no ASGI type, or text where an address belongs, in the parts the middleware attack pass
could only report: what goes upstream as ``X-Forwarded-For``, the start-up failure app, the management mount.

uvicorn's own proxy headers (on for a peer on 127.0.0.1) put a client's ``X-Forwarded-For`` text in
``scope["client"]``: it went upstream as the TCP peer (``X-Forwarded-For: x1``, and a policy reading the
header saw it), and a ``bytes`` host was a 500. ``extensions: None`` was a ``TypeError`` in the start-up
failure app; a ``str`` ``raw_path`` made every management request a 400 "misspelled", and a ``bytes``
``root_path`` a redirect to ``b'...'``.
"""

from __future__ import annotations

from typing import Any

import pytest

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.errors import ConfigError
from asgi_ws_gateway.management import GatewayManagement
from asgi_ws_gateway.standalone import not_found
from asgi_ws_gateway.startup import StartupFailure
from asgi_ws_gateway.upstream.headers import forwarding_headers

TOKEN = "a-long-enough-admin-token-for-tests"


@pytest.mark.parametrize(
    ("peer", "sent"),
    [("x1", "unknown"), ("<b>x</b>", "unknown"), (b"127.0.0.1", "unknown"), ("::ffff:203.0.113.7", "203.0.113.7"),
     ("203.0.113.7", "203.0.113.7"), ("2001:db8::1", "2001:db8::1")],
)  # fmt: skip
@pytest.mark.parametrize("trust_forwarded", [False, True])
def test_the_upstream_gets_the_peer_as_an_address_or_unknown(peer: Any, sent: str, trust_forwarded: bool) -> None:
    scope = {"type": "websocket", "client": (peer, 5), "headers": [(b"x-forwarded-for", b"10.9.9.9")]}
    forwarded = dict(forwarding_headers(scope, trust_forwarded=trust_forwarded))["x-forwarded-for"]
    assert forwarded.split(", ")[-1] == sent


def test_no_client_sends_no_peer() -> None:
    assert "x-forwarded-for" not in dict(forwarding_headers({"type": "websocket", "headers": []}))


async def _run(app: Any, scope: dict[str, Any], incoming: list[dict[str, Any]]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


@pytest.mark.parametrize("extensions", [None, {}])
async def test_the_start_up_failure_app_closes_a_websocket_without_the_extension(extensions: Any) -> None:
    app = StartupFailure(ConfigError(["apis[0].path: wrong"], "environment"))
    scope = {"type": "websocket", "path": "/ws", "headers": [], "extensions": extensions}
    sent = await _run(app, scope, [{"type": "websocket.connect"}])
    assert sent == [{"type": "websocket.close", "code": 1011}]


def _management() -> GatewayManagement:
    return GatewayManagement(WebSocketGateway(not_found, config={"apis": []}), admin_token=TOKEN, path="/_gateway")


def _http(path: str, **scope: Any) -> dict[str, Any]:
    return {"type": "http", "method": "GET", "path": path, "query_string": b"", "headers": [(b"host", b"127.0.0.1")],
            "scheme": "http", "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 5), "http_version": "1.1",
            "root_path": "", **scope}  # fmt: skip


async def test_a_str_raw_path_is_read_as_absent_by_the_management_mount() -> None:
    sent = await _run(_management(), _http("/_gateway/healthz", raw_path="/_gateway/healthz"),
                      [{"type": "http.request", "body": b""}])  # fmt: skip
    assert sent[0]["status"] == 200


async def test_a_bytes_root_path_is_read_as_absent_by_the_management_mount() -> None:
    sent = await _run(_management(), _http("/_gateway", root_path=b"/x"), [{"type": "http.request", "body": b""}])
    location = dict(sent[0]["headers"]).get(b"location", b"")
    assert location.endswith(b"/_gateway/console") and b"b'" not in location
