"""The configuration's fields that had no bound, and its booleans that took anything: refused by field path.

``unhealthy_after: 1000000000`` (passive health off in all but name), a 10 kB ``store.prefix`` carried by
every counter's key, ``plugins``, ``trusted_proxies`` and ``subscription_key.headers`` of any length were
valid; ``verify_tls: "no"``, ``forward_query: 0`` and ``passthrough: "yes"`` were read as booleans. Each
is now a ``ConfigError`` naming the field (docs/security.md's limits table, docs/deployment.md).
"""

from __future__ import annotations

import json
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pytest

from asgi_ws_gateway import ConfigError, WebSocketGateway, load_config
from asgi_ws_gateway.config.limits import (
    MAX_FAILURES,
    MAX_KEY_HEADERS,
    MAX_MODULE,
    MAX_NETWORK,
    MAX_NETWORKS,
    MAX_PLUGINS,
    MAX_PREFIX,
    MAX_URL,
)
from asgi_ws_gateway.management import FileStore, GatewayManagement
from asgi_ws_gateway.standalone import not_found
from support.configs import api_entry

SECRET = "s" * 32
JWT = {"algorithms": ["HS256"], "secret": SECRET, "audience": "chat", "issuer": "https://issuer.example"}
HASH = "0" * 64


def _problems(document: dict[str, Any]) -> list[str]:
    try:
        load_config(document)
    except ConfigError as error:
        return error.problems
    return []


def _api(**fields: Any) -> dict[str, Any]:
    return {"apis": [api_entry("ws://127.0.0.1:9/", **fields)]}


def _wss_api(verify_tls: Any, **fields: Any) -> dict[str, Any]:
    """An API whose one upstream is a wss:// mapping with ``verify_tls``."""
    upstream = {"url": "wss://127.0.0.1:9/", "verify_tls": verify_tls}
    return {"name": "echo", "path": "/ws/echo", "upstreams": [upstream], **fields}


def _refused(document: dict[str, Any], path: str) -> str:
    problems = _problems(document)
    assert [p for p in problems if p.startswith(f"{path}: ")], problems
    return problems[0]


@pytest.mark.parametrize("value", [MAX_FAILURES + 1, 10**9, 2**63])
def test_unhealthy_after_past_a_hundred_is_refused(value: int) -> None:
    assert "less than or equal to 100" in _refused(_api(unhealthy_after=value), "apis[0].unhealthy_after")


def test_unhealthy_after_of_a_hundred_is_taken() -> None:
    assert _problems(_api(unhealthy_after=MAX_FAILURES)) == []


def test_a_store_prefix_past_64_characters_is_refused() -> None:
    assert _problems({"store": {"prefix": "p" * MAX_PREFIX}}) == []
    assert "at most 64 characters" in _refused({"store": {"prefix": "p" * (MAX_PREFIX + 1)}}, "store.prefix")


def test_a_store_url_past_2048_characters_is_refused() -> None:
    url = "redis://127.0.0.1:6379/0?client_name=" + "a" * MAX_URL
    _refused({"store": {"type": "redis", "url": url}}, "store.url")


def test_plugins_are_bounded_in_number_and_length() -> None:
    _refused({"plugins": ["json"] * (MAX_PLUGINS + 1)}, "plugins")
    _refused({"plugins": ["a" * (MAX_MODULE + 1)]}, "plugins[0]")


def test_trusted_proxies_are_bounded_in_number_and_length() -> None:
    _refused({"trusted_proxies": ["10.0.0.1"] * (MAX_NETWORKS + 1)}, "trusted_proxies")
    _refused({"trusted_proxies": ["1" * (MAX_NETWORK + 1)]}, "trusted_proxies[0]")
    assert _problems({"trusted_proxies": ["10.0.0.0/8"] * MAX_NETWORKS}) == []


def test_subscription_key_headers_are_bounded() -> None:
    headers = [f"X-Key-{i}" for i in range(MAX_KEY_HEADERS + 1)]
    _refused({"subscription_key": {"headers": headers}}, "subscription_key.headers")
    assert _problems({"subscription_key": {"headers": headers[:MAX_KEY_HEADERS]}}) == []


def test_allowed_asgi_upstreams_are_bounded_in_number() -> None:
    _refused({"management": {"allowed_asgi_upstreams": ["example_app"] * 1001}}, "management.allowed_asgi_upstreams")


