"""Cross-site WebSocket hijacking that ``check`` and ``run`` stayed silent about.

A browser sends a site's cookies with a WebSocket handshake whatever page opens it (SameSite=Strict
ones too, from a sibling subdomain: same site). An API that decides on a cookie needs a
``check-origin`` that runs for every client. Two ways it did not, with no warning:

- ``check-origin`` in one product of the API, none in the other: the warning reasoned over every
  product's policies at once, but a client runs only its key's product (policies/products.py). A
  page on blog.example.com with the attacker's own key of the other product got 101 and the victim's
  cookie reached the upstream.
- a cookie checked by something else than ``validate-jwt`` (``check-header`` of ``Cookie``, a
  ``choose`` condition on ``{cookie.*}``, a ``set-header`` writing one into ``Authorization``).

Likewise a ``validate-jwt`` of one product passed a ``{jwt.sub}`` limit of the API for the other
product's subscribers, for whom it is empty (one counter for all of them): refused now.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import yaml

from asgi_ws_gateway.policies.api_warnings import cookie_readers
from asgi_ws_gateway.policies.base import PolicyEnv
from asgi_ws_gateway.policies.products import hash_key
from asgi_ws_gateway.policies.transform import RewriteUri, SetHeader
from support.jwts import HS_SECRET, token
from support.processes import EXE, ServerProcess, cli_env, main_in_process, ready_server
from support.rawhttp import handshake, status_of
from support.upstream import UpstreamServer

JWT = {
    "validate-jwt": {
        "algorithms": ["HS256"],
        "secret": HS_SECRET,
        "audience": "chat",
        "token": [{"cookie": "access_token"}],
    }
}
ORIGIN = {"check-origin": {"allowed": ["http://app.example.com:*"]}}
HIJACK = "cross-site WebSocket hijacking"
WEB_KEY, PARTNER_KEY = "web-key-0123456789", "partner-key-0123456789"


def _products(web: list[Any], partners: list[Any], **partner_fields: Any) -> list[dict[str, Any]]:
    return [
        {"name": "web", "apis": ["chat"], "policies": web},
        {"name": "partners", "apis": ["chat"], "policies": partners, **partner_fields},
    ]


def _config(
    upstream: str, *api_policies: Any, products: list[dict[str, Any]] | None = None, **top: Any
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "apis": [{"name": "chat", "path": "/ws/chat", "upstreams": [upstream], "policies": list(api_policies)}],
        **top,
    }
    if products is not None:
        config["products"] = products
        config["subscriptions"] = [
            {"id": "victim-web", "product": "web", "key_sha256": hash_key(WEB_KEY)},
            {"id": "attacker", "product": "partners", "key_sha256": hash_key(PARTNER_KEY)},
        ]
    return config


def _check(tmp_path: Path, config: dict[str, Any], *, as_process: bool = False) -> tuple[int, str]:
    """``check``'s exit code and output: ``cli.main`` answers in this process (a process's start was most of the
    time of these tests), or the real command line (``as_process``: its wiring)."""
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    if not as_process:
        code, out, err = main_in_process("check", str(path))
        return code, out + err
    done = subprocess.run([str(EXE), "check", str(path)], capture_output=True, text=True, timeout=60, env=cli_env())
    return done.returncode, done.stdout + done.stderr


# -- check: one product's check-origin is not the other's -------------------------------------------------


@pytest.mark.parametrize(
    ("products", "unchecked"),
    [
        (_products([ORIGIN], []), "clients with a subscription key of product 'partners'"),
        (_products([], [ORIGIN]), "clients with a subscription key of product 'web'"),
        # both open: a keyless client runs both (checked), a key of 'partners' runs only 'partners'
        (
            [{**p, "subscription_required": False} for p in _products([ORIGIN], [])],
            "clients with a subscription key of product 'partners'",
        ),
        # the check-origin skipped by the API in one product
        (_products([{"check-origin": {**ORIGIN["check-origin"], "name": "o"}}], [ORIGIN]), None),
    ],
    ids=["partners-unchecked", "web-unchecked", "open-products", "skipped-by-name"],
)
def test_check_warns_when_a_product_s_subscribers_get_no_origin_check(
    tmp_path: Path, products: list[dict[str, Any]], unchecked: str | None
) -> None:
    """``check`` is valid and warns, naming the clients no ``check-origin`` runs for."""
    skip = {"skip_policies": ["o"]} if unchecked is None else {}
    config = _config("ws://127.0.0.1:9/", JWT, products=products)
    config["apis"][0].update(skip)
    code, output = _check(tmp_path, config)
    assert code == 0, output
    warned = [line for line in output.splitlines() if HIJACK in line]
    assert len(warned) == 1, output
    assert "validate-jwt 'validate-jwt' reads its token from a cookie (access_token)" in warned[0], warned
    assert (unchecked or "clients with a subscription key of product 'web'") in warned[0], warned


@pytest.mark.parametrize(
    "products",
    [_products([ORIGIN], [ORIGIN]), _products([], [])],
    ids=["every-product", "none-but-the-api-s"],
)
def test_check_is_quiet_when_every_client_gets_an_origin_check(tmp_path: Path, products: list[Any]) -> None:
    """A ``check-origin`` in every product of the API, or in the API's own policies: no warning."""
    api_policies = [JWT] if products[0]["policies"] else [JWT, ORIGIN]
    code, output = _check(tmp_path, _config("ws://127.0.0.1:9/", *api_policies, products=products))
    assert code == 0 and HIJACK not in output, output


