"""``subscription_key.headers`` names only a header a client sends of its own accord, with its key.

``subscription_key.headers: [Host]`` passed ``check`` without a word, and the handshake's ``Host`` then
acted as the key: every client of that host name was admitted once some subscription's key was the host
name. The same held for the handshake's own headers (``Sec-WebSocket-Version: 13`` is every client's), for
``Origin`` (a browser sends its page's site, the same for every visitor) and for the proxy headers the
gateway replaces (a key in ``X-Forwarded-For`` was the client's address). Each is now a problem by field
path: in ``check``, at start-up, and so in every configuration the management API validates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from asgi_ws_gateway import ConfigError, load_config
from support.processes import cli

UPSTREAM = "ws://127.0.0.1:9/"


def _config(headers: list[str]) -> dict[str, Any]:
    return {"subscription_key": {"headers": headers}, "apis": [{"name": "a", "path": "/a", "upstreams": [UPSTREAM]}]}


@pytest.mark.parametrize(
    ("header", "why"),
    [
        ("Host", "WebSocket handshake"),
        ("host", "WebSocket handshake"),
        ("Sec-WebSocket-Key", "WebSocket handshake"),
        ("Sec-WebSocket-Version", "WebSocket handshake"),
        ("Sec-WebSocket-Protocol", "WebSocket handshake"),
        ("Upgrade", "WebSocket handshake"),
        ("Connection", "WebSocket handshake"),
        ("Content-Length", "WebSocket handshake"),
        ("Transfer-Encoding", "WebSocket handshake"),
        ("Origin", "set by browsers"),
        ("X-Forwarded-For", "a proxy's header"),
        ("X-Forwarded-Host", "a proxy's header"),
        ("Forwarded", "a proxy's header"),
        ("X-Real-IP", "a proxy's header"),
    ],
)
def test_a_header_no_client_chooses_cannot_carry_the_key(header: str, why: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_config(["X-Subscription-Key", header]))
    (problem,) = info.value.problems
    assert problem.startswith(f"subscription_key.headers[1]: {header!r} "), problem
    assert why in problem and "cannot carry a subscription key" in problem


@pytest.mark.parametrize(
    "header", ["X-Subscription-Key", "Ocp-Apim-Subscription-Key", "Authorization", "Cookie", "X-Api-Key"]
)
def test_headers_a_client_sends_its_key_in_stay_valid(header: str) -> None:
    load_config(_config([header]))


async def test_check_names_the_field_and_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        f"subscription_key:\n  headers: [Host]\napis:\n  - name: a\n    path: /a\n    upstreams: [{UPSTREAM}]\n"
    )
    code, out, err = await cli("check", str(config))
    assert code == 2, out
    assert "subscription_key.headers[0]: 'Host' belongs to the HTTP connection or the WebSocket handshake" in err