def test_a_claim_a_token_must_carry_is_bounded_as_a_url() -> None:
    issuer = "https://issuer.example/" + "i" * MAX_URL
    problem = _refused({"policies": [{"validate-jwt": {**JWT, "issuer": issuer}}]}, "policies[0].validate-jwt.issuer")
    assert issuer not in problem


# Booleans: true and false, unquoted; nothing lax mode reads as one.
LOOSE = [1, 0, "yes", "no", "on", "off", "true", "false", "1", "0", "t", "f", "y", "n"]


@pytest.mark.parametrize("value", LOOSE)
@pytest.mark.parametrize(
    ("document", "path"),
    [
        (lambda v: _api(forward_query=v), "apis[0].forward_query"),
        (lambda v: _api(passthrough=v), "apis[0].passthrough"),
        (lambda v: {"apis": [_wss_api(v)]}, "apis[0].upstreams[0].verify_tls"),
        (lambda v: {"telemetry": {"enabled": v}}, "telemetry.enabled"),
        (lambda v: {"telemetry": {"propagate": v}}, "telemetry.propagate"),
        (lambda v: {"expose_error_details": v}, "expose_error_details"),
        (lambda v: {"products": [{"name": "p", "subscription_required": v}]}, "products[0].subscription_required"),
        (lambda v: {"policies": [{"check-origin": {"allowed": ["https://a.example"], "allow_missing": v}}]},
         "policies[0].check-origin.allow_missing"),
        (lambda v: {"policies": [{"validate-jwt": {**JWT, "secret_base64": v}}]},
         "policies[0].validate-jwt.secret_base64"),
    ],
    ids=["forward_query", "passthrough", "verify_tls", "telemetry.enabled", "telemetry.propagate",
         "expose_error_details", "subscription_required", "check-origin.allow_missing", "validate-jwt.secret_base64"],
)  # fmt: skip
def test_a_boolean_field_refuses_a_number_or_text(document: Any, path: str, value: Any) -> None:
    assert "a boolean: true or false" in _refused(document(value), path)


@pytest.mark.parametrize("value", [True, False])
def test_a_boolean_field_takes_true_and_false(value: bool) -> None:
    assert _problems({"apis": [_wss_api(value, forward_query=value, passthrough=value)]}) == []


def test_passthrough_takes_auto_and_a_number_field_still_takes_a_numeric_string() -> None:
    assert _problems(_api(passthrough="auto", unhealthy_after="5")) == []


@pytest.mark.parametrize("value", [2, -1, "AUTO", "maybe"])
def test_what_lax_mode_refuses_anyway_keeps_pydantic_s_message(value: Any) -> None:
    assert "Input should be" in _refused(_api(forward_query=value), "apis[0].forward_query")


async def _post_api(tmp_path: Path, api: dict[str, Any]) -> tuple[int, Any]:
    """``POST /apis`` with ``api``, straight to the management API's ASGI app (one call, in process)."""
    gateway = WebSocketGateway(not_found, config={"apis": []})
    management = GatewayManagement(
        gateway, admin_token="right-token", store=FileStore(tmp_path / "state.json"), allowed_hosts=["gw"]
    )
    body = json.dumps(api).encode()
    scope: dict[str, Any] = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/apis", "raw_path": b"/apis", "query_string": b"", "root_path": "",
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
        "headers": [(b"authorization", b"Bearer right-token"), (b"content-type", b"application/json"),
                    (b"host", b"gw"), (b"content-length", str(len(body)).encode())],
    }  # fmt: skip
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    await management.api(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return int(status), json.loads(b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"))


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"unhealthy_after": 10**9}, "unhealthy_after"),
        ({"forward_query": "no"}, "forward_query"),
        ({"upstreams": [{"url": "wss://127.0.0.1:9/", "verify_tls": 0}]}, "upstreams[0].verify_tls"),
    ],
)
async def test_the_management_api_refuses_the_same_with_422_by_field_path(
    tmp_path: Path, fields: dict[str, Any], path: str
) -> None:
    status, answer = await _post_api(tmp_path, api_entry("ws://127.0.0.1:9/", **fields))
    assert status == 422, answer
    assert any(problem.startswith(f"{path}: ") for problem in answer["problems"]), answer
