"""validate-jwt refuses a request carrying two different tokens: the upstream could read the unchecked one.

Before, the gateway checked one token and passed the others on: of two cookies of the token's name it
checked the last, while the Cookie header reached the upstream whole (Go's ``r.Cookie`` and Node's
``cookie`` read the first); of two token subprotocols it removed only the one it checked; with a
token in the header, a second one in a cookie went upstream unchecked. RFC 6750 allows one method
per request: now two different tokens anywhere the policy looks are a 400 ``invalid_request``; the
same token twice is one token. The end-to-end test has a real uvicorn and upstream that records
what it was sent.
"""

from __future__ import annotations

from typing import Any

import pytest
from websockets.exceptions import InvalidStatus

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.standalone import not_found
from support.clients import connect
from support.configs import api_entry
from support.jwts import FORGED, signing_key, token
from support.policies import API, build, context, denied
from support.servers import UvicornFactory
from support.upstream import UpstreamServer

KEY = signing_key("ES256")
SOURCES = [{"header": "Authorization"}, {"query": "access_token"}, {"cookie": "jwt"}, {"subprotocol": "bearer."}]
SETTINGS = {"algorithms": ["ES256"], "public_keys": [KEY.public_pem], "issuer": "https://issuer.test",
            "audience": "chat", "token": SOURCES}  # fmt: skip
VALID = token(KEY, sub="alice", ttl=24 * 3600)  # made at collection: must outlive a long suite


def _policy() -> Any:
    return build({"validate-jwt": SETTINGS})


@pytest.mark.parametrize(
    "request_parts",
    [
        {"headers": [("Cookie", f"jwt={FORGED}; jwt={VALID}")]},  # the last was checked, the first went on
        {"headers": [("Cookie", f"jwt={FORGED}"), ("Cookie", f"jwt={VALID}")]},
        {"headers": [("Authorization", f"Bearer {VALID}"), ("Cookie", f"jwt={FORGED}")]},
        {"headers": [("Authorization", f"Bearer {VALID}"), ("Authorization", f"Bearer {FORGED}")]},
        {"query": f"access_token={VALID}&access_token={FORGED}"},
        {"query": f"access_token={VALID}", "headers": [("Cookie", f"jwt={FORGED}")]},
        {"subprotocols": [f"bearer.{VALID}", f"bearer.{FORGED}"]},
        {"subprotocols": [f"bearer.{VALID}", f"Bearer.{FORGED}"]},
        {"subprotocols": [f"BEARER.{FORGED}", f"bearer.{VALID}"]},
    ],
    ids=[
        "two-cookies",
        "two-cookie-headers",
        "header-and-cookie",
        "two-headers",
        "two-query-values",
        "query-and-cookie",
        "two-subprotocols",
        "a-subprotocol-prefix-in-another-case",
        "upper-case-prefix-first",
    ],
)
async def test_two_different_tokens_are_a_400(request_parts: dict[str, Any]) -> None:
    denial = await denied(_policy().apply(context(**request_parts)))
    assert (denial.status, denial.reason) == (400, "token_ambiguous")
    assert denial.headers == [(b"www-authenticate", b'Bearer error="invalid_request"')]


async def test_the_same_token_twice_is_one_token_and_no_copy_travels_in_the_query_or_a_subprotocol() -> None:
    ctx = context(
        headers=[("Authorization", f"Bearer {VALID}"), ("Cookie", f"theme=dark; jwt={VALID}")],
        query=f"access_token={VALID}&room=1&access_token={VALID}",
        subprotocols=["chat.v1", f"bearer.{VALID}", f"bearer.{VALID}", f"Bearer.{VALID}"],
    )
    await _policy().apply(ctx)
    assert ctx.claims is not None and ctx.claims["sub"] == "alice"
    upstream = ctx.build_request(API, API.upstreams[0])
    assert "access_token" not in upstream.url and "room=1" in upstream.url
    assert upstream.subprotocols == ["chat.v1"]


async def test_a_token_behind_a_semicolon_in_another_parameter_cannot_reach_the_upstream() -> None:
    """``x=1;access_token=FORGED`` is one parameter to the gateway, two to an upstream that splits on
    ``;``: the token parameter the gateway removed must not come back through its neighbour."""
    ctx = context(query=f"x=1;access_token={FORGED}&access_token={VALID}")
    await _policy().apply(ctx)
    upstream = ctx.build_request(API, API.upstreams[0])
    assert ";" not in upstream.url and "x=1%3Baccess_token" in upstream.url
    assert f"access_token={VALID}" not in upstream.url


