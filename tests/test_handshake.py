"""The handshake context, upstream edits, the pipeline's scope order, opt-outs, custom policies."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from asgi_ws_gateway import ConfigError, load_config
from asgi_ws_gateway.config.apis import ApiConfig, UpstreamConfig
from asgi_ws_gateway.errors import HandshakeDenied
from asgi_ws_gateway.handshake.context import HandshakeContext
from asgi_ws_gateway.handshake.host_header import check_host
from asgi_ws_gateway.policies import GatewayPolicies, PolicyEnv, deny, hash_key, register_policy
from asgi_ws_gateway.policies.base import REGISTRY
from asgi_ws_gateway.upstream.base import UpstreamRequest
from support.policies import API, context, denied, scope


def test_request_view_parses_headers_query_cookies_subprotocols() -> None:
    request = context(
        headers=[("Cookie", "a=1; b=2"), ("Cookie", "c=3"), ("X-Multi", "x"), ("X-Multi", "y")],
        query="q=1&q=2&empty=",
        subprotocols=["chat.v1", "bearer.abc"],
    ).request
    assert request.cookies == {"a": "1", "b": "2", "c": "3"}
    assert request.header("x-multi") == "x, y"
    assert request.query == {"q": ["1", "2"], "empty": [""]}
    assert request.subprotocols == ["chat.v1", "bearer.abc"]
    assert (request.method, request.host, request.scheme) == ("GET", "gw.test", "ws")


_HEADER_NAMES = st.sampled_from([
    b"authorization", b"Authorization", b"AUTHORIZATION", b"host", b"x-api-key", b"x-forwarded-for",
    b"X-Forwarded-Host", b"x-forwarded-proto", b"x-forwarded-port", b"forwarded", b"x-real-ip", b"true-client-ip",
    b"cookie", b"\xc0uth", b"\xe0uth", b"x-\xc9", b"k", b"K",
])  # fmt: skip


@given(
    raw=st.lists(st.tuples(_HEADER_NAMES, st.binary(max_size=8)), max_size=8),
    asked=st.sampled_from(["authorization", "host", "x-api-key", "x-forwarded-for", "x-forwarded-host",
                           "x-forwarded-port", "forwarded", "x-real-ip", "cookie", "\xe0uth", "x-\xe9", "k"]),
    trusted=st.booleans(),
    built_first=st.booleans(),
)  # fmt: skip
def test_one_header_read_is_what_the_header_table_holds(
    raw: list[tuple[bytes, bytes]], asked: str, trusted: bool, built_first: bool
) -> None:
    """header_values (read without building the table) gives what headers has, forwarding headers included."""
    ctx = context(trusted=["127.0.0.1"] if trusted else [])
    ctx.request.scope["headers"] = raw
    fresh = context(trusted=["127.0.0.1"] if trusted else [])
    fresh.request.scope["headers"] = raw
    if built_first:
        assert ctx.request.headers is not None
    assert ctx.request.header_values(asked) == fresh.request.headers.get(asked, [])


def test_upstream_edits_apply_in_order_for_each_backend() -> None:
    ctx = HandshakeContext("chat", context("/ws/lobby", params={"room": "lobby"}, query="token=t&keep=1",
                                           headers=[("X-Old", "1"), ("X-Multi", "a")],
                                           subprotocols=["chat.v1", "bearer.xyz"]).request)  # fmt: skip
    edits = ctx.upstream
    edits.set_header("X-User", "alice\r\nInjected: yes")
    edits.remove_header("x-old")
    edits.set_header("X-Multi", "b", "append")
    edits.set_header("X-Multi", "c", "skip")
    edits.remove_query("token")
    edits.set_query("tenant", "acme & co")
    edits.remove_subprotocol("bearer.xyz")
    request = ctx.build_request(API, API.upstreams[0])
    headers = dict(request.headers)
    assert headers["x-user"] == "aliceInjected: yes"  # no CR/LF: no header injection
    assert "x-old" not in headers
    assert [v for n, v in request.headers if n == "x-multi"] == ["a", "b"]
    assert request.url == "ws://up:9000/rooms/lobby?v=1&keep=1&tenant=acme%20%26%20co"
    assert request.subprotocols == ["chat.v1"]
    again = ctx.build_request(API, API.upstreams[0])  # the next backend gets the same changes
    assert again.url == request.url


def test_rewrite_and_base_url() -> None:
    ctx = HandshakeContext("chat", context("/ws/lobby", params={"room": "lobby"}, query="a=1").request)
    ctx.upstream.rewrite("/v2/rooms/lobby?b=2")
    ctx.upstream.set_base_url("wss://eu.example:443/prefix/")
    assert ctx.build_request(API, API.upstreams[0]).url == "wss://eu.example:443/prefix/v2/rooms/lobby?b=2&v=1&a=1"
    ctx.upstream.rewrite("/only", copy_unmatched_params=False)
    assert ctx.build_request(API, API.upstreams[0]).url == "wss://eu.example:443/only"  # changes apply in order


async def test_base_url_on_an_in_process_upstream_is_a_500() -> None:
    api = ApiConfig(name="chat", path="/ws/{room}", upstreams=[UpstreamConfig(url="asgi:", app=object())])
    ctx = HandshakeContext("chat", context("/ws/lobby", params={"room": "lobby"}).request)
    ctx.upstream.set_base_url("ws://elsewhere")
    with pytest.raises(Exception) as info:
        ctx.build_request(api, api.upstreams[0])
    assert getattr(info.value, "status", None) == 500


async def test_release_runs_cleanups_once_in_reverse_order_despite_failures() -> None:
    ctx = context()
    calls: list[str] = []

    def cleanup(name: str, fail: bool = False) -> Any:
        async def run() -> None:
            calls.append(name)
            if fail:
                raise RuntimeError("boom")

        return run

    ctx.add_cleanup(cleanup("first"))
    ctx.add_cleanup(cleanup("second", fail=True))
    await ctx.release()
    await ctx.release()
    assert calls == ["second", "first"]


def _config(**extra: Any) -> dict[str, Any]:
    apis = [
        {"name": "chat", "path": "/ws/chat", "upstreams": ["ws://127.0.0.1:9/"], "policies": [{"tag": {"v": "api"}}]},
        {"name": "open", "path": "/ws/open", "upstreams": ["ws://127.0.0.1:9/"], "skip_policies": ["global-tag"]},
    ]
    return {
        "apis": apis,
        "policies": [{"tag": {"v": "global", "name": "global-tag"}}],
        "products": [{"name": "gold", "apis": ["chat"], "policies": [{"tag": {"v": "product"}}]}],
        "subscriptions": [{"id": "s1", "product": "gold", "key_sha256": hash_key("k1")}],
        **extra,
    }


class _TagSettings(BaseModel):
    v: str


class _Tag:
    """A custom policy type, registered like a user would."""

    Settings = _TagSettings

    def __init__(self, settings: _TagSettings, env: PolicyEnv) -> None:
        self.name = "tag"
        self.value = settings.v

    async def apply(self, context: HandshakeContext) -> None:
        context.variables.setdefault("order", []).append(self.value)


@pytest.fixture(autouse=True)
def _tag_registered() -> Iterator[None]:
    """Register the custom type for this module's tests only (the published schema lists built-ins)."""
    register_policy("tag")(_Tag)
    yield
    del REGISTRY["tag"]


