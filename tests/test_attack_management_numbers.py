"""Attacks on the numbers in a management request's head: ``Content-Length`` and the Host's port.

``int()`` takes ``+5``, `` 5``, ``1_0`` and ``٣`` and raises on ``²`` or past 4300 digits. The API
is an ASGI app any server may run, and not every server checks these headers, so the API does: a
number that is not 1 to 19 (a port: 1 to 5) ASCII digits is a 400 before anything else, never a
500. In process, one ASGI call per request; the admin token is wrong, so a head that passes gets 401.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pytest

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.management import FileStore, GatewayManagement
from asgi_ws_gateway.standalone import not_found

BAD_NUMBERS = ["+2", " 2", "2 ", "1_0", "-1", "", "٣", "²", "0x2", "2" * 20, "1" * 5000]
BAD_PORTS = [*(value for value in BAD_NUMBERS if value), "65536", "99999"]  # "host:" is allowed (RFC 3986: *DIGIT)


def _shown(value: str) -> str:
    return repr(value) if len(value) <= 20 else f"{len(value)}-digits"


@pytest.fixture
def management(tmp_path: Path) -> GatewayManagement:
    gateway = WebSocketGateway(not_found, config={"apis": []})
    return GatewayManagement(
        gateway, admin_token="right-token", store=FileStore(tmp_path / "state.json"), allowed_hosts=["gw"]
    )


async def _status(management: GatewayManagement, headers: dict[str, str]) -> int:
    """The status of ``POST /apis`` with ``headers`` (and a wrong token) sent straight to the API's ASGI app."""
    scope: dict[str, Any] = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/apis", "raw_path": b"/apis", "query_string": b"", "root_path": "",
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
        "headers": [(k.encode("latin-1"), v.encode()) for k, v in
                    {"authorization": "Bearer wrong", "content-type": "application/json", **headers}.items()],
    }  # fmt: skip
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    try:
        await management.api(scope, receive, send)
    except Exception:  # what a server turns into a bare 500
        return 500
    return int(next(m["status"] for m in sent if m["type"] == "http.response.start"))


@pytest.mark.parametrize("value", BAD_NUMBERS, ids=_shown)
async def test_a_content_length_that_is_not_ascii_digits_is_a_400(management: GatewayManagement, value: str) -> None:
    assert await _status(management, {"host": "gw", "content-length": value}) == 400


@pytest.mark.parametrize("value", BAD_PORTS, ids=_shown)
async def test_a_host_port_that_is_not_a_port_number_is_a_400(management: GatewayManagement, value: str) -> None:
    for host in (f"gw:{value}", f"[::1]:{value}"):
        assert await _status(management, {"host": host, "content-length": "2"}) == 400, host


@pytest.mark.parametrize("host", ["gw", "gw:", "gw:8443", "gw:08443", "[::1]", "[::1]:8443", "127.0.0.1:65535"])
async def test_a_valid_head_reaches_the_credential_check(management: GatewayManagement, host: str) -> None:
    assert await _status(management, {"host": host, "content-length": "2"}) == 401