def test_a_product_s_token_does_not_set_the_claims_of_another_product_s_clients(tmp_path: Path) -> None:
    """A ``{jwt.sub}`` limit of the API after one product's ``validate-jwt``: empty for the other's
    subscribers, one counter for all of them; refused, by field path, naming them."""
    limit = {"rate-limit-by-key": {"key": "{jwt.sub}", "limit": 3, "window": 60}}
    code, output = _check(tmp_path, _config("ws://127.0.0.1:9/", limit, products=_products([JWT], [])))
    assert code == 2, output
    assert "apis[0].policies[0].rate-limit-by-key.key: reads {jwt.sub}" in output, output
    assert "when it runs for clients with a subscription key of product 'partners' (global policies" in output
    assert "if the missing value is meant (API 'chat')" in output, output
    code, output = _check(tmp_path, _config("ws://127.0.0.1:9/", limit, products=_products([JWT], [JWT])))
    assert code == 0, output


# -- check: whatever reads the cookie ---------------------------------------------------------------------

COOKIE_CHECK = {"check-header": {"header": "Cookie", "pattern": ".*session=s3cr3t.*", "failed_status": 401}}


@pytest.mark.parametrize(
    ("policies", "top", "said"),
    [
        ([COOKIE_CHECK], {}, "check-header 'check-header' checks the Cookie header"),
        ([{"check-header": {"header": "cookie", "name": "session"}}], {}, "check-header 'session' checks"),
        (
            [
                {
                    "choose": {
                        "when": [{"if": {"ref": "cookie.session", "in": ["a", "b"]}, "policies": []}],
                        "otherwise": [{"set-backend-service": {"base_url": "ws://127.0.0.1:9"}}],
                    }
                }
            ],
            {},
            "choose 'choose' decides on a cookie ({cookie.session})",
        ),
        (
            [{"choose": {"when": [{"if": {"ref": "header.Cookie", "matches": "s3cr3t"}, "policies": []}]}}],
            {},
            "choose 'choose' decides on a cookie ({header.cookie})",
        ),
        (
            [{"set-header": {"header": "Authorization", "value": "Bearer {cookie.token}"}}],
            {},
            "set-header 'set-header' sends a cookie ({cookie.token}) upstream as Authorization",
        ),
        (
            [{"set-query-parameter": {"parameter": "access_token", "value": "{cookie.token}"}}],
            {},
            "set-query-parameter 'set-query-parameter' sends a cookie ({cookie.token}) upstream as access_token",
        ),
        (
            [COOKIE_CHECK, {"choose": {"when": [{"if": {"ref": "query.v", "equals": "2"}, "policies": [ORIGIN]}]}}],
            {},
            "check-header",
        ),  # a check-origin in a branch does not always run
        ([], {"policies": [COOKIE_CHECK]}, "check-header 'check-header' checks the Cookie header"),
        # a cookie as who the client is: a proxy's identity header, the upstream path, a user parameter
        (
            [{"set-header": {"header": "Remote-User", "value": "{cookie.user}"}}],
            {},
            "set-header 'set-header' sends a cookie ({cookie.user}) upstream as Remote-User",
        ),
        (
            [{"set-header": {"header": "X-Forwarded-Email", "value": "{cookie.email}"}}],
            {},
            "upstream as X-Forwarded-Email",
        ),
        ([{"set-header": {"header": "X-User-Id", "value": "{header.cookie}"}}], {}, "upstream as X-User-Id"),
        (
            [{"rewrite-uri": {"template": "/u/{cookie.uid}"}}],
            {},
            "rewrite-uri 'rewrite-uri' sends a cookie ({cookie.uid}) upstream in its path",
        ),
        (
            [{"rewrite-uri": {"template": "/u?room=1&user={cookie.uid}"}}],
            {},
            "rewrite-uri 'rewrite-uri' sends a cookie ({cookie.uid}) upstream in the query parameter user",
        ),
        (
            [{"set-query-parameter": {"parameter": "user", "value": "{cookie.uid}"}}],
            {},
            "set-query-parameter 'set-query-parameter' sends a cookie ({cookie.uid}) upstream as user",
        ),
    ],
    ids=[
        "check-header",
        "lower-case",
        "choose-cookie",
        "choose-header",
        "set-header",
        "set-query",
        "origin-in-branch",
        "global",
        "remote-user",
        "forwarded-email",
        "user-id-header-cookie",
        "rewrite-path",
        "rewrite-query-user",
        "set-query-user",
    ],
)
def test_check_warns_about_any_built_in_policy_deciding_on_a_cookie(
    tmp_path: Path, policies: list[Any], top: dict[str, Any], said: str
) -> None:
    """Valid, and one warning naming the policy, for an API in no product."""
    code, output = _check(tmp_path, _config("ws://127.0.0.1:9/", *policies, **top))
    assert code == 0, output
    warned = [line for line in output.splitlines() if HIJACK in line]
    assert len(warned) == 1 and said in warned[0] and "no check-origin always runs" in warned[0], output