async def test_scopes_run_global_then_product_then_api() -> None:
    policies = GatewayPolicies(load_config(_config()))
    ctx = policies.context("chat", scope("/ws/chat", headers=[("X-Subscription-Key", "k1")]), {})
    await policies.run(ctx)
    assert ctx.variables["order"] == ["global", "product", "api"]
    assert ctx.subscription is not None and ctx.subscription.id == "s1"


async def test_an_api_opts_out_of_an_inherited_policy_by_name() -> None:
    policies = GatewayPolicies(load_config(_config()))
    ctx = policies.context("open", scope("/ws/open"), {})
    await policies.run(ctx)
    assert "order" not in ctx.variables


def test_opting_out_of_an_unknown_policy_is_a_config_error() -> None:
    config = _config()
    config["apis"][1]["skip_policies"] = ["nope"]
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert info.value.problems == [
        "apis[1].skip_policies[0]: no inherited policy is named 'nope' (inherited: global-tag)"
    ]


async def test_plain_async_functions_are_policies_and_denials_name_them() -> None:
    async def only_tuesdays(context: HandshakeContext) -> None:
        raise deny(403, "closed today", reason="calendar")

    config = load_config({"apis": [{"name": "chat", "path": "/ws/chat", "upstreams": ["ws://x/"],
                                    "policies": [only_tuesdays]}]})  # fmt: skip
    policies = GatewayPolicies(config)
    denial = await denied(policies.run(policies.context("chat", scope(), {})))
    assert (denial.status, denial.policy, denial.reason) == (403, "only_tuesdays", "calendar")


