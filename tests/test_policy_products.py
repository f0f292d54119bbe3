"""Products and subscriptions, transforms and choose: pure logic and configuration checks."""

from __future__ import annotations

from typing import Any

import pytest

from asgi_ws_gateway import ConfigError, load_config
from asgi_ws_gateway.policies import GatewayPolicies, hash_key
from asgi_ws_gateway.policies.products import SubscriptionGate
from support.policies import API, build, context, denied, problems


def _config(**extra: Any) -> Any:
    return load_config(
        {
            "apis": [
                {"name": "chat", "path": "/ws/chat", "upstreams": ["ws://x/"]},
                {"name": "feed", "path": "/ws/feed", "upstreams": ["ws://x/"]},
            ],
            "products": [
                {"name": "gold", "apis": ["chat"]},
                {"name": "news", "apis": ["feed"]},
            ],
            "subscriptions": [
                {"id": "alice", "product": "gold", "key_sha256": hash_key("alice-key")},
                {"id": "bob", "product": "gold", "key_sha256": hash_key("bob-key"), "state": "suspended"},
                {"id": "carol", "product": "gold", "key_sha256": hash_key("carol-key"),
                 "expires_at": "2020-01-01T00:00:00Z"},
                {"id": "dave", "product": "news", "key_sha256": hash_key("dave-key")},
            ],
            **extra,
        }
    )  # fmt: skip


@pytest.mark.parametrize(
    ("where", "key", "status", "reason"),
    [
        ("header", None, 401, "subscription_key_missing"),
        ("header", "wrong", 401, "subscription_key_invalid"),
        ("header", "bob-key", 403, "subscription_suspended"),
        ("header", "carol-key", 403, "subscription_expired"),
        ("header", "dave-key", 401, "subscription_wrong_product"),
        ("query", "wrong", 401, "subscription_key_invalid"),
    ],
)
async def test_subscription_refusals(where: str, key: str | None, status: int, reason: str) -> None:
    gate = SubscriptionGate(_config(), "chat")
    kw: dict[str, Any] = {}
    if key is not None:
        kw = (
            {"headers": [("Ocp-Apim-Subscription-Key", key)]}
            if where == "header"
            else {"query": f"subscription-key={key}"}
        )
    denial = await denied(gate(context(**kw)))
    assert (denial.status, denial.reason, denial.policy) == (status, reason, "subscription")
    assert key is None or key not in denial.detail


@pytest.mark.parametrize(
    "kw",
    [
        {"headers": [("X-Subscription-Key", "alice-key")]},
        {"headers": [("Ocp-Apim-Subscription-Key", "alice-key")]},
        {"query": "subscription-key=alice-key&room=1"},
    ],
    ids=["neutral-header", "apim-header", "query"],
)
async def test_valid_key_admits_and_never_travels_upstream(kw: dict[str, Any]) -> None:
    ctx = context(**kw)
    assert await SubscriptionGate(_config(), "chat")(ctx) == ["gold"]
    assert ctx.subscription is not None and (ctx.subscription.id, ctx.subscription.product) == ("alice", "gold")
    request = ctx.build_request(API, API.upstreams[0])
    assert "alice-key" not in request.url and all("alice-key" not in v for _, v in request.headers)


async def test_open_product_admits_without_a_key() -> None:
    config = _config(products=[{"name": "gold", "apis": ["chat"], "subscription_required": False},
                               {"name": "news", "apis": ["feed"]}])  # fmt: skip
    assert await SubscriptionGate(config, "chat")(context()) == ["gold"]


def test_product_and_subscription_references_are_checked() -> None:
    with pytest.raises(ConfigError) as info:
        load_config({
            "apis": [{"name": "chat", "path": "/ws/chat", "upstreams": ["ws://x/"]}],
            "products": [{"name": "gold", "apis": ["chat", "nope"]}, {"name": "gold"}],
            "subscriptions": [
                {"id": "a", "product": "silver", "key_sha256": hash_key("k")},
                {"id": "a", "product": "gold", "key_sha256": hash_key("k")},
                {"id": "b", "product": "gold", "key_sha256": "plaintext-key"},
            ],
        })  # fmt: skip
    problems = info.value.problems
    # A key pasted where its hash belongs is a credential: never quoted back
    assert "subscriptions[2].key_sha256: String should match pattern '^[0-9a-fA-F]{64}$'" in problems
    assert not any("plaintext-key" in problem for problem in problems)
    with pytest.raises(ConfigError) as info:
        load_config({
            "apis": [{"name": "chat", "path": "/ws/chat", "upstreams": ["ws://x/"]}],
            "products": [{"name": "gold", "apis": ["chat", "nope"]}, {"name": "gold"}],
            "subscriptions": [
                {"id": "a", "product": "silver", "key_sha256": hash_key("k")},
                {"id": "a", "product": "gold", "key_sha256": hash_key("k")},
            ],
        })  # fmt: skip
    assert info.value.problems == [
        "products[0].apis[1]: unknown API 'nope'",
        "products[1].name: duplicate product name 'gold'",
        "subscriptions[0].product: unknown product 'silver'",
        "subscriptions[1].id: duplicate subscription id 'a'",
        "subscriptions[1].key_sha256: the same key is used by another subscription",
    ]