def test_a_subscription_key_read_from_the_cookie_header_is_warned_about(tmp_path: Path) -> None:
    """``subscription_key.headers: [Cookie]``: the key is a cookie the browser sends by itself."""
    config = _config("ws://127.0.0.1:9/", products=_products([], []), subscription_key={"headers": ["Cookie"]})
    code, output = _check(tmp_path, config, as_process=True)
    assert code == 0 and "the subscription key is read from the Cookie header" in output, output


@pytest.mark.parametrize(
    "policies",
    [
        [COOKIE_CHECK, ORIGIN],
        [{"check-header": {"header": "X-Api-Version", "values": ["2"]}}],
        [{"set-header": {"header": "X-Room", "value": "{cookie.room}"}}],  # not a credential
        [{"rate-limit-by-key": {"key": "{cookie.session}", "limit": 5, "window": 60}}],  # decides on no one
        [{"rewrite-uri": {"template": "/u?theme={cookie.theme}"}}],  # a parameter naming no one
        [{"set-query-parameter": {"parameter": "room", "value": "{cookie.room}"}}],
        [{"set-header": {"header": "Remote-User", "exists_action": "delete"}}],
        [{"set-header": {"header": "Remote-User", "value": "{cookie.user}"}}, ORIGIN],
    ],
    ids=[
        "with-origin-check",
        "another-header",
        "plain-header",
        "limit-key",
        "rewrite-query-theme",
        "set-query-room",
        "delete-remote-user",
        "remote-user-with-origin-check",
    ],
)
def test_otherwise_nothing_is_said(tmp_path: Path, policies: list[Any]) -> None:
    code, output = _check(tmp_path, _config("ws://127.0.0.1:9/", *policies))
    assert code == 0 and HIJACK not in output, output


# -- run: the warning in the log, and the exposure it describes -------------------------------------------


@pytest.fixture
def upstream() -> Iterator[UpstreamServer]:
    with UpstreamServer() as server:
        yield server


def _run(tmp_path: Path, config: dict[str, Any]) -> ServerProcess:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return ready_server(lambda port: ["-m", "asgi_ws_gateway", "run", str(path), "--port", str(port)])


async def _status(port: int, *headers: str) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(handshake("/ws/chat", "".join(f"{h}\r\n" for h in headers).encode()))
        return status_of(await reader.readuntil(b"\r\n\r\n"))
    finally:
        # Gone before the caller stops the server (server.stop() blocks this loop): a 101 left open
        # would hold the shutdown for the gateway's closing-handshake timeout.
        writer.close()
        await writer.wait_closed()


SIBLING = "Origin: http://blog.example.com"
"""A page on a sibling subdomain: the same site, so even SameSite=Strict cookies are sent."""