async def test_a_denial_releases_what_the_policies_before_it_took() -> None:
    """A lease an earlier policy took (its cleanup) goes with the refused handshake."""
    released: list[str] = []

    async def takes_a_lease(context: HandshakeContext) -> None:
        async def release() -> None:
            released.append("lease")

        context.add_cleanup(release)

    async def refuses(context: HandshakeContext) -> None:
        raise deny(403, "no", reason="nope")

    config = load_config({"apis": [{"name": "chat", "path": "/ws/chat", "upstreams": ["ws://x/"],
                                    "policies": [takes_a_lease, refuses]}]})  # fmt: skip
    policies = GatewayPolicies(config)
    denial = await denied(policies.run(policies.context("chat", scope(), {})))
    assert (denial.status, denial.policy, released) == (403, "refuses", ["lease"])


def test_a_sync_function_is_not_a_policy() -> None:
    with pytest.raises(ConfigError, match=r"apis\[0\]\.policies\[0\]: .* is not an async function"):
        load_config({"apis": [{"name": "c", "path": "/c", "upstreams": ["ws://x/"], "policies": [print]}]})


def test_registry_holds_every_builtin_type() -> None:
    assert {
        "validate-jwt", "check-header", "ip-filter", "check-origin", "rate-limit-by-key", "quota-by-key",
        "limit-concurrency", "set-header", "remove-header", "set-query-parameter", "rewrite-uri",
        "set-backend-service", "choose",
    } <= set(REGISTRY)  # fmt: skip


def test_header_edits_leave_the_url_as_built() -> None:
    """Only query, rewrite and base-URL edits write the URL again (re-encoding its query)."""
    request = context("/ws/lobby", params={"room": "lobby"}, query="a=%2F&b=%7E&c").request
    plain = HandshakeContext("chat", request).build_request(API, API.upstreams[0]).url
    ctx = HandshakeContext("chat", request)
    ctx.upstream.set_header("X-User", "alice")
    ctx.upstream.remove_subprotocol("chat.v1")
    assert ctx.build_request(API, API.upstreams[0]).url == plain
    ctx.upstream.set_query("d", "1")
    assert ctx.build_request(API, API.upstreams[0]).url != plain


@given(st.text())
def test_a_header_value_keeps_every_character_but_controls(value: str) -> None:
    """C0, DEL and C1 (U+0085 NEL is a line break to ``str.splitlines``) are dropped."""
    ctx = HandshakeContext("chat", context("/ws/lobby", params={"room": "lobby"}).request)
    ctx.upstream.set_header("X-Value", value)
    request = UpstreamRequest("ws://up:9000/", [], [], scope=ctx.request.scope)
    sent = dict(ctx.upstream.apply(request).headers)["x-value"]
    assert sent == "".join(c for c in value if c == "\t" or (c >= " " and not "\x7f" <= c <= "\x9f"))


_REG_NAME = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_~", min_size=1, max_size=40
)


@given(_REG_NAME, st.sampled_from(["/", "@", " ", '"', "<", "\\\\", "?", "#"]))
def test_a_host_with_a_character_no_host_has_is_a_400(host: str, bad: str) -> None:
    with pytest.raises(HandshakeDenied) as info:
        check_host([(b"host", f"{host}{bad}x".encode())])
    assert info.value.status == 400
