"""A signed token whose payload holds a lone surrogate is a 401, not a 500 with a traceback.

Python's JSON parser keeps ``"\\ud800"`` as a lone surrogate, which UTF-8 cannot encode: templated
into the upstream URL by ``set-query-parameter``, ``rewrite-uri`` or ``set-backend-service``
(``{jwt.sub}``), it failed the handshake with a 500 and an ERROR traceback, and so did a claim check
or a ``choose`` condition matching it (RE2 encodes the text); an admitted connection's access log
line was lost to a logging error (an attack pass against a real ``run``: 12 of 14, a high and a low
surrogate). An issuer that builds names in UTF-16 signs one for a user who picks it. Readers
disagree on it (Go reads U+FFFD), as message policies refuse it in a message: the token is refused
as invalid.
"""

from __future__ import annotations

from typing import Any

import pytest
from websockets.exceptions import InvalidStatus

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.standalone import not_found
from support.clients import connect
from support.configs import api_entry
from support.jwts import signing_key, token
from support.servers import UvicornFactory
from support.upstream import UpstreamServer

KEY = signing_key("ES256")
JWT = {"algorithms": ["ES256"], "public_keys": [KEY.public_pem], "issuer": "https://issuer.test", "audience": "chat"}


def test_a_lone_surrogate_anywhere_in_the_payload_is_a_problem() -> None:
    from asgi_ws_gateway.policies.jwt_claims import surrogate_problem

    assert surrogate_problem({"sub": "\ud800"}) is not None
    assert surrogate_problem({"realm": {"roles": ["x", "a\udcff"]}}) is not None
    assert surrogate_problem({"\udcff": 1}) is not None  # a name too
    assert surrogate_problem({"sub": "\U0001f600 caf\u00e9", "n": [1, 2.5, None, True]}) is None  # a pair is text


POLICIES: dict[str, list[dict[str, Any]]] = {
    "set-query-parameter": [{"set-query-parameter": {"parameter": "user", "value": "{jwt.sub}"}}],
    "rewrite-uri": [{"rewrite-uri": {"template": "/u/{jwt.sub}"}}],
    "set-backend-service": [{"set-backend-service": {"base_url": "ws://127.0.0.1:9/{jwt.sub}"}}],
    "choose": [{"choose": {"when": [{"if": {"ref": "jwt.sub", "matches": "^a"}, "policies": []}]}}],
    "rate-limit": [{"rate-limit-by-key": {"key": "{jwt.sub}", "limit": 5, "window": 60}}],
}


@pytest.mark.parametrize("sub", ["\ud800", "a\udcff"], ids=["high", "low"])
@pytest.mark.parametrize("policies", list(POLICIES.values()), ids=list(POLICIES))
async def test_a_lone_surrogate_claim_is_a_401_before_any_template(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, sub: str, policies: list[dict[str, Any]], caplog: Any
) -> None:
    """Before: 500 and a traceback for the four templates and the condition; the rate-limited one was
    admitted, and under ``run`` its access log line was lost to a logging error."""
    api = api_entry(upstream, policies=[{"validate-jwt": JWT}, *policies])
    server = uvicorn_server(WebSocketGateway(not_found, config={"apis": [api]}))
    await _refused_401(server.url("/ws/echo"), sub)
    assert not [r for r in caplog.records if r.exc_info or r.levelname == "ERROR"]


async def test_a_claim_check_on_a_lone_surrogate_claim_is_a_401(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer
) -> None:
    """The check's RE2 pattern could not encode the claim: 500."""
    settings = {**JWT, "claims": [{"claim": "sub", "matches": "^a"}]}
    server = uvicorn_server(WebSocketGateway(not_found, config={"apis": [api_entry(upstream, policies=[
        {"validate-jwt": settings}])]}))  # fmt: skip
    await _refused_401(server.url("/ws/echo"), "a\ud800")


async def _refused_401(url: str, sub: str) -> None:
    with pytest.raises(InvalidStatus) as refused:
        await connect(url, additional_headers={"Authorization": f"Bearer {token(KEY, sub=sub)}"})
    assert refused.value.response.status_code == 401
    assert refused.value.response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
