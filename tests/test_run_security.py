"""Under a real ``asgi-ws-gateway run``: clients cannot choose their address, and no credential reaches the output.

Issue 10 items 1 (client address spoofing) and 3 (secrets in logs). The gateway runs as a
subprocess; every line it writes (stdout and stderr: uvicorn's loggers, the gateway's, the access
log) is searched for the secrets sent.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from asgi_ws_gateway.policies import hash_key
from asgi_ws_gateway.upstream.proxy_headers import PROXY_SET
from support.clients import connect, expect_status
from support.jwts import HS_SECRET, token
from support.log_configs import DEBUG_TO_STDERR
from support.processes import ServerProcess, ready_server
from support.rawhttp import exchange, status_of
from support.servers import free_port
from support.upstream import UpstreamServer

ALLOWED_NET = "10.0.0.0/8"
SPOOFS: list[dict[str, str]] = [
    {"X-Forwarded-For": "10.1.2.3"},
    {"X-Forwarded-For": "10.1.2.3, 10.9.9.9"},
    {"X-Forwarded-For": " 10.1.2.3 ,10.9.9.9 "},
    {"X-Forwarded-For": "::ffff:10.1.2.3"},
    {"X-Forwarded-For": "[::ffff:10.1.2.3]:443"},
    {"X-Forwarded-For": "10.1.2.3:8080"},
    {"X-Forwarded-For": "garbage, 10.1.2.3"},
    {"X-Forwarded-For": "10.1.2.3, garbage"},
    {"X-Forwarded-For": "unknown"},
    {"Forwarded": "for=10.1.2.3"},
    {"Forwarded": 'for="[::ffff:10.1.2.3]:80";proto=https, for=10.9.9.9'},
    {"X-Real-IP": "10.1.2.3"},
    {"X-Forwarded-For": "10.1.2.3", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "internal"},
]


def _run(tmp: Path, config: dict[str, Any], *extra: str, env: dict[str, str] | None = None) -> ServerProcess:
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return ready_server(lambda port: ["-m", "asgi_ws_gateway", "run", str(path), "--port", str(port), *extra], env=env)


def _apis(upstream: UpstreamServer) -> list[dict[str, Any]]:
    return [
        {"name": "allow", "path": "/allow", "upstreams": [upstream.url("/headers")],
         "policies": [{"ip-filter": {"allow": [ALLOWED_NET]}}]},
        {"name": "deny", "path": "/deny", "upstreams": [upstream.url("/headers")],
         "policies": [{"ip-filter": {"deny": ["127.0.0.0/8", "::1"]}}]},
        {"name": "open", "path": "/open", "upstreams": [upstream.url("/headers")],
         "policies": [{"set-header": {"header": "X-Client-IP", "value": "{client.ip}"}}]},
        {"name": "limited", "path": "/limited", "upstreams": [upstream.url("/headers")],
         "policies": [{"rate-limit-by-key": {"key": "{client.ip}", "limit": 2, "window": 600}}]},
    ]  # fmt: skip


async def _upstream_saw(url: str, headers: dict[str, str]) -> dict[str, Any]:
    async with await connect(url, additional_headers=headers) as ws:
        seen: dict[str, Any] = json.loads(await ws.recv())
        return seen


@pytest.fixture(scope="module")
def untrusting(tmp_path_factory: pytest.TempPathFactory, upstream_server: UpstreamServer) -> Iterator[ServerProcess]:
    """A gateway with no trusted proxies: the TCP peer (127.0.0.1) is the client, whatever it says."""
    with _run(tmp_path_factory.mktemp("untrusting"), {"apis": _apis(upstream_server)}) as server:
        yield server


@pytest.mark.parametrize("spoof", SPOOFS, ids=lambda s: "|".join(f"{k}={v}" for k, v in s.items()))
async def test_forwarding_headers_do_not_open_an_allow_list(untrusting: ServerProcess, spoof: dict[str, str]) -> None:
    """A client on 127.0.0.1 claiming an allowed address in any forwarding header is refused with 403."""
    status, _, _ = await expect_status(f"ws://127.0.0.1:{untrusting.port}/allow", additional_headers=spoof)
    assert status == 403


@pytest.mark.parametrize("spoof", SPOOFS, ids=lambda s: "|".join(f"{k}={v}" for k, v in s.items()))
async def test_forwarding_headers_do_not_escape_a_deny_list(untrusting: ServerProcess, spoof: dict[str, str]) -> None:
    """A denied client (127.0.0.1) claiming another address is still refused with 403."""
    status, _, _ = await expect_status(f"ws://127.0.0.1:{untrusting.port}/deny", additional_headers=spoof)
    assert status == 403


async def test_upstream_gets_the_peer_not_the_clients_forwarding_headers(untrusting: ServerProcess) -> None:
    """From an untrusted peer: X-Forwarded-For is the peer alone, the scheme ours, Forwarded/X-Real-IP dropped."""
    spoof = {"X-Forwarded-For": "10.1.2.3", "X-Forwarded-Proto": "https", "Forwarded": "for=10.1.2.3;proto=https",
             "X-Real-IP": "10.1.2.3"}  # fmt: skip
    seen = (await _upstream_saw(f"ws://127.0.0.1:{untrusting.port}/open", spoof))["headers"]
    assert seen["x-forwarded-for"] == ["127.0.0.1"]
    assert seen["x-client-ip"] == ["127.0.0.1"]  # {client.ip} templates: the peer too
    assert seen["x-forwarded-proto"] == ["http"]
    assert "forwarded" not in seen
    assert "x-real-ip" not in seen


async def test_no_header_a_proxy_sets_reaches_the_upstream_from_an_untrusted_peer(untrusting: ServerProcess) -> None:
    """Client-address, host and URL-override headers upstream frameworks believe (``X-Original-URL`` routes
    some past the gateway's own routing): dropped from anyone but a trusted proxy."""
    spoof = {name: "10.1.2.3" for name in PROXY_SET if name not in ("x-original-url", "x-rewrite-url")}
    spoof |= {"X-Original-URL": "/admin", "X-Rewrite-URL": "/admin", "X-Kept": "yes"}
    seen = (await _upstream_saw(f"ws://127.0.0.1:{untrusting.port}/open", spoof))["headers"]
    assert not PROXY_SET - {"x-client-ip"} & set(seen)
    assert seen["x-client-ip"] == ["127.0.0.1"]  # the API's own set-header {client.ip}, not the client's
    assert seen["x-kept"] == ["yes"]  # any other header goes on


async def test_rotating_forwarding_headers_do_not_escape_a_per_client_rate_limit(untrusting: ServerProcess) -> None:
    """``rate-limit-by-key {client.ip}``, limit 2: a new forged address per attempt still counts as one client."""
    url = f"ws://127.0.0.1:{untrusting.port}/limited"
    for i, spoof in enumerate(({"X-Forwarded-For": "10.0.0.1"}, {"Forwarded": "for=10.0.0.2"})):
        await _upstream_saw(url, {**spoof, "X-Real-IP": f"10.0.1.{i}"})
    for spoof in ({"X-Forwarded-For": "10.0.0.3"}, {"Forwarded": "for=10.0.0.4"}, {"X-Real-IP": "10.0.0.5"}, {}):
        assert (await expect_status(url, additional_headers=spoof))[0] == 429


async def test_access_log_names_the_peer_not_the_claimed_address(untrusting: ServerProcess) -> None:
    """The gateway's access line for a spoofed refusal names 127.0.0.1, never the forged address."""
    await expect_status(f"ws://127.0.0.1:{untrusting.port}/allow", additional_headers={"X-Forwarded-For": "10.7.7.7"})
    await expect_status(f"ws://127.0.0.1:{untrusting.port}/allow")  # a marker line after the spoofed one
    lines = [line for line in untrusting.stdout().splitlines() if '"WebSocket /allow" 403' in line]
    assert lines and all(line.split()[1].startswith("127.0.0.1:") for line in lines)
    assert "10.7.7.7" not in untrusting.output()


async def test_trusted_proxy_still_names_the_client(tmp_path: Path, upstream_server: UpstreamServer) -> None:
    """With trusted_proxies [127.0.0.1] the forwarded address is believed: allowed, refused, and passed on."""
    config = {"trusted_proxies": ["127.0.0.1"], "apis": _apis(upstream_server)}
    with _run(tmp_path, config) as server:
        base = f"ws://127.0.0.1:{server.port}"
        seen = await _upstream_saw(base + "/allow", {"X-Forwarded-For": "10.1.2.3"})
        assert seen["headers"]["x-forwarded-for"] == ["10.1.2.3, 127.0.0.1"]
        await _upstream_saw(base + "/allow", {"X-Forwarded-For": "192.0.2.1, 10.1.2.3"})  # nearest hop decides
        assert (await expect_status(base + "/allow", additional_headers={"X-Forwarded-For": "192.0.2.1"}))[0] == 403
        assert (await expect_status(base + "/allow"))[0] == 403  # the proxy itself is not in the allow list
        await _upstream_saw(base + "/deny", {"X-Forwarded-For": "203.0.113.9"})
        assert (await expect_status(base + "/deny", additional_headers={"X-Forwarded-For": "127.0.0.5"}))[0] == 403
        assert server.stop() == 0
        stdout = server.stdout()
    # The access log names the client the trusted proxy reported, for admissions and refusals alike.
    assert '10.1.2.3 - "WebSocket /allow" 101 allow' in stdout
    assert '192.0.2.1 - "WebSocket /allow" 403 allow denied' in stdout
    assert '127.0.0.5 - "WebSocket /deny" 403 deny denied' in stdout


# --- secrets ---------------------------------------------------------------------------------------

JWT = token(sub="alice", ttl=24 * 3600)  # made at collection: must outlive a long suite
KEY = "sk-live-7f3a9c1e5b2d4f6a8c0e"
SECRETS = (JWT, JWT.split(".")[2], KEY, HS_SECRET)


def _secret_apis(upstream: UpstreamServer, dead_port: int) -> dict[str, Any]:
    jwt_policy = {
        "validate-jwt": {
            "algorithms": ["HS256"],
            "secret": HS_SECRET,
            "issuer": "https://issuer.test",
            "audience": "chat",
            "token": [
                {"query": "access_token"},
                {"header": "Authorization"},
                {"cookie": "session"},
                {"subprotocol": "bearer."},
            ],
        }
    }
    api = {"name": "jwt", "path": "/jwt", "upstreams": [upstream.url("/echo")], "policies": [jwt_policy]}
    return {
        "products": [{"name": "gold", "apis": ["keyed"]}],
        "subscriptions": [{"id": "alice", "product": "gold", "key_sha256": hash_key(KEY)}],
        "apis": [
            api,
            {**api, "name": "dead", "path": "/dead", "upstreams": [f"ws://127.0.0.1:{dead_port}/x"]},
            {"name": "keyed", "path": "/keyed", "upstreams": [upstream.url("/echo")]},
            {"name": "keyed-dead", "path": "/keyed-dead", "upstreams": [f"ws://127.0.0.1:{dead_port}/x"]},
            {**api, "name": "denied", "path": "/denied", "policies": [{"ip-filter": {"deny": ["127.0.0.0/8"]}}]},
        ],
    }  # fmt: skip


async def _attempt(url: str, **kw: Any) -> int:
    """Open (101, then a clean close) or be refused; the status either way."""
    try:
        async with await connect(url, **kw) as ws:
            await ws.send("hi")
            await ws.recv()
            return 101
    except Exception as exc:  # InvalidStatus carries the status; anything else fails the test
        response = getattr(exc, "response", None)
        assert response is not None, exc
        return int(response.status_code)


async def _every_position(base: str) -> list[int]:
    """Send the JWT and the subscription key in every position, accepted and refused."""
    bad_jwt = JWT[:-4] + "AAAA"
    statuses = []
    for path in ("/jwt", "/dead", "/denied"):
        for token_ in (JWT, bad_jwt):
            statuses.append(await _attempt(f"{base}{path}?access_token={token_}&room=1"))
            statuses.append(await _attempt(base + path, additional_headers={"Authorization": f"Bearer {token_}"}))
            statuses.append(await _attempt(base + path, additional_headers={"Cookie": f"a=1; session={token_}"}))
            statuses.append(await _attempt(base + path, subprotocols=[f"bearer.{token_}"]))
    for path in ("/keyed", "/keyed-dead"):
        for key in (KEY, KEY + "x"):
            statuses.append(await _attempt(f"{base}{path}?subscription-key={key}"))
            statuses.append(await _attempt(base + path, additional_headers={"Ocp-Apim-Subscription-Key": key}))
            statuses.append(await _attempt(base + path, additional_headers={"X-Subscription-Key": key}))
    statuses.append(await _attempt(f"{base}/nowhere?access_token={JWT}&subscription-key={KEY}"))
    # In the path, as a client may write it: uvicorn logs a plain GET's target percent-encoded
    # (token%3D..., Bearer%20...), which its line's redaction read in clear; a WebSocket too.
    port = int(base.rsplit(":", 1)[1])
    for path in (f"/jwt/token={KEY}", f"/nowhere/Bearer%20{KEY}", f"/nowhere/api_key:%20{KEY}", f"/x/{JWT}"):
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
        statuses.append(status_of(await exchange(port, request)))
        statuses.append(await _attempt(f"{base}{path}"))
    return statuses


def _assert_no_secret(output: str) -> None:
    assert output.strip(), "the gateway wrote nothing: the test would prove nothing"
    for secret in SECRETS:
        assert secret not in output, f"a secret reached the output:\n{output}"


@pytest.mark.parametrize("access_format", ["text", "json"])
async def test_no_credential_reaches_any_output_under_run(
    tmp_path: Path, upstream_server: UpstreamServer, access_format: str
) -> None:
    """JWT in query/header/cookie/subprotocol and key in query/headers; 101, 401, 403, 502, 404: no secret logged."""
    dead = free_port()
    with _run(tmp_path, _secret_apis(upstream_server, dead), "--access-log-format", access_format,
              "--log-level", "debug") as server:  # fmt: skip
        statuses = await _every_position(f"ws://127.0.0.1:{server.port}")
        assert server.stop() == 0
        output = server.output()
    assert {101, 401, 403, 502, 404} <= set(statuses)
    assert "access_token=REDACTED" in output  # uvicorn's line is there, with the value redacted
    accepted = '"api":"jwt"' if access_format == "json" else '"WebSocket /jwt" 101 jwt'
    assert output.count(accepted) >= 4  # and the gateway's access lines
    _assert_no_secret(output)


async def test_debug_logging_of_every_library_leaks_nothing(tmp_path: Path, upstream_server: UpstreamServer) -> None:
    """A user's --log-config with root at DEBUG: websockets' own header dumps (client and server) are redacted."""
    (tmp_path / "logging.json").write_text(json.dumps(DEBUG_TO_STDERR))
    dead = free_port()
    config = _secret_apis(upstream_server, dead)
    for api in config["apis"]:
        api["passthrough"] = False  # relayed: the websockets client on the upstream leg dumps its headers too
    with _run(tmp_path, config, "--log-config", str(tmp_path / "logging.json"),
              "--log-level", "debug") as server:  # fmt: skip
        statuses = await _every_position(f"ws://127.0.0.1:{server.port}")
        headers = {"Authorization": f"Bearer {JWT}", "X-Api-Key": KEY}
        statuses.append(await _attempt(f"ws://127.0.0.1:{server.port}/jwt", additional_headers=headers))
        assert server.stop() == 0
        output = server.output()
    assert {101, 401, 502} <= set(statuses)
    assert "websockets.client DEBUG > x-api-key: REDACTED" in output  # forwarded upstream, logged redacted
    assert "uvicorn.error DEBUG < authorization: REDACTED" in output
    _assert_no_secret(output)


@pytest.mark.parametrize("offer", [f"access_token.{KEY};x", f"bearer.{KEY} chat", f'chat, k8s.{KEY}"x'])
async def test_a_malformed_token_subprotocol_is_redacted_in_the_debug_traceback(
    tmp_path: Path, upstream_server: UpstreamServer, offer: str
) -> None:
    """websockets' refusal of a Sec-WebSocket-Protocol it cannot parse ends its debug traceback with
    the header's value ("expected comma at 21 in access_token.<token>;x"): the dump line of the same
    header was redacted, that line was not (an attack pass on 2026-12-06, under run and uvicorn)."""
    with _run(tmp_path, {"apis": _apis(upstream_server)}, "--log-level", "debug") as server:
        request = (
            f"GET /open HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: {offer}\r\n\r\n"
        )
        assert status_of(await exchange(server.port, request.encode())) == 400
        assert server.stop() == 0
        output = server.output()
    assert "invalid Sec-WebSocket-Protocol header: " in output  # the line is there, its value redacted
    assert KEY not in output, output
