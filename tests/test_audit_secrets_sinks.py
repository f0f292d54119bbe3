"""Every secret a client or an operator hands the gateway, searched for in every sink, with its fragments.

One real ``asgi-ws-gateway run`` at debug level (JSON access log, the management API, telemetry
exported over OTLP with a header credential, limits and management state in a Redis that wants a
password). Clients send JWTs in every source a ``validate-jwt`` reads (a query parameter of a name of
the policy's own, a cookie, ``Sec-WebSocket-Protocol`` as browsers must, ``Authorization`` in any
case, repeated), other schemes (``Basic``, ``Token``), subscription keys, right and wrong admin
tokens. Then every output is searched: stdout, stderr, each span (attributes and events), metric
point and log record the collector received, the management API's answers, and what the upstream was
sent; for each secret its value and its fragments (a JWT's payload and signature alone, a password
percent-encoded, ``user:pass`` in base64).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx2
import pytest
import yaml

from asgi_ws_gateway.policies import hash_key
from support.clients import connect
from support.jwts import HS_SECRET, token
from support.otlp import OtlpReceiver
from support.processes import cli, ready_server
from support.redis import RedisServer, redis_available
from support.servers import free_port
from support.upstream import UpstreamServer

pytestmark = pytest.mark.skipif(not redis_available(), reason="needs redis-server")

JWT = token(sub="alice", ttl=3600)
LOWER_JWT = token(sub="bob", ttl=3600)  # sent as "bearer ..." / "BEARER ..."
QUERY_JWT = token(sub="carol", ttl=3600)  # in the policy's own query parameter, "auth"
COOKIE_JWT = token(sub="dave", ttl=3600)
PROTOCOL_JWT = token(sub="erin", ttl=3600)  # in Sec-WebSocket-Protocol: bearer.<token>
BAD_JWT = token(sub="mallory", ttl=3600)[:-6] + "AAAAAA"
OPAQUE = "opaq-SEKRIT-4f1e9d2c7b"  # Authorization: Token ...
BASIC_USER, BASIC_PASSWORD = "basic-user", "basic-SEKRIT-pw-83"
KEY = "sk-SEKRIT-sub-5a8c1e3f7b9d"
WRONG_KEY = "sk-SEKRIT-wrong-0b2d4f6a8c"
ADMIN = "adm-SEKRIT-token-6e1c9a7f3b5d2e8c"
WRONG_ADMIN = "adm-SEKRIT-wrong-9d7b5f3a1c"
UPSTREAM_QUERY = "upq-SEKRIT-61c3"  # a configured upstream URL's credential parameter
DEAD_QUERY = "deadq-SEKRIT-72e4"
SET_HEADER = "seth-SEKRIT-83f5"  # a set-header value the upstream must get
REDIS_PASSWORD = "rpw/SEKRIT+9@x"
OTLP_HEADER = "otlp-SEKRIT-94a6"

BASIC = base64.b64encode(f"{BASIC_USER}:{BASIC_PASSWORD}".encode()).decode()


def _jwt_fragments(jwt: str) -> list[str]:
    _, payload, signature = jwt.split(".")
    return [jwt, payload, signature]


SECRETS: dict[str, list[str]] = {
    "jwt": _jwt_fragments(JWT),
    "lower-case bearer jwt": _jwt_fragments(LOWER_JWT),
    "query jwt": _jwt_fragments(QUERY_JWT),
    "cookie jwt": _jwt_fragments(COOKIE_JWT),
    "subprotocol jwt": _jwt_fragments(PROTOCOL_JWT),
    "bad jwt": _jwt_fragments(BAD_JWT),
    "opaque token": [OPAQUE],
    "basic credentials": [BASIC, BASIC_PASSWORD],
    "subscription key": [KEY],
    "wrong subscription key": [WRONG_KEY],
    "admin token": [ADMIN],
    "wrong admin token": [WRONG_ADMIN],
    "upstream url credential": [UPSTREAM_QUERY],
    "dead upstream url credential": [DEAD_QUERY],
    "set-header value": [SET_HEADER],
    "redis password": [REDIS_PASSWORD, quote(REDIS_PASSWORD, safe="")],
    "otlp header": [OTLP_HEADER],
    "jwt shared secret": [HS_SECRET],
}


@dataclass
class Sinks:
    """What each sink holds as text, by sink name; and what the upstream was sent."""

    texts: dict[str, str] = field(default_factory=dict)
    statuses: list[int] = field(default_factory=list)
    upstream_requests: list[str] = field(default_factory=list)


def _config(upstream: UpstreamServer, redis: RedisServer, dead_port: int) -> dict[str, Any]:
    jwt_policy = {
        "validate-jwt": {
            "algorithms": ["HS256"], "secret": HS_SECRET, "issuer": "https://issuer.test", "audience": "chat",
            "token": [{"header": "Authorization"}, {"query": "auth"}, {"cookie": "sess"}, {"subprotocol": "bearer."}],
        }
    }  # fmt: skip
    limits = [
        {"limit-concurrency": {"key": "{jwt.sub}", "max": 5}},
        {"rate-limit-by-key": {"key": "{jwt.sub}", "limit": 100, "window": 60}},
        {"set-header": {"header": "X-Api-Key", "value": SET_HEADER}},
    ]
    upstream_url = upstream.url("/echo") + f"?api_key={UPSTREAM_QUERY}"
    dead_url = f"ws://127.0.0.1:{dead_port}/x?token={DEAD_QUERY}"
    return {
        "store": {"type": "redis", "url": _redis_url(redis), "timeout": 0.5},
        "telemetry": {"export_logs": True, "message_events": 1.0},
        "products": [{"name": "gold", "apis": ["keyed"]}],
        "subscriptions": [{"id": "sub-alice", "product": "gold", "key_sha256": hash_key(KEY)}],
        "apis": [
            {"name": "jwt", "path": "/jwt", "upstreams": [upstream_url], "policies": [jwt_policy, *limits]},
            {"name": "dead", "path": "/dead", "upstreams": [dead_url], "policies": [jwt_policy]},
            {"name": "keyed", "path": "/keyed", "upstreams": [upstream_url]},
        ],
    }  # fmt: skip


def _redis_url(redis: RedisServer) -> str:
    return f"redis://:{quote(REDIS_PASSWORD, safe='')}@127.0.0.1:{redis.port}/0"


async def _attempt(url: str, **kw: Any) -> int:
    """Open (101: a message, its answer, a close) or be refused; the status either way."""
    try:
        async with await connect(url, **kw) as ws:
            await ws.send("hi")
            await ws.recv()
            return 101
    except Exception as exc:
        response = getattr(exc, "response", None)
        return int(response.status_code) if response is not None else 0


async def _clients(base: str, management: str, sinks: Sinks) -> None:
    auth = [
        [("Authorization", f"Bearer {JWT}")],
        [("Authorization", f"bearer {LOWER_JWT}")],
        [("Authorization", f"BEARER {LOWER_JWT}")],
        [("Authorization", f"Bearer {JWT}"), ("Authorization", f"Bearer {JWT}")],  # repeated, the same
        [("Authorization", f"Bearer {JWT}"), ("Authorization", f"Basic {BASIC}")],  # repeated, another scheme
        [("Authorization", f"Basic {BASIC}")],
        [("Authorization", f"Token {OPAQUE}")],
        [("Authorization", f"Bearer {BAD_JWT}")],
        [("Cookie", f"a=1; sess={COOKIE_JWT}")],
        [("Cookie", f"sess={BAD_JWT}")],
    ]
    for path in ("/jwt", "/dead"):
        for headers in auth:
            sinks.statuses.append(await _attempt(base + path, additional_headers=headers))
        for jwt in (QUERY_JWT, BAD_JWT):
            sinks.statuses.append(await _attempt(f"{base}{path}?room=1&auth={jwt}"))
            sinks.statuses.append(await _attempt(f"{base}{path}?AUTH={jwt}"))
        for jwt in (PROTOCOL_JWT, BAD_JWT):
            sinks.statuses.append(await _attempt(base + path, subprotocols=[f"bearer.{jwt}", "chat"]))
            sinks.statuses.append(await _attempt(base + path, subprotocols=[f"Bearer.{jwt}"]))
    for key in (KEY, WRONG_KEY):
        sinks.statuses.append(await _attempt(f"{base}/keyed?subscription-key={key}"))
        sinks.statuses.append(await _attempt(base + "/keyed", additional_headers={"Ocp-Apim-Subscription-Key": key}))
        sinks.statuses.append(await _attempt(base + "/keyed", additional_headers={"X-Subscription-Key": key}))
    # Connections open while the management API lists them: one per source.
    async with contextlib.AsyncExitStack() as stack:
        opened: list[tuple[str, dict[str, Any]]] = [
            (f"{base}/jwt?auth={QUERY_JWT}", {}),
            (base + "/jwt", {"subprotocols": [f"bearer.{PROTOCOL_JWT}"]}),
            (base + "/jwt", {"additional_headers": {"Cookie": f"sess={COOKIE_JWT}"}}),
            (base + "/jwt", {"additional_headers": {"Authorization": f"Bearer {JWT}"}}),
            (f"{base}/keyed?subscription-key={KEY}", {}),
        ]
        for uri, kw in opened:
            ws = await stack.enter_async_context(await connect(uri, **kw))
            await ws.send("hi")
            await ws.recv()
        async with httpx2.AsyncClient(base_url=management, timeout=10) as http:
            good = {"Authorization": f"Bearer {ADMIN}"}
            for name, path in (("connections", "/connections"), ("config", "/config"), ("apis", "/apis"),
                               ("api", "/apis/jwt"), ("subscriptions", "/subscriptions"),
                               ("refusals", "/refusals")):  # fmt: skip
                response = await http.get(path, headers=good)
                assert response.status_code == 200, (path, response.text)
                sinks.texts[f"management {name}"] = response.text
            for refused in ({"Authorization": f"Bearer {WRONG_ADMIN}"}, {"Authorization": WRONG_ADMIN},
                            {"X-Admin-Token": WRONG_ADMIN}):  # fmt: skip
                response = await http.get("/connections", headers=refused)
                assert response.status_code in (401, 403)
                sinks.texts.setdefault("management refusals", "")
                sinks.texts["management refusals"] += response.text
            # A change refused (422) quoting what it was sent: the upstream URL with its credential.
            api = {"name": "bad", "path": "/bad", "upstreams": [f"ws://u:{BASIC_PASSWORD}@127.0.0.1:1/x"]}
            response = await http.post("/apis", headers=good, json=api)
            assert response.status_code == 422, response.text
            sinks.texts["management 422"] = response.text


async def _store_outage(base: str, management: str, redis: RedisServer, sinks: Sinks) -> None:
    """Redis (limits, management state, bus) killed and started again: every line the outage writes."""
    redis.stop()
    for _ in range(3):
        sinks.statuses.append(await _attempt(base + "/jwt", additional_headers={"Authorization": f"Bearer {JWT}"}))
    async with httpx2.AsyncClient(base_url=management, timeout=10) as http:
        response = await http.get("/connections", headers={"Authorization": f"Bearer {ADMIN}"})
        sinks.texts["management during an outage"] = response.text
        api = {"name": "new", "path": "/new", "upstreams": ["ws://127.0.0.1:1/x"]}
        response = await http.post("/apis", headers={"Authorization": f"Bearer {ADMIN}"}, json=api)
        sinks.texts["management during an outage"] += response.text
    redis.start()
    await asyncio.sleep(1.2)  # the store's retry interval: Redis answers again
    sinks.statuses.append(await _attempt(base + "/jwt", additional_headers={"Authorization": f"Bearer {JWT}"}))


async def _command_line(tmp: Path, port: int, sinks: Sinks) -> None:
    """The management commands and ``connect``, with every credential a user gives them."""
    base, outputs = f"ws://127.0.0.1:{port}", []
    env = {"ASGI_WS_GATEWAY_URL": f"http://127.0.0.1:{port}/_gateway", "ASGI_WS_GATEWAY_ADMIN_TOKEN": ADMIN}
    bad_api = tmp / "bad-api.yaml"
    bad_api.write_text(yaml.safe_dump({"name": "bad", "path": "/bad",
                                       "upstreams": [f"ws://u:{BASIC_PASSWORD}@127.0.0.1:1/x"]}))  # fmt: skip
    commands: list[tuple[list[str], dict[str, str], str | None]] = [
        (["check", str(tmp / "gateway.yaml")], {}, None),
        (["check", "--json", str(tmp / "gateway.yaml")], {}, None),
        (["apis", "list"], env, None),
        (["apis", "show", "jwt"], env, None),
        (["export"], env, None),
        (["connections", "list"], env, None),
        (["subscriptions", "list"], env, None),
        (["apis", "list"], {**env, "ASGI_WS_GATEWAY_ADMIN_TOKEN": WRONG_ADMIN}, None),
        (["apis", "create", str(bad_api)], env, None),
        (["connect", "--linger", "0.2", f"{base}/jwt?auth={QUERY_JWT}"], {}, "hi\n"),
        (["connect", "--linger", "0.2", f"{base}/dead?auth={QUERY_JWT}"], {}, "hi\n"),
        (["connect", "--linger", "0.2", "-s", f"bearer.{PROTOCOL_JWT}", "-s", "chat", f"{base}/jwt"], {}, "hi\n"),
        (["connect", "--json", "--linger", "0.2", "--token", JWT, f"{base}/jwt"], {}, "hi\n"),
        (["connect", "--linger", "0.2", "--token", BAD_JWT, f"{base}/jwt"], {}, "hi\n"),
        (["connect", "--linger", "0.2", "-H", f"Authorization: Basic {BASIC}", f"{base}/jwt"], {}, "hi\n"),
        (["connect", "--linger", "0.2", "--subscription-key", WRONG_KEY, f"{base}/keyed"], {}, "hi\n"),
        (["connect", "--linger", "0.2", "--subscription-key", KEY, f"{base}/keyed"], {}, "hi\n"),
        (["connect", "--linger", "0.2", f"ws://{BASIC_USER}:{BASIC_PASSWORD}@127.0.0.1:{port}/jwt"], {}, "hi\n"),
        (["connect", "--linger", "0.2", f"{base}/nowhere?subscription-key={KEY}"], {}, "hi\n"),
    ]
    results = await asyncio.gather(*(cli(*args, stdin=stdin, **extra) for args, extra, stdin in commands))
    for (args, _, _), (code, out, err) in zip(commands, results, strict=True):
        outputs.append(f"$ {args[0]} (exit {code})\n{out}{err}")
    sinks.texts["command line"] = "\n".join(outputs)


@pytest.fixture(scope="module")
def sinks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sinks]:
    tmp = tmp_path_factory.mktemp("sinks")
    result = Sinks()
    with RedisServer("--requirepass", REDIS_PASSWORD) as redis, UpstreamServer() as upstream, OtlpReceiver() as otlp:
        (tmp / "gateway.yaml").write_text(yaml.safe_dump(_config(upstream, redis, free_port())))
        env = {
            "ASGI_WS_GATEWAY_ADMIN_TOKEN": ADMIN,
            "ASGI_WS_GATEWAY_REDIS": _redis_url(redis),
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint("http/protobuf"),
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_HEADERS": f"x-api-key={OTLP_HEADER}",
            "OTEL_BSP_SCHEDULE_DELAY": "50",
            "OTEL_BLRP_SCHEDULE_DELAY": "50",
            "OTEL_METRIC_EXPORT_INTERVAL": "500",
        }
        command = ["-m", "asgi_ws_gateway", "run", "gateway.yaml", "--log-level", "debug",
                   "--access-log-format", "json", "--management", "/_gateway"]  # fmt: skip
        with ready_server(lambda port: [*command, "--port", str(port)], cwd=tmp, env=env) as server:
            base = f"ws://127.0.0.1:{server.port}"
            management = f"http://127.0.0.1:{server.port}/_gateway"
            asyncio.run(_clients(base, management, result))
            asyncio.run(_command_line(tmp, server.port, result))
            asyncio.run(_store_outage(base, management, redis, result))
            assert server.stop() == 0, server.output()
            result.texts["stdout"] = server.stdout()
            result.texts["stderr"] = server.stderr()
        result.texts["spans"] = "\n".join(repr(span) for span in otlp.spans())
        result.texts["metrics"] = "\n".join(repr(point) for point in otlp.points())
        result.texts["exported logs"] = "\n".join(repr(record) for record in otlp.logs())
        result.upstream_requests = [
            json.dumps({"path": h.path, "headers": h.headers, "subprotocol": h.subprotocol})
            for h in upstream.handshakes
        ]
    yield result


def test_the_scenario_reached_every_sink(sinks: Sinks) -> None:
    """Accepted, refused and failed handshakes; every sink holds something (else the search proves nothing)."""
    assert {101, 401, 502} <= set(sinks.statuses), sinks.statuses
    for name, text in sinks.texts.items():
        assert text.strip(), f"{name} is empty"
    assert '"api":"jwt"' in sinks.texts["stdout"] + sinks.texts["stderr"]
    assert "upstream connect" in sinks.texts["spans"]
    assert "(exit 4)" in sinks.texts["command line"]  # the wrong admin token, refused
    assert "Redis store failed" in sinks.texts["stderr"]  # the outage was seen
    assert sinks.upstream_requests


@pytest.mark.parametrize("secret", list(SECRETS))
@pytest.mark.parametrize(
    "sink",
    ["stdout", "stderr", "spans", "metrics", "exported logs", "management connections", "management config",
     "management apis", "management api", "management subscriptions", "management refusals",
     "management 422", "management during an outage", "command line"],
)  # fmt: skip
def test_no_secret_nor_fragment_reaches_the_sink(sinks: Sinks, sink: str, secret: str) -> None:
    text = sinks.texts[sink]
    for fragment in SECRETS[secret]:
        assert fragment not in text, f"{secret} ({fragment[:12]}...) reached {sink}:\n{text[:20000]}"


def test_the_upstream_gets_no_credential_meant_for_the_gateway(sinks: Sinks) -> None:
    """The subscription key, and the JWT copies in the query and the subprotocol, are taken out; the
    configured set-header reaches it."""
    sent = "\n".join(sinks.upstream_requests)
    for secret in ("subscription key", "wrong subscription key", "query jwt", "subprotocol jwt", "admin token"):
        for fragment in SECRETS[secret]:
            assert fragment not in sent, f"the upstream was sent the {secret}:\n{sent}"
    assert SET_HEADER in sent