async def test_a_token_in_one_place_is_checked_as_before() -> None:
    for parts in ({"headers": [("Cookie", f"jwt={VALID}; other=1")]}, {"subprotocols": [f"bearer.{VALID}"]}):
        ctx = context(**parts)
        await _policy().apply(ctx)
        assert ctx.claims is not None


async def test_end_to_end_the_upstream_never_gets_a_token_the_gateway_did_not_check(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer
) -> None:
    server = _gateway(uvicorn_server, upstream)
    await _refused_before_the_upstream(upstream, server.url("/ws/echo"), {"Cookie": f"jwt={FORGED}; jwt={VALID}"})
    async with await connect(server.url("/ws/echo"), additional_headers={"Cookie": f"jwt={VALID}"}) as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"
    assert upstream.handshakes[-1].header("cookie") == f"jwt={VALID}"


@pytest.mark.parametrize(
    "authorization",
    [f"Bearer\t{FORGED}", f"Bearer:{FORGED}", f"Bearer\xa0{FORGED}", f"Basic {FORGED}", f"Token {FORGED}", FORGED],
    ids=["tab", "colon", "nbsp", "basic", "other-scheme", "no-scheme"],
)
@pytest.mark.parametrize(
    "valid", [{"query": f"access_token={VALID}"}, {"cookie": f"jwt={VALID}"}, {"subprotocol": f"bearer.{VALID}"}]
)
async def test_an_authorization_value_the_policy_does_not_read_as_its_token_beside_a_token_is_a_400(
    authorization: str, valid: dict[str, str]
) -> None:
    """``Authorization: Bearer<TAB>FORGED`` (or any other scheme) was skipped as "not a bearer token" and
    forwarded, while the token in the query was checked: an upstream splitting on any whitespace, or
    reading whichever credential it finds, took the unchecked one."""
    headers = [("Authorization", authorization)]
    if "cookie" in valid:
        headers.append(("Cookie", valid["cookie"]))
    parts: dict[str, Any] = {"headers": headers}
    if "query" in valid:
        parts["query"] = valid["query"]
    if "subprotocol" in valid:
        parts["subprotocols"] = [valid["subprotocol"]]
    denial = await denied(_policy().apply(context(**parts)))
    assert (denial.status, denial.reason) == (400, "token_ambiguous")


async def test_a_tab_separated_bearer_token_is_the_token_checked() -> None:
    """Read as a lenient upstream reads it: a forged one is refused, a valid one admitted; never skipped."""
    denial = await denied(_policy().apply(context(headers=[("Authorization", f"Bearer\t{FORGED}")])))
    assert denial.status == 401
    ctx = context(headers=[("Authorization", f"bearer \t {VALID}")])
    await _policy().apply(ctx)
    assert ctx.claims is not None and ctx.claims["sub"] == "alice"


async def test_a_second_authorization_header_in_another_scheme_is_a_400() -> None:
    """Go's ``Header.Get`` reads the first of two headers: here the unchecked one."""
    headers = [("Authorization", f"Basic {FORGED}"), ("Authorization", f"Bearer {VALID}")]
    denial = await denied(_policy().apply(context(headers=headers)))
    assert (denial.status, denial.reason) == (400, "token_ambiguous")


async def test_end_to_end_a_tab_separated_forged_token_never_reaches_the_upstream(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer
) -> None:
    server = _gateway(uvicorn_server, upstream)
    url = server.url(f"/ws/echo?access_token={VALID}")
    await _refused_before_the_upstream(upstream, url, {"Authorization": f"Bearer\t{FORGED}"})


def _gateway(uvicorn_server: UvicornFactory, upstream: UpstreamServer) -> Any:
    api = api_entry(upstream, policies=[{"validate-jwt": SETTINGS}])
    return uvicorn_server(WebSocketGateway(not_found, config={"apis": [api]}))


async def _refused_before_the_upstream(upstream: UpstreamServer, url: str, headers: dict[str, str]) -> None:
    seen = len(upstream.handshakes)
    with pytest.raises(InvalidStatus) as refused:
        await connect(url, additional_headers=headers)
    assert refused.value.response.status_code == 400
    assert len(upstream.handshakes) == seen  # never connected upstream
