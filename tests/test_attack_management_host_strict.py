"""The management API's ``Host`` check reads ``Host`` as the handshake does: host[:port] as clients send it.

:class:`~asgi_ws_gateway.management.forgery.HostCheck` answers only a loopback name, an IP address or
an allowed name (DNS rebinding). It read ``Host`` with ``urlsplit``, which takes text after an IPv6
literal's ``]`` for nothing (``[::1]evil``, ``[::1]x:80``: loopback) and a name with ``,`` or ``;``
whole (``evil.test,gw.localhost`` ends in ``.localhost``: loopback). Every server behind a proxy reads
such a value its own way. Now the host is the handshake's (``split_host``, spelled by ``hostname``):
anything else is 400; what was answered before still is. In process, one ASGI call per request.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import pytest

from asgi_ws_gateway.management.forgery import HostCheck


async def _ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


CHECK = HostCheck(_ok, allowed=["gw", "*.example.com", "pinned.test:8443"])


async def _status(host: str) -> int:
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": "/apis", "raw_path": b"/apis", "query_string": b"", "root_path": "",
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
        "headers": [(b"host", host.encode("latin-1"))],
    }  # fmt: skip
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    await CHECK(scope, receive, send)
    return int(next(m["status"] for m in sent if m["type"] == "http.response.start"))


NOT_HOSTS = [
    "[::1]evil",  # was loopback: text after "]" ignored
    "[::1]x:80",  # was loopback, port 80
    "[::1].evil.test",  # was loopback
    "evil.test,gw.localhost",  # was loopback: ends in .localhost
    "evil.test;gw.localhost",  # was loopback
    "evil.test gw.localhost",  # was loopback
    "evil.test,127.0.0.1",  # was 421; any text in a name now 400
    "gw%2eexample.com",
    "[::1]:80x",
    "[::1%25eth0]",
    "[127.0.0.1]",
    "::1",
    "user@localhost",
    "localhost/x",
    "localhost:80:80",
    "localhost:65536",
    "",
]


@pytest.mark.parametrize("host", NOT_HOSTS)
async def test_a_host_that_is_not_host_port_is_a_400(host: str) -> None:
    assert await _status(host) == 400


@pytest.mark.parametrize(
    "host",
    [
        "localhost", "localhost:8080", "LOCALHOST", "app.localhost", "localhost.", "127.0.0.1", "127.0.0.1:65535",
        "[::1]", "[::1]:8443", "[0:0::1]", "[::ffff:7f00:1]", "10.1.2.3:80", "gw", "GW:8443", "gw.", "gw:",
        "gw:08443", "a.example.com", "pinned.test:8443", " gw ",
    ],
)  # fmt: skip
async def test_a_host_clients_send_is_answered(host: str) -> None:
    """Loopback names, IP literals and allowed names, any case, with a port: answered as before; with a trailing
    dot (the same name) or blanks around it (servers strip them), answered now too (were 421)."""
    assert await _status(host) == 200


@pytest.mark.parametrize("host", ["evil.test", "evil.test:80", "gw.evil.test", "example.com", "pinned.test:80"])
async def test_a_name_not_allowed_is_misdirected(host: str) -> None:
    assert await _status(host) == 421