async def test_transforms_forward_claims_and_rewrite() -> None:
    ctx = context("/ws/lobby", params={"room": "lobby"}, headers=[("X-Drop", "1")])
    ctx.claims = {"sub": "alice", "region": "eu"}
    for entry in [
        {"set-header": {"header": "X-User-Id", "value": "{jwt.sub}"}},
        {"remove-header": {"header": "X-Drop"}},
        {"set-query-parameter": {"parameter": "user", "value": "{jwt.sub}"}},
        {"rewrite-uri": {"template": "/v2/{path.room}"}},
        {"set-backend-service": {"base_url": "ws://chat-{jwt.region}.internal:9000"}},
    ]:
        await build(entry).apply(ctx)
    request = ctx.build_request(API, API.upstreams[0])
    assert request.url == "ws://chat-eu.internal:9000/v2/lobby?v=1&user=alice"
    assert ("x-user-id", "alice") in request.headers and all(n != "x-drop" for n, _ in request.headers)


def test_transform_settings_are_validated() -> None:
    assert problems({"set-header": {"header": "Sec-WebSocket-Key", "value": "x"}}) == [
        "apis[0].policies[0].set-header.header: 'Sec-WebSocket-Key' belongs to the WebSocket handshake itself "
        "and cannot be set"
    ]
    assert problems({"rewrite-uri": {"template": "no-slash"}}) == [
        "apis[0].policies[0].rewrite-uri.template: must start with '/'"
    ]
    assert problems({"set-backend-service": {"base_url": "http://x"}}) == [
        "apis[0].policies[0].set-backend-service.base_url: must be a ws:// or wss:// URL"
    ]
    assert problems({"nope": {}})[0].startswith("apis[0].policies[0]: unknown policy type 'nope' (known: ")


async def test_choose_applies_the_first_matching_branch_or_otherwise() -> None:
    policy = build({"choose": {
        "when": [
            {"if": {"ref": "jwt.plan", "equals": "free"},
             "policies": [{"set-header": {"header": "X-Plan", "value": "free"}}]},
            {"if": [{"ref": "header.x-debug", "exists": True}, {"ref": "client.ip", "matches": "^10\\."}],
             "policies": [{"check-header": {"header": "X-Never", "failed_status": 403}}]},
        ],
        "otherwise": [{"set-header": {"header": "X-Plan", "value": "paid"}}],
    }})  # fmt: skip
    free = context()
    free.claims = {"plan": "free"}
    await policy.apply(free)
    paid = context()
    await policy.apply(paid)
    for ctx, plan in ((free, "free"), (paid, "paid")):
        assert ("x-plan", plan) in ctx.build_request(API, API.upstreams[0]).headers
    debug = context(headers=[("X-Debug", "1")], client=("10.0.0.5", 1))
    denial = await denied(policy.apply(debug))
    assert (denial.status, denial.policy) == (403, "check-header")


def test_choose_nested_problems_have_full_paths() -> None:
    assert problems(
        {
            "choose": {
                "when": [
                    {
                        "if": {"ref": "jwt.x", "equals": "y"},
                        "policies": [{"set-header": {"header": "X"}}, {"rate-limit-by-key": {}}],
                    }
                ]
            }
        }
    ) == [
        "apis[0].policies[0].choose.when[0].policies[1].rate-limit-by-key.key: Field required",
        "apis[0].policies[0].choose.when[0].policies[1].rate-limit-by-key.limit: Field required",
        "apis[0].policies[0].choose.when[0].policies[1].rate-limit-by-key.window: Field required",
    ]
    assert problems({"choose": {"when": [{"if": {"ref": "jwt.x"}}]}}) == [
        "apis[0].policies[0].choose.when[0].if: set one of exists, equals, not_equals, in, matches, contains"
    ]


async def test_gateway_policies_build_errors_surface_as_config_errors() -> None:
    with pytest.raises(ConfigError) as info:
        load_config({"policies": [{"rate-limit-by-key": {"key": "k", "limit": 1, "window": 1, "counter": "a{b}"}}],
                     "apis": [{"name": "c", "path": "/c", "upstreams": ["ws://x/"]}]})  # fmt: skip
    assert info.value.problems[0].startswith("policies[0].rate-limit-by-key.counter: String should match pattern")
    policies = GatewayPolicies(_config())
    assert set(policies.pipelines) == {"chat", "feed"}
    await policies.aclose()


_LIMIT = {"rate-limit-by-key": {"key": "{client.ip}", "limit": 5, "window": 60}}
_NESTED = {"choose": {"when": [{"if": {"ref": "header.x", "exists": True}, "policies": [_LIMIT]}]}}


@pytest.mark.parametrize(
    ("second", "where"),
    [
        ({"name": "x.choose.0.when.0.policies", "policies": [_LIMIT]}, "apis[1].policies[0]"),
        ({"name": "y", "message_policies": {"inbound": [{"rate-limit-messages": {"messages": 5}}]}}, None),
    ],
)
def test_an_api_named_like_another_apis_nested_place_does_not_share_its_counter(
    second: dict[str, Any], where: str | None
) -> None:
    """Default counters are named by owner and place: API ``x.choose.0.when.0.policies``'s first limit is
    named as API ``x``'s nested one (a client of one spent the other's allowance); now a problem naming both."""
    apis = [
        {"name": "x", "path": "/x", "upstreams": ["ws://x/"], "policies": [_NESTED]},
        {"path": "/y", "upstreams": ["ws://x/"], **second},
    ]
    if where is None:  # a name that shares no place: accepted
        load_config({"apis": apis})
        return
    with pytest.raises(ConfigError) as info:
        load_config({"apis": apis})
    assert info.value.problems == [
        f"{where}.rate-limit-by-key: counts on the same default counter "
        "'api:x.choose.0.when.0.policies.rate-limit-by-key.0' as "
        "apis[0].policies[0].choose.when[0].policies[0].rate-limit-by-key (rename the API or product, or set counter:)"
    ]
    apis[1]["policies"] = [{"rate-limit-by-key": {**_LIMIT["rate-limit-by-key"], "counter": "its-own"}}]
    load_config({"apis": apis})
