"""Registered time claims must be RFC 7519 NumericDates: every other type is a 401, in every token position.

pyjwt converts ``exp``/``nbf``/``iat`` with ``int()``, so a string ``"1767000000"`` or ``true``
passes its checks; ``validate-jwt`` refuses them, at the handshake and on in-band refresh.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import jwt
import pytest

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.policies.jwt_claims import MAX_CLAIM_DEPTH, MAX_NUMERIC_DATE, depth_problem, numeric_date_problem
from asgi_ws_gateway.standalone import not_found
from support.clients import connect, expect_status
from support.jwts import HS_SECRET
from support.policies import build, context, denied
from support.servers import UvicornFactory
from support.upstream import UpstreamServer

JWT = {"validate-jwt": {"algorithms": ["HS256"], "secret": HS_SECRET, "audience": "chat", "require": []}}
_NOW = int(time.time())
WRONG = [
    pytest.param(str(_NOW + 3600), id="numeric-string"),
    pytest.param("soon", id="string"),
    pytest.param(True, id="true"),
    pytest.param(False, id="false"),
    pytest.param(None, id="null"),
    pytest.param([_NOW + 3600], id="list"),
    pytest.param({"t": _NOW + 3600}, id="object"),
    pytest.param(math.nan, id="NaN"),
    pytest.param(math.inf, id="Infinity"),
    pytest.param(-math.inf, id="-Infinity"),
    pytest.param(1e300, id="huge-float"),
    pytest.param(10**30, id="huge-int"),
    pytest.param(MAX_NUMERIC_DATE + 1, id="past-year-9999"),
    pytest.param(-1, id="negative"),
]


def _signed(**claims: Any) -> str:
    """A HS256 token whose claims are exactly ``claims`` plus aud/sub (json allows NaN/Infinity)."""
    body = {"aud": "chat", "sub": "alice", **claims}
    return jwt.encode(body, HS_SECRET, algorithm="HS256")


def _bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


def _valid_times(**override: Any) -> dict[str, Any]:
    return {"exp": _NOW + 3600, "nbf": _NOW - 60, "iat": _NOW - 60, **override}


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("value", WRONG)
async def test_a_time_claim_of_the_wrong_type_is_a_401(claim: str, value: Any) -> None:
    ctx = context(headers=[("Authorization", f"Bearer {_signed(**_valid_times(**{claim: value}))}")])
    denial = await denied(build(JWT).apply(ctx))
    assert (denial.status, denial.reason) == (401, "token_invalid")
    assert ctx.claims is None and ctx.credential_expires_at is None


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("value", WRONG)
async def test_in_band_refresh_refuses_a_time_claim_of_the_wrong_type(claim: str, value: Any) -> None:
    """``credential-expiry`` refreshes through ``verify_token``: the same rule holds there."""
    denial = await denied(build(JWT).verify_token(_signed(**_valid_times(**{claim: value}))))  # type: ignore[attr-defined]
    assert denial.status == 401


@pytest.mark.parametrize(
    ("source", "where"),
    [
        ({"header": "Authorization"}, "header"),
        ({"header": "X-Token", "scheme": ""}, "x-token"),
        ({"query": "access_token"}, "query"),
        ({"cookie": "jwt"}, "cookie"),
        ({"subprotocol": "bearer."}, "subprotocol"),
    ],
)
async def test_every_token_position_checks_the_claim_types(source: dict[str, str], where: str) -> None:
    bad = _signed(**_valid_times(exp=str(_NOW + 3600)))
    good = _signed(**_valid_times())
    policy = build({"validate-jwt": {**JWT["validate-jwt"], "token": [source]}})
    for tok, allowed in ((good, True), (bad, False)):
        positions: dict[str, dict[str, Any]] = {
            "header": {"headers": [("Authorization", f"Bearer {tok}")]},
            "x-token": {"headers": [("X-Token", tok)]},
            "query": {"query": f"access_token={tok}"},
            "cookie": {"headers": [("Cookie", f"jwt={tok}")]},
            "subprotocol": {"subprotocols": [f"bearer.{tok}"]},
        }
        kw = positions[where]
        ctx = context(**kw)
        if allowed:
            await policy.apply(ctx)
            assert ctx.credential_expires_at == _NOW + 3600
        else:
            assert (await denied(policy.apply(ctx))).status == 401


@pytest.mark.parametrize(  # named: the values follow the clock, ids must not
    "value", [_NOW + 3600, _NOW + 3600.5, float(_NOW + 3600)], ids=["integer", "fraction", "integral-float"]
)
async def test_integers_and_fractions_are_numeric_dates(value: float) -> None:
    ctx = context(headers=[("Authorization", f"Bearer {_signed(**_valid_times(exp=value))}")])
    await build(JWT).apply(ctx)
    assert ctx.credential_expires_at == float(value)


def test_numeric_date_problem_names_the_claim() -> None:
    assert numeric_date_problem({"exp": 1, "nbf": 0, "iat": 2.5}) is None
    assert numeric_date_problem({}) is None
    assert numeric_date_problem({"nbf": "1"}) == "the token's 'nbf' claim is not a number"
    assert numeric_date_problem({"iat": math.nan}) == "the token's 'iat' claim is out of range"


async def test_a_string_exp_is_refused_end_to_end_at_the_handshake_and_on_refresh(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer
) -> None:
    api = {
        "name": "echo", "path": "/ws/echo", "upstreams": [upstream.url("/echo")], "policies": [JWT],
        "message_policies": {"inbound": [{"credential-expiry": {}}]},
    }  # fmt: skip
    server = uvicorn_server(WebSocketGateway(not_found, config={"apis": [api]}))
    bad = _signed(**_valid_times(exp=str(_NOW + 3600)))
    status, headers, body = await expect_status(
        server.url("/ws/echo"), additional_headers={"Authorization": f"Bearer {bad}"}
    )
    assert status == 401 and headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert json.loads(body)["detail"] == "the token's 'exp' claim is not a number"
    good = _signed(**_valid_times(exp=_NOW + 3600))
    async with await connect(server.url("/ws/echo"), additional_headers=_bearer(good)) as ws:
        await ws.send(json.dumps({"type": "auth.refresh", "token": bad}))
        reply = json.loads(await ws.recv())
        assert (reply["type"], reply["error"]) == ("error", "refresh_token_invalid")
        await ws.send("still open on the first token")
        assert await ws.recv() == "still open on the first token"
    assert len(upstream.handshakes) == 1


def _nested(levels: int, kind: str) -> Any:
    """A claim value of ``levels`` nested arrays (or objects) around a string."""
    value: Any = "x"
    for _ in range(levels):
        value = [value] if kind == "array" else {"k": value}
    return value


@pytest.mark.parametrize("kind", ["array", "object"])
async def test_a_payload_nested_up_to_the_limit_is_accepted_and_cached(kind: str) -> None:
    policy = build(JWT)
    raw = _signed(**_valid_times(deep=_nested(MAX_CLAIM_DEPTH - 1, kind)))  # the payload is the first level
    for _ in range(2):  # verified, then copied out of the verified-token cache
        ctx = context(headers=[("Authorization", f"Bearer {raw}")])
        await policy.apply(ctx)
        assert ctx.claims is not None and ctx.claims["deep"] == _nested(MAX_CLAIM_DEPTH - 1, kind)


@pytest.mark.parametrize("kind", ["array", "object"])
@pytest.mark.parametrize("levels", [MAX_CLAIM_DEPTH, 400, 700])
async def test_a_payload_nested_deeper_is_a_401_not_a_recursion_error(kind: str, levels: int) -> None:
    """Signed and decodable, but nested deeper than anything walks it recursively (the cache's copy did)."""
    raw = _signed(**_valid_times(deep=_nested(levels, kind)))
    policy = build(JWT)
    denial = await denied(policy.apply(context(headers=[("Authorization", f"Bearer {raw}")])))
    assert (denial.status, denial.reason) == (401, "token_invalid")
    assert "nests deeper" in denial.detail
    assert (await denied(policy.verify_token(raw))).status == 401  # type: ignore[attr-defined]


def test_depth_problem_counts_the_payload_as_the_first_level() -> None:
    assert depth_problem({"a": _nested(MAX_CLAIM_DEPTH - 1, "array")}) is None
    assert depth_problem({"a": [], "b": _nested(MAX_CLAIM_DEPTH, "object")}) is not None
