"""A ``set-backend-service`` to ``ws://`` on an API whose upstreams are ``wss://``: a start-up warning.

The URL connected decides TLS (upstream/tls.py), so such a file sends its handshakes, and the headers its
policies set (a credential), in clear text, as written. Valid, rarely meant: ``check`` and the log say so.
"""

from __future__ import annotations

from typing import Any

import pytest

from asgi_ws_gateway.policies.build import load_policies


def _warnings(upstream: str, *policies: Any, top: Any = ()) -> list[str]:
    api = {"name": "chat", "path": "/ws/chat", "upstreams": [upstream], "policies": list(policies)}
    config = {"apis": [api], "policies": list(top)}
    return [w for w in load_policies(config).warnings if "clear text" in w]


BACKEND = {"set-backend-service": {"base_url": "ws://chat-2.internal:9000"}}


@pytest.mark.parametrize(
    "where",
    [
        {"policies": [BACKEND]},
        {"top": [BACKEND]},
        {"policies": [{"choose": {"when": [{"if": {"ref": "query.v", "equals": "2"}, "policies": [BACKEND]}]}}]},
        {"policies": [{"set-backend-service": {"base_url": "ws://{api.name}.internal"}}]},
    ],
    ids=["api", "global", "in-a-branch", "templated"],
)
def test_a_wss_api_sent_to_ws_is_warned_about(where: dict[str, Any]) -> None:
    found = _warnings("wss://chat-1.internal/x", *where.get("policies", []), top=where.get("top", ()))
    assert len(found) == 1 and found[0].startswith("apis[0]: set-backend-service"), found


@pytest.mark.parametrize(
    ("upstream", "backend"),
    [
        ("wss://chat-1.internal/x", "wss://chat-2.internal"),
        ("ws://chat-1.internal/x", "ws://chat-2.internal"),
        ("ws://chat-1.internal/x", "wss://chat-2.internal"),
    ],
)
def test_otherwise_nothing_is_said(upstream: str, backend: str) -> None:
    assert _warnings(upstream, {"set-backend-service": {"base_url": backend}}) == []
