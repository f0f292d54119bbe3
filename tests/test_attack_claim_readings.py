"""A token's claims read as the issuer meant them: an attack pass found three readings that differed.

* A list claim was comma-joined as it was: ``roles: ["user,admin"]`` reached the upstream's
  ``X-Roles`` as ``user,admin``, which is ``["user", "admin"]`` to an upstream splitting it at commas.
  An item's ``,`` and ``%`` are now percent-encoded.
* A claim whose name holds a dot (Azure AD's ``extn.tier``) was never found by ``{jwt.extn.tier}``
  (dots reach into objects only), so ``{claim: extn.tier, not_equals: banned}`` admitted the banned
  token; and ``not_equals: banned`` held for ``["banned", "x"]`` (its joined text is not ``banned``).
* ``contains`` split a string at any Unicode whitespace: ``"x\\u3000chat:write"`` held ``chat:write``
  (RFC 6749 separates scopes with a space alone).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.standalone import not_found
from asgi_ws_gateway.templates import Condition, Reference, dig, to_text
from support.clients import connect, expect_status
from support.jwts import HS_SECRET, token
from support.servers import UvicornFactory
from support.upstream import UpstreamServer


class _Claims:
    def __init__(self, claims: dict[str, Any]) -> None:
        self.claims = claims

    def lookup(self, namespace: str, path: tuple[str, ...]) -> object | None:
        return dig(self.claims, path)


def _holds(claims: dict[str, Any], ref: str, **operator: Any) -> bool:
    return Condition(Reference.parse(f"jwt.{ref}"), **operator).holds(_Claims(claims))


@given(st.lists(st.text(), min_size=1), st.lists(st.text(), min_size=1))
def test_two_lists_of_text_never_read_the_same(first: list[str], second: list[str]) -> None:
    assert (to_text(first) == to_text(second)) == (first == second)


def test_a_list_items_comma_and_percent_are_encoded() -> None:
    assert to_text(["user", "admin"]) == "user,admin"
    assert to_text(["user,admin"]) == "user%2Cadmin"
    assert to_text(["50%", "%2C"]) == "50%25,%252C"
    assert to_text("a, b") == "a, b"  # a string is one value: written as it is


@pytest.mark.parametrize(
    ("claims", "found"),
    [
        ({"extn.tier": "banned"}, "banned"),
        ({"extn": {"tier": "gold"}}, "gold"),
        ({"extn": {"other": 1}, "extn.tier": "banned"}, "banned"),
        ({"extn": {"tier": "gold"}, "extn.tier": "banned"}, "gold"),  # objects first, as before
        ({"realm": {"a.b": "x"}}, None),
    ],
)
def test_a_claim_named_with_dots_is_found(claims: dict[str, Any], found: object) -> None:
    assert dig(claims, ("extn", "tier")) == found


def test_deeper_dotted_names_are_found() -> None:
    assert dig({"realm": {"access.roles": ["a"]}}, ("realm", "access", "roles")) == ["a"]
    assert dig({"a.b": {"c.d": 1}}, ("a", "b", "c", "d")) == 1
    assert dig({"a": "text"}, ("a", "b")) is None


@pytest.mark.parametrize(
    "claims",
    [
        {"extn.tier": "banned"},
        {"extn": {"tier": "banned"}},
        {"extn": {"tier": ["banned", "x"]}},
        {"extn": {"tier": ["x", ["banned", "y"]]}},
    ],
)
def test_not_equals_refuses_the_value_wherever_it_is(claims: dict[str, Any]) -> None:
    assert not _holds(claims, "extn.tier", not_equals="banned")


def test_not_equals_holds_for_another_value_or_none() -> None:
    assert _holds({"extn.tier": "gold"}, "extn.tier", not_equals="banned")
    assert _holds({"extn": {"tier": ["gold", "x"]}}, "extn.tier", not_equals="banned")
    assert _holds({}, "extn.tier", not_equals="banned")


@pytest.mark.parametrize("separator", ["\u3000", "\x1f", "\t", "\n", "\u2028", "\xa0", "\x85"])
def test_a_scope_is_split_at_spaces_alone(separator: str) -> None:
    assert not _holds({"scope": f"chat:read{separator}chat:write"}, "scope", contains="chat:write")
    assert _holds({"scope": "chat:read chat:write"}, "scope", contains="chat:write")
    assert _holds({"scope": "chat:read  chat:write"}, "scope", contains="chat:write")


async def test_a_dotted_claim_check_and_a_list_claim_reach_the_upstream_as_meant(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer
) -> None:
    """On a real gateway: the banned flat claim is a 403, the list's comma stays one item's."""
    jwt_policy = {
        "validate-jwt": {
            "algorithms": ["HS256"], "secret": HS_SECRET, "audience": "chat",
            "claims": [{"claim": "extn.tier", "not_equals": "banned"}],
        }
    }  # fmt: skip
    policies = [jwt_policy, {"set-header": {"header": "x-roles", "value": "{jwt.roles}"}}]
    api = {"name": "c", "path": "/ws/c", "upstreams": [upstream.url("/echo")], "policies": policies}
    url = uvicorn_server(WebSocketGateway(not_found, config={"apis": [api]})).url("/ws/c")
    before = len(upstream.handshakes)
    for banned in ({"extn.tier": "banned"}, {"extn": {"tier": "banned"}}):
        bearer = {"Authorization": f"Bearer {token(**banned)}"}
        status, _, _ = await expect_status(url, additional_headers=bearer)
        assert status == 403, banned
    assert len(upstream.handshakes) == before
    for roles, sent in ((["user,admin"], "user%2Cadmin"), (["user", "admin"], "user,admin")):
        claims: dict[str, Any] = {"roles": roles, "extn.tier": "gold"}
        bearer = {"Authorization": f"Bearer {token(**claims)}"}
        async with await connect(url, additional_headers=bearer) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
        assert upstream.handshakes[-1].header("x-roles") == sent
