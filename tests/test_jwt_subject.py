"""``token_subject``: who a token is for, ``sub`` first, else the client a client-credentials token names."""

from __future__ import annotations

from typing import Any

import pytest

from asgi_ws_gateway.policies.jwt_subject import token_subject

CASES: dict[str, tuple[dict[str, Any] | None, tuple[str, str | int] | None]] = {
    "sub first": ({"sub": "alice", "azp": "web", "client_id": "web"}, ("sub", "alice")),
    "azp without sub": ({"azp": "billing", "client_id": "other"}, ("azp", "billing")),
    "client_id": ({"client_id": "billing", "appid": "other"}, ("client_id", "billing")),
    "appid": ({"appid": "0f1e"}, ("appid", "0f1e")),
    "an integer sub": ({"sub": 42}, ("sub", 42)),
    "an empty sub is none": ({"sub": "", "azp": "billing"}, ("azp", "billing")),
    "true is no subject": ({"sub": True}, None),
    "an object is no subject": ({"sub": {"id": "alice"}}, None),
    "none at all": ({"iss": "https://issuer.test", "scope": "read"}, None),
    "no claims": (None, None),
}


@pytest.mark.parametrize("claims, expected", CASES.values(), ids=CASES.keys())
def test_token_subject(claims: dict[str, Any] | None, expected: tuple[str, str | int] | None) -> None:
    assert token_subject(claims) == expected