async def test_run_warns_about_the_product_without_check_origin(tmp_path: Path, upstream: UpstreamServer) -> None:
    """``run`` logs the warning naming 'partners'; the page with the attacker's 'partners' key and the
    victim's cookie is admitted (101), what the warning is about; with the 'web' key it is refused."""
    cookie = f"Cookie: access_token={token(sub='victim')}"
    config = _config(upstream.url("/echo"), JWT, products=_products([ORIGIN], []))
    with _run(tmp_path, config) as server:
        assert await _status(server.port, SIBLING, cookie, f"X-Subscription-Key: {WEB_KEY}") == 403
        assert await _status(server.port, SIBLING, cookie, f"X-Subscription-Key: {PARTNER_KEY}") == 101
        server.stop()
        warned = [line for line in server.output().splitlines() if HIJACK in line]
    assert warned and "product 'partners'" in warned[0], server.output()


async def test_run_warns_about_a_cookie_checked_by_check_header(tmp_path: Path, upstream: UpstreamServer) -> None:
    """``run`` logs the warning for a ``check-header`` of ``Cookie``; a sibling page with the cookie
    gets 101; with ``check-origin`` added, 403 and no warning."""
    cookie = "Cookie: theme=dark; session=s3cr3t"
    with _run(tmp_path, _config(upstream.url("/echo"), COOKIE_CHECK)) as server:
        assert await _status(server.port, SIBLING, cookie) == 101
        server.stop()
        assert "check-header 'check-header' checks the Cookie header" in server.output(), server.output()
    with _run(tmp_path, _config(upstream.url("/echo"), COOKIE_CHECK, ORIGIN)) as server:
        assert await _status(server.port, SIBLING, cookie) == 403
        assert await _status(server.port, "Origin: http://app.example.com", cookie) == 101
        server.stop()
        assert HIJACK not in server.output(), server.output()


@pytest.mark.parametrize(
    ("header", "counted"),
    [
        ("Remote-User", True),
        ("X-Forwarded-Email", True),
        ("X-Forwarded-User", True),
        ("X-Auth-Request-User", True),
        ("X-Consumer-Username", True),
        ("X-Goog-Iap-Jwt-Assertion", True),
        ("X-User", True),
        ("Authorization", True),
        ("X-Api-Key", True),
        ("X-Room", False),
        ("X-Theme", False),
    ],
)
def test_a_cookie_in_an_identity_header_is_read_as_deciding_on_it(header: str, counted: bool) -> None:
    """The proxy-header rules the gateway applies to what clients send (``is_proxy_header``), the
    credential names, and names holding ``user``: the upstream takes the value as who the client is."""
    policy = SetHeader(SetHeader.Settings(header=header, value="{cookie.who}"), cast(PolicyEnv, None))
    assert bool(cookie_readers([policy])) is counted


@pytest.mark.parametrize(
    ("template", "counted"),
    [
        ("/u/{cookie.uid}", True),
        ("/rooms/{header.cookie}/x", True),
        ("/u?access_token={cookie.t}", True),
        ("/u?x=1&user%5Fid={cookie.uid}", True),
        ("/u?theme={cookie.theme}", False),
        ("/u/{query.room}?user={jwt.sub}", False),
    ],
)
def test_a_cookie_in_the_upstream_path_is_read_as_deciding_on_it(template: str, counted: bool) -> None:
    policy = RewriteUri(RewriteUri.Settings(template=template), cast(PolicyEnv, None))
    assert bool(cookie_readers([policy])) is counted


async def test_run_hands_a_foreign_page_the_identity_the_warning_is_about(
    tmp_path: Path, upstream: UpstreamServer
) -> None:
    """``Remote-User: {cookie.user}`` with no ``check-origin``: ``run`` warns; a page on evil.example
    with the victim's cookie gets 101 and the upstream reads ``Remote-User: victim``. With
    ``check-origin``: 403, and no warning."""
    remote_user = {"set-header": {"header": "Remote-User", "value": "{cookie.user}"}}
    cookie = "Cookie: user=victim"
    with _run(tmp_path, _config(upstream.url("/echo"), remote_user)) as server:
        assert await _status(server.port, "Origin: https://evil.example", cookie) == 101
        server.stop()
        warned = [line for line in server.output().splitlines() if HIJACK in line]
    assert warned and "upstream as Remote-User" in warned[0], server.output()
    assert upstream.handshakes[-1].header("remote-user") == "victim"
    with _run(tmp_path, _config(upstream.url("/echo"), remote_user, ORIGIN)) as server:
        assert await _status(server.port, "Origin: https://evil.example", cookie) == 403
        server.stop()
        assert HIJACK not in server.output(), server.output()
