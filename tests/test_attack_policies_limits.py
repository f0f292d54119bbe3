"""Limits keyed by a value the handshake does not have yet: one counter for every client.

Global policies run first, then the product's, then the API's. A product's ``rate-limit-by-key``
keyed by ``{jwt.sub}`` with ``validate-jwt`` among the API's policies ran before any token was read:
every client counted on the empty key, and three handshakes without a token (each refused 401)
locked every user out for the window. A product with ``subscription_required: false`` whose
``limit-concurrency`` was keyed by ``{subscription.id}`` counted every client without a key on one
counter (one holding 2 connections refused all the others). Such configurations are refused at
load, by field path.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio as redis
from websockets.exceptions import InvalidStatus

from asgi_ws_gateway import WebSocketGateway, load_config
from asgi_ws_gateway.errors import ConfigError
from asgi_ws_gateway.handshake.context import HandshakeContext
from asgi_ws_gateway.policies.build import load_policies
from asgi_ws_gateway.policies.build_entries import PolicyBuilder
from asgi_ws_gateway.policies.reference_order import unset_references
from asgi_ws_gateway.standalone import not_found
from asgi_ws_gateway.state.memory import MemoryState
from support.clients import connect, expect_status
from support.configs import api_entry
from support.jwts import signing_key, token
from support.redis import RedisServer
from support.servers import UvicornFactory
from support.upstream import UpstreamServer

KEY = signing_key("ES256")
JWT = {"validate-jwt": {"algorithms": ["ES256"], "public_keys": [KEY.public_pem], "issuer": "https://issuer.test",
                        "audience": "chat"}}  # fmt: skip
RATE = {"rate-limit-by-key": {"key": "{jwt.sub}", "limit": 2, "window": 60}}
SUBSCRIBED = {"limit-concurrency": {"key": "{subscription.id}", "max": 2}}
RATE_BY_IP = {"rate-limit-by-key": {"key": "{client.network}", "limit": 2, "window": 60}}
SHARED_MESSAGES = {"inbound": [{"rate-limit-messages": {"messages": 10, "key": "{jwt.sub}"}}]}


def _choose(*policies: Any) -> dict[str, Any]:
    return {"choose": {"when": [{"if": {"ref": "header.x-debug", "exists": True}, "policies": list(policies)}]}}


def _product(*policies: Any, required: bool = False, name: str = "gold") -> dict[str, Any]:
    return {"name": name, "apis": ["echo"], "subscription_required": required, "policies": list(policies)}


async def set_claims(context: HandshakeContext) -> None:
    """A custom authentication policy: it may set the claims a later limit is keyed by."""
    context.claims = {"sub": context.request.header("x-user") or "anonymous"}


REFUSED: dict[str, tuple[dict[str, Any], str]] = {
    "product-before-api": ({"products": [_product(RATE)], "apis": [api_entry(policies=[JWT])]},
                           "products[0].policies[0].rate-limit-by-key.key: reads {jwt.sub}"),
    "global-before-api": ({"policies": [RATE], "apis": [api_entry(policies=[JWT])]},
                          "policies[0].rate-limit-by-key.key: reads {jwt.sub}"),
    "same-list-before": ({"apis": [api_entry(policies=[RATE, JWT])]},
                         "apis[0].policies[0].rate-limit-by-key.key: reads {jwt.sub}"),
    "no-jwt-at-all": ({"apis": [api_entry(policies=[{"quota-by-key": {"key": "tenant-{jwt.tid}", "limit": 9}}])]},
                      "apis[0].policies[0].quota-by-key.key: reads {jwt.tid}"),
    "in-a-choose": ({"apis": [api_entry(policies=[_choose(RATE), JWT])]},
                    "apis[0].policies[0].choose.when[0].policies[0].rate-limit-by-key.key: reads {jwt.sub}"),
    "no-product": ({"policies": [SUBSCRIBED], "apis": [api_entry()]},
                   "policies[0].limit-concurrency.key: reads {subscription.id}, but the API is in no product"),
    "choose-on-a-claim": ({"policies": [{"choose": {"when": [{"if": {"ref": "jwt.plan", "equals": "free"},
                                                               "policies": [RATE]}]}}],
                           "apis": [api_entry(policies=[JWT])]},
                          "policies[0].choose.when[0].if: reads {jwt.plan}, which no policy has set yet"),
    "messages-without-jwt": ({"apis": [api_entry(message_policies=SHARED_MESSAGES)]},
                             "apis[0].message_policies.inbound[0].rate-limit-messages.key: reads {jwt.sub}"),
    "global-messages-without-jwt": ({"message_policies": SHARED_MESSAGES, "apis": [api_entry()]},
                                    "message_policies.inbound[0].rate-limit-messages.key: reads {jwt.sub}"),
    "open-product-subscription": ({"products": [_product(SUBSCRIBED)], "apis": [api_entry()]},
                                  "products[0].policies[0].limit-concurrency.key: reads {subscription.id}, but the "
                                  "API is in a product with subscription_required: false"),
    "global-with-an-open-product": ({"policies": [SUBSCRIBED], "products": [_product(required=True, name="paid"),
                                                                           _product()], "apis": [api_entry()]},
                                    "policies[0].limit-concurrency.key: reads {subscription.id}, but the API is in "
                                    "a product with subscription_required: false"),
    "open-product-messages": ({"products": [{**_product(), "message_policies": {"inbound": [
                                   {"rate-limit-messages": {"messages": 10, "key": "{subscription.id}"}}]}}],
                               "apis": [api_entry()]},
                              "products[0].message_policies.inbound[0].rate-limit-messages.key: reads "
                              "{subscription.id}, but the API is in a product with subscription_required: false"),
}  # fmt: skip


@pytest.mark.parametrize("config, problem", REFUSED.values(), ids=REFUSED.keys())
def test_a_limit_keyed_by_a_value_no_earlier_policy_sets_is_refused_by_field_path(
    config: dict[str, Any], problem: str
) -> None:
    """All 12 fail before: the configuration loaded; every client shared one counter (a message
    budget: every connection shared one), or the branch never held (everyone took ``otherwise``)."""
    with pytest.raises(ConfigError) as refused:
        load_config(config)
    assert problem in str(refused.value)
    assert "(API 'echo')" in str(refused.value)


ACCEPTED: dict[str, dict[str, Any]] = {
    "global-jwt": {"policies": [JWT], "products": [_product(RATE)], "apis": [api_entry()]},
    "after-in-list": {"apis": [api_entry(policies=[JWT, RATE])]},
    "a-default": {"policies": [{"rate-limit-by-key": {"key": "{jwt.sub|anonymous}", "limit": 2, "window": 60}}],
                  "apis": [api_entry(policies=[JWT])]},
    "custom-auth-before": {"apis": [api_entry(policies=[set_claims, RATE])]},
    "jwt-in-a-choose-before": {"apis": [api_entry(policies=[_choose(JWT), RATE])]},
    "required-product-subscription": {"products": [_product(SUBSCRIBED, required=True)], "apis": [api_entry()]},
    "open-product-subscription-default": {"products": [_product({"limit-concurrency": {
        "key": "{subscription.id|keyless}", "max": 2}})], "apis": [api_entry()]},
    "subscribers-product-beside-an-open-one": {"products": [_product(SUBSCRIBED, required=True, name="paid"),
                                                            _product()], "apis": [api_entry()]},
    "open-product-choose-on-the-subscription": {"products": [_product({"choose": {"when": [
        {"if": {"ref": "subscription.id", "exists": True}, "policies": [RATE_BY_IP]}]}})], "apis": [api_entry()]},
    "choose-after-jwt": {"apis": [api_entry(policies=[JWT, {"choose": {"when": [
        {"if": {"ref": "jwt.plan", "equals": "free"}, "policies": [RATE]}]}}])]},
    "a-rewrite-before": {"policies": [{"set-header": {"header": "X-User", "value": "{jwt.sub}"}}],
                         "apis": [api_entry(policies=[JWT])]},
    "messages-after-any-jwt": {"message_policies": SHARED_MESSAGES, "apis": [api_entry(policies=[JWT])]},
    "messages-after-the-product-jwt": {"products": [_product(JWT)],
                                       "apis": [api_entry(message_policies=SHARED_MESSAGES)]},
}  # fmt: skip


@pytest.mark.parametrize("config", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_a_limit_after_what_sets_its_key_or_with_a_default_is_accepted(config: dict[str, Any]) -> None:
    load_config(config)


async def test_a_limit_after_validate_jwt_counts_each_user_and_no_tokenless_handshake(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer
) -> None:
    """The arrangement the refusal points to, end to end: tokenless handshakes are refused before they
    count, and one user's limit is not another's (held)."""
    config = {"policies": [JWT], "products": [_product(RATE)], "apis": [api_entry(upstream)]}
    url = uvicorn_server(WebSocketGateway(not_found, config=config)).url("/ws/echo")
    for _ in range(3):
        assert (await expect_status(url))[0] == 401
    alice = {"additional_headers": {"Authorization": f"Bearer {token(KEY, sub='alice')}"}}
    for _ in range(2):
        async with await connect(url, **alice) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
    assert (await expect_status(url, **alice))[0] == 429
    async with await connect(url, additional_headers={"Authorization": f"Bearer {token(KEY, sub='bob')}"}) as ws:
        await ws.send("bob")
        assert await ws.recv() == "bob"


@pytest.mark.parametrize(("open_products", "refused"), [((0,), True), ((), False), ((1,), False)])
def test_a_limit_in_a_product_reads_the_subscription_only_if_every_client_has_one(
    open_products: tuple[int, ...], refused: bool
) -> None:
    """``open_products`` names the API's products that admit clients without a key: a limit keyed by
    ``{subscription.id}`` in one of them is refused; in a product that requires a key, it is not."""
    builder = PolicyBuilder(MemoryState())
    order = builder.build([SUBSCRIBED], ("products", 0, "policies"), "product:gold")
    problems = unset_references("echo", order, builder.locations, has_subscription=True, open_products=open_products)
    assert [p.split(": reads")[0] for p in problems] == (["products[0].policies[0].limit-concurrency.key"] * refused)


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is needed")
    with RedisServer() as server:
        yield server


async def test_keys_a_client_chooses_stop_at_redis_maxmemory(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, private_redis: RedisServer
) -> None:
    """Before, the counting scripts wrote past ``maxmemory`` under ``noeviction`` (the policy
    deployment.md recommends): Redis checks the limit only until a script's first write, and theirs
    was ZREMRANGEBYSCORE, which it never refuses. A client sending a fresh X-Device per handshake to a
    limit keyed by it added a key per handshake (400 of 400, with Redis already full). Now Redis
    refuses the script once full: the limit fails closed (503) and Redis stops growing."""
    client = redis.Redis.from_url(private_redis.url)
    try:
        used = int((await client.info("memory"))["used_memory"])
        await client.config_set("maxmemory-policy", "noeviction")
        await client.config_set("maxmemory", used + 16_000)  # room for a few dozen keys
        limit = {
            "rate-limit-by-key": {"key": "{header.x-device}", "limit": 5, "window": 3600, "on_store_error": "closed"}
        }
        config = {"store": {"type": "redis", "url": private_redis.url}, "apis": [api_entry(upstream, policies=[limit])]}
        url = uvicorn_server(WebSocketGateway(not_found, config=config)).url("/ws/echo")
        statuses: Counter[int] = Counter()
        for i in range(400):
            try:
                async with await connect(url, additional_headers={"X-Device": f"device-{i}"}):
                    statuses[101] += 1
            except InvalidStatus as refused:
                statuses[refused.response.status_code] += 1
        keys = await client.dbsize()
        assert keys < 200, f"{keys} keys for 400 handshakes past maxmemory"
        assert statuses[503] > 200 and statuses[101] == keys, statuses
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("key", "named"),
    [("{header.x-device}", "{header.x-device}"), ("{jwt.sub}:{query.d}", "{query.d}"), ("{cookie.s}", "{cookie.s}"),
     ("{path.room}", "{path.room}"), ("{request.host}", "{request.host}")],
)  # fmt: skip
def test_a_limit_keyed_by_a_value_the_client_chooses_is_warned_about(key: str, named: str) -> None:
    """A fresh value per handshake is a fresh counter and a key more in the store (in Redis, up to
    maxmemory, when every limit fails): said at start-up and by ``check``, by field path (5 of 5
    fail before: no warning). A verified identity is not warned about."""
    entry = {"rate-limit-by-key": {"key": key, "limit": 5, "window": 60}}
    document = {"apis": [api_entry(path="/ws/{room}", policies=[JWT, entry])]}
    warnings = [w for w in load_policies(document).warnings if "which the client chooses" in w]
    assert len(warnings) == 1 and warnings[0].startswith(f"apis[0].policies[1].rate-limit-by-key.key: keyed by {named}")
    entry["rate-limit-by-key"]["key"] = "{jwt.sub}:{client.network}:{subscription.id|none}"
    assert not [w for w in load_policies(document).warnings if "which the client chooses" in w]


def test_a_concurrency_cap_per_room_is_not_warned_about() -> None:
    """limit-concurrency's keys live as long as their connections: a cap per room the client names is
    what it is for (the example app's chat API has one), and a fresh room holds nothing once left."""
    entry = {"limit-concurrency": {"key": "{path.room}", "max": 50}}
    document = {"apis": [api_entry(path="/ws/{room}", policies=[entry])]}
    assert not [w for w in load_policies(document).warnings if "which the client chooses" in w]
