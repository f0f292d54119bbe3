"""Attacks on what the gateway shows: configured credentials and client-forged log lines.

Under a real ``asgi-ws-gateway run --management``: a configured URL's password and an inline HMAC
secret never reach a log line, a span label or the management API's output, and a client cannot
forge or hide access-log lines with control characters in its path.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from asgi_ws_gateway import ConfigError, WebSocketGateway
from asgi_ws_gateway.config.apis import UpstreamConfig
from asgi_ws_gateway.management.disclosure import public_document
from asgi_ws_gateway.policies.build import load_config
from asgi_ws_gateway.redact import redact_text, redact_url_credentials
from asgi_ws_gateway.standalone import not_found
from asgi_ws_gateway.telemetry import names as n
from support.clients import connect, expect_status
from support.jwts import signing_key, token
from support.management import api, managed_gateway
from support.processes import ServerProcess, ready_server
from support.servers import UvicornFactory, free_port
from support.upstream import UpstreamServer

ADMIN = "a" * 32
HS_SECRET = "hs-secret-value-0123456789abcdef-0123"
HEADERS = {"Authorization": f"Bearer {ADMIN}"}


# --- configured URLs carry no credentials -------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "ws://alice:hunter2pw@chat.internal:9000/x",
        "wss://alice:hunter2pw@chat.internal/x",
        "ws://alice%3Ahunter2pw@chat.internal/x",  # the password percent-encoded into the user
        "ws://hunter2pw@chat.internal/x",  # a token as the user name
        "ws://alice:hunter2pw@[::1]:9000/rooms/{room}",
        "ws://alice:hunter2pw@{region}.internal/x",
    ],
)
def test_userinfo_in_an_upstream_url_fails_start_up_without_echoing_it(url: str) -> None:
    """A URL with userinfo is a start-up error by field path, and the error never repeats the password."""
    document = {"apis": [{"name": "a", "path": "/a/{room}", "upstreams": [{"url": url}]}]}
    with pytest.raises(ConfigError) as caught:
        load_config(document)
    message = str(caught.value)
    assert "apis[0].upstreams[0]: must not carry credentials" in message
    assert "hunter2pw" not in message


@pytest.mark.parametrize("base_url", ["ws://alice:hunter2pw@chat-2:9000", "wss://hunter2pw@chat-{jwt.region}"])
def test_userinfo_in_a_backend_service_url_fails_start_up(base_url: str) -> None:
    """``set-backend-service`` with userinfo: a start-up error by field path (not a 400 for every client)."""
    policy = {"set-backend-service": {"base_url": base_url}}
    with pytest.raises(ConfigError) as caught:
        load_config({"apis": [{"name": "a", "path": "/a", "upstreams": ["ws://h/"], "policies": [policy]}]})
    assert "apis[0].policies[0].set-backend-service.base_url: must not carry credentials" in str(caught.value)
    assert "hunter2pw" not in str(caught.value)


def test_a_non_ws_url_error_does_not_echo_its_password() -> None:
    """``http://user:pw@host``: the scheme is wrong, and the message names the URL without the password."""
    with pytest.raises(ConfigError) as caught:
        load_config({"apis": [{"name": "a", "path": "/a", "upstreams": ["http://u:hunter2pw@h/x"]}]})
    assert "'http://h/x' is not a ws://" in str(caught.value)
    assert "hunter2pw" not in str(caught.value)


def test_a_redis_url_problem_does_not_echo_its_password() -> None:
    """A wrongly typed store URL is echoed with its password redacted."""
    with pytest.raises(ConfigError) as caught:
        load_config({"store": {"type": "redis", "url": ["redis://:hunter2pw@h:6379/0"]}, "apis": []})
    assert "store.url" in str(caught.value)
    assert "hunter2pw" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "label"),
    [
        ("ws://chat.internal:9000/x?key=s3cret#frag", "ws://chat.internal:9000/x"),
        ("wss://chat.internal/x#s3cret", "wss://chat.internal/x"),
        ("ws://chat.internal?s3cret", "ws://chat.internal"),
        ("ws://[::1]:9000/rooms/{room}?k=s3cret", "ws://[::1]:9000/rooms/{room}"),
    ],
)
def test_labels_carry_no_query_or_fragment(url: str, label: str) -> None:
    """The label (logs, spans, metrics, error details) is scheme, host, port and path only."""
    assert UpstreamConfig(url=url).label == label


def test_public_document_redacts_secrets_and_url_passwords_only() -> None:
    """Secrets at any depth and URL passwords become REDACTED; everything else, and the input, is unchanged."""
    document: dict[str, Any] = {
        "store": {"type": "redis", "url": "redis://:hunter2pw@h:6379/0"},
        "apis": [{"policies": [{"validate-jwt": {"secret": "x" * 40, "secret_env": None, "issuer": "https://i/"}}]}],
        "note": "mail me at a@b.c",
    }
    public = public_document(document)
    assert public["store"]["url"] == "redis://:REDACTED@h:6379/0"
    assert public["apis"][0]["policies"][0]["validate-jwt"] == {
        "secret": "REDACTED", "secret_env": None, "issuer": "https://i/"
    }  # fmt: skip
    assert public["note"] == "mail me at a@b.c"
    assert document["store"]["url"] == "redis://:hunter2pw@h:6379/0"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0?password=hunter2pw", "redis://127.0.0.1:6379/0?password=REDACTED"),
        ("redis://h/0?username=hunter2pw&password=x&db=1", "redis://h/0?username=REDACTED&password=REDACTED&db=1"),
        ("redis://:p%40hunter2pw@host", "redis://:REDACTED@host"),
        ("redis://:p@hunter2pw@h", "redis://:REDACTED@h"),
        ('redis://:hunter2pw"x@h', "redis://:REDACTED@h"),
        ("redis://:hunter2 pw'x@h/0", "redis://:REDACTED@h/0"),
        ("redis://alice:hunter2pw@h", "redis://REDACTED:REDACTED@h"),
        ("redis+sentinel://:hunter2pw@h1:1,h2:2/svc", "redis+sentinel://:REDACTED@h1:1,h2:2/svc"),
        # A Sentinel client reads "@hunter2pw" as the host, anyone else as the password's end: hide both.
        ("redis+sentinel://h/0?password=@hunter2pw", "redis+sentinel://REDACTED"),
        ("redis+sentinel://:x@h/0#token=@hunter2pw", "redis+sentinel://REDACTED"),
        ("https://idp/jwks?access_token=hunter2pw&v=2", "https://idp/jwks?access_token=REDACTED&v=2"),
        (
            "ws://h/x?subscription-key=hunter2pw#api_key=hunter2pw",
            "ws://h/x?subscription-key=REDACTED#api_key=REDACTED",
        ),
    ],
)
def test_public_document_redacts_every_credential_of_a_url(url: str, shown: str) -> None:
    """Userinfo (raw or encoded '@', quotes, spaces) and credential query parameters, in any URL field."""
    public = public_document({"store": {"url": url}, "apis": [{"upstreams": [{"url": url}]}]})
    assert public == {"store": {"url": shown}, "apis": [{"upstreams": [{"url": shown}]}]}


_SECRET = st.text(st.characters(codec="utf-8", exclude_characters="/?#&\r\n\t"), min_size=8).filter(
    lambda s: s.strip() == s and "REDACTED" not in s
)
_HOST = st.from_regex(r"[a-z][a-z0-9.-]{0,20}(:[0-9]{1,5})?", fullmatch=True)
_PATH = st.from_regex(r"(/[a-z0-9._~-]{0,10}){0,3}", fullmatch=True)


@given(
    st.sampled_from(["redis", "rediss", "ws", "https", "redis+sentinel"]),
    st.sampled_from(["", "user", "user:", ":"]),
    _SECRET,
    _HOST,
    _PATH,
    st.sampled_from(["", "password=", "username=", "access_token=", "a=1&password=", "PassWord="]),
)
def test_a_url_never_shows_its_password(
    scheme: str, userinfo: str, secret: str, host: str, path: str, query: str
) -> None:
    """Any URL with a secret as its userinfo's password (or user) or a credential parameter's value hides it."""
    in_userinfo = f"{userinfo}{secret}@" if userinfo or not query else ""
    url = f"{scheme}://{in_userinfo}{host}{path}" + (f"?{query}{secret}" if query else "")
    shown = redact_url_credentials(url)
    assert secret not in shown, (url, shown)
    if not (scheme == "redis+sentinel" and query and "@" in secret):
        # Else the host is not "host": a Sentinel URL's userinfo runs to its last "@" (parse_redis_url),
        # so "redis+sentinel://a?password=x@y" is host "y" to a Sentinel client and a password's end
        # to others: nothing after the scheme is shown.
        assert host in shown


# --- under run, with the management API ---------------------------------------------------------


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, upstream_server: UpstreamServer) -> Iterator[ServerProcess]:
    jwt = {"validate-jwt": {"algorithms": ["HS256"], "secret": HS_SECRET}}
    config: dict[str, Any] = {
        "apis": [
            {"name": "chat", "path": "/chat", "upstreams": [upstream_server.url("/echo") + "?key=qs3cretq"],
             "policies": [jwt]},
            {"name": "rooms", "path": "/rooms/{room}", "upstreams": [upstream_server.url("/echo")]},
        ]
    }  # fmt: skip
    path = tmp_path_factory.mktemp("disclosure") / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    args = ["-m", "asgi_ws_gateway", "run", str(path), "--management", "/_gateway", "--port"]
    with ready_server(lambda port: [*args, str(port)], env={"ASGI_WS_GATEWAY_ADMIN_TOKEN": ADMIN}) as server:
        yield server


async def test_management_output_hides_the_inline_secret(gateway: ServerProcess) -> None:
    """GET /apis, GET /apis/chat and GET /config show REDACTED, never the HMAC secret."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.port}/_gateway", headers=HEADERS) as http:
        for path in ("/apis", "/apis/chat", "/config", "/config?format=yaml"):
            response = await http.get(path)
            assert response.status_code == 200, path
            assert HS_SECRET not in response.text, path
            assert "REDACTED" in response.text, path
    assert HS_SECRET not in gateway.output()


async def test_management_output_hides_credentials_of_every_configured_url(
    upstream_server: UpstreamServer, tmp_path: Any
) -> None:
    """GET /config and GET /apis show no password of an upstream's query or of a JWKS URL's userinfo or query."""
    jwks = "http://idp:p%40hunter2pw@127.0.0.1:1/jwks?access_token=hunter2pw-q&v=1"
    jwt = {"validate-jwt": {"algorithms": ["RS256"], "jwks_url": jwks}}
    upstream = upstream_server.url("/echo") + "?password=hunter2pw-u&room=1"
    config = {"apis": [api("chat", "/chat", upstream_server, upstreams=[upstream], policies=[jwt])]}
    with managed_gateway(config, tmp_path / "state.json") as running:
        async with running.http() as http:
            for path in ("config", "config?format=yaml", "apis", "apis/chat"):
                response = await http.get(path)
                assert response.status_code == 200, path
                assert "hunter2pw" not in response.text, (path, response.text)
                assert "p%40" not in response.text, path
                assert "password=REDACTED&room=1" in response.text, path


async def test_a_redacted_document_sent_back_installs_no_known_secret(gateway: ServerProcess) -> None:
    """PUT of the document GET returned: 422 (REDACTED is no valid HS256 secret); the API still needs the real one."""
    base = f"http://127.0.0.1:{gateway.port}/_gateway"
    async with httpx.AsyncClient(base_url=base, headers=HEADERS) as http:
        got = await http.get("/apis/chat")
        response = await http.put("/apis/chat", json=got.json(), headers={"If-Match": got.headers["etag"]})
        assert response.status_code == 422
        assert "secret" in response.text and HS_SECRET not in response.text
        assert (await http.get("/apis/chat")).headers["etag"] == got.headers["etag"]


@pytest.mark.parametrize("url", ["ws://u:hunter2pw@127.0.0.1:1/x", "wss://hunter2pw@127.0.0.1/x"])
async def test_management_refuses_userinfo_without_echoing_it(gateway: ServerProcess, url: str) -> None:
    """POST /apis with a password in an upstream URL: 422 naming the field; the password is nowhere."""
    api = {"name": "leak", "path": "/leak", "upstreams": [url]}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.port}/_gateway", headers=HEADERS) as http:
        response = await http.post("/apis", json=api)
        assert response.status_code == 422
        assert "upstreams[0]: must not carry credentials" in response.text
        assert "hunter2pw" not in response.text
        assert (await http.get("/apis/leak")).status_code == 404
    assert "hunter2pw" not in gateway.output()


async def test_access_log_shows_the_backend_without_its_query(gateway: ServerProcess) -> None:
    """The access line's backend is the label: the configured URL's query (a key) is not in any output."""
    status, _, _ = await expect_status(f"ws://127.0.0.1:{gateway.port}/chat")
    assert status == 401
    async with await connect(f"ws://127.0.0.1:{gateway.port}/rooms/r1") as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"
    assert "qs3cretq" not in gateway.output()


# --- a client cannot forge access-log lines ------------------------------------------------------

FORGED = [
    ("/rooms/x%0D%0AINFO:%20forged-1", "x\\r\\nINFO: forged-1", 400),
    ("/rooms/x%0AINFO:%20forged-2", "x\\nINFO: forged-2", 400),
    ("/rooms/x%E2%80%A8INFO:%20forged-3", "x\\u2028INFO: forged-3", 101),  # LINE SEPARATOR
    ("/rooms/%E2%80%AEforged-4", "\\u202eforged-4", 101),  # RIGHT-TO-LEFT OVERRIDE hides text
    ("/rooms/x%1B%5B2Kforged-5", "x\\x1b[2Kforged-5", 400),  # a terminal escape (erase line)
    ("/rooms/x%5Cnforged-6", "x\\\\nforged-6", 400),  # a literal backslash-n cannot pass for an escape
    ("/rooms/x%22%20101%20forged-7", "x\\x22 101 forged-7", 101),  # a quote would end the request field
]


@pytest.mark.parametrize(("path", "logged", "status"), FORGED, ids=[f[0] for f in FORGED])
async def test_control_characters_in_the_path_cannot_forge_access_lines(
    gateway: ServerProcess, path: str, logged: str, status: int
) -> None:
    """The access line writes the path's control and bidi characters as escapes, on one line."""
    url = f"ws://127.0.0.1:{gateway.port}{path}"
    if status == 101:
        async with await connect(url) as ws:
            await ws.send("hi")
            await ws.recv()
    else:
        assert (await expect_status(url))[0] == status
    expected = f'"WebSocket /rooms/{logged}" {status} rooms'
    for _ in range(100):  # an accepted connection's line is written once the gateway saw the close
        if expected in gateway.stdout():
            break
        await asyncio.sleep(0.05)
    lines = gateway.stdout().splitlines()
    assert any(line.startswith("INFO:     127.0.0.1:") and expected in line for line in lines), lines[-5:]
    assert not any("forged" in line and not line.startswith("INFO:     127.0.0.1:") for line in lines)
    assert not any(ch in gateway.stdout() for ch in "\u2028\u202e\x1b")


# --- a configured URL's password in a denial's detail ---------------------------------------------


@pytest.mark.parametrize("expose", [False, True])
async def test_a_jwks_password_reaches_neither_span_nor_body_nor_log(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, caplog: pytest.LogCaptureFixture, expose: bool
) -> None:
    """An unreachable ``jwks_url`` with userinfo: 503; its password is in no span, body (even exposed) or log."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    port = free_port()
    jwks = f"http://idp:hunter2pw@127.0.0.1:{port}/jwks"
    jwt_policy = {"validate-jwt": {"algorithms": ["RS256"], "jwks_url": jwks, "jwks_timeout": 1}}
    api = {"name": "a", "path": "/ws/a", "upstreams": [upstream.url("/echo")], "policies": [jwt_policy]}
    config = {"apis": [api], "expose_error_details": expose}
    server = uvicorn_server(WebSocketGateway(not_found, config=config, tracer_provider=provider))
    headers = {"Authorization": f"Bearer {token(signing_key('RS256', kid='k1'))}"}
    try:
        status, _, body = await expect_status(server.url("/ws/a"), additional_headers=headers)
    finally:
        provider.shutdown()
    assert status == 503
    details = [str(s.attributes.get(n.DENIAL_DETAIL)) for s in exporter.get_finished_spans() if s.attributes]
    assert any("idp:REDACTED@" in d for d in details), details
    assert (b"idp:REDACTED@" in body) is expose
    assert "hunter2pw" not in "".join(details) + body.decode() + caplog.text


# --- userinfo a client sends in the request target -------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "redis://:hunter2pw@h:6379/0",
        "ws://alice:hunter2pw@h/x",
        "http://hunter2pw@h/x",  # a token as the user name
        "http%3A//alice%3Ahunter2pw%40h%3A80/x",  # as uvicorn quotes an absolute-form target
        "//alice%3ahunter2pw%40evil/x",
        "//hunter2pw@evil/x",
    ],
)
def test_userinfo_is_redacted_in_any_text(text: str) -> None:
    """A URL's password (or lone user name), plain or percent-encoded, never survives redaction."""
    assert "hunter2pw" not in redact_text(text)
    assert "REDACTED" in redact_text(text)


@pytest.mark.parametrize("text", ["ws://h/a@b", "mail a@b.c //x/y", "ws://h:80/x"])
def test_text_without_userinfo_is_kept(text: str) -> None:
    assert redact_text(text) == text


TARGETS = [
    "http://alice:hunter2pw@127.0.0.1/rooms/r1",
    "ws://alice:hunter2pw@127.0.0.1/nowhere",
    "//alice:hunter2pw@evil/rooms/r1",
    "http://hunter2pw@127.0.0.1/nowhere",
]


@pytest.mark.parametrize("target", TARGETS)
async def test_userinfo_in_the_request_target_reaches_no_log(gateway: ServerProcess, target: str) -> None:
    """An absolute-form target with userinfo (accepted, 404 or refused): the password is in no output line."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        writer.write(
            f"GET {target} HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        async with asyncio.timeout(10):
            status_line = await reader.readline()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    assert status_line.split()[1] in (b"101", b"400", b"404")  # 400: an absolute-form target tidied to an API's path
    await expect_status(f"ws://127.0.0.1:{gateway.port}/marker-{len(target)}")
    for _ in range(100):  # the marker's line is written after the attempt's
        if f"/marker-{len(target)}" in gateway.output():
            break
        await asyncio.sleep(0.05)
    assert "hunter2pw" not in gateway.output()


# --- a token in the path itself --------------------------------------------------------------------


async def test_a_token_in_the_path_reaches_no_span_or_exported_log(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer
) -> None:
    """``/rooms/<JWT>``, accepted and refused: no span attribute or exported access record carries the token."""
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider(shutdown_on_exit=False)
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    logs = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
    logger_provider = LoggerProvider(shutdown_on_exit=False)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    rooms = {"name": "rooms", "path": "/rooms/{room}", "upstreams": [upstream.url("/echo")]}
    denied = {**rooms, "name": "denied", "path": "/denied/{room}", "policies": [{"ip-filter": {"deny": ["0.0.0.0/0"]}}]}
    config = {"apis": [rooms, denied], "telemetry": {"export_logs": True}}
    gateway = WebSocketGateway(
        not_found, config=config, tracer_provider=tracer_provider, logger_provider=logger_provider
    )
    server = uvicorn_server(gateway)
    secret = token(sub="alice")
    try:
        async with await connect(server.url(f"/rooms/{secret}")) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
        assert (await expect_status(server.url(f"/denied/{secret}")))[0] == 403
        for _ in range(100):  # the accepted connection's record is written once the gateway saw the close
            if len(logs.get_finished_logs()) >= 2:
                break
            await asyncio.sleep(0.05)
    finally:
        tracer_provider.shutdown()
        logger_provider.shutdown()
    exported = [str(s.attributes) for s in spans.get_finished_spans()]
    records = [f"{r.log_record.body!r} {r.log_record.attributes}" for r in logs.get_finished_logs()]
    assert len(records) >= 2 and any("/rooms/REDACTED" in r for r in records), records
    assert any("/denied/REDACTED" in s for s in exported), exported
    assert not any(secret.split(".")[2] in text for text in exported + records)


UPSTREAM_KEY = "upstream-key-0123456789"
CLIENT_KEYS = ["client-key-a-0123456789", "client-key-b-0123456789"]


@pytest.mark.parametrize("header", ["X-Internal-Auth", "Authorization", "X-Api-Key", "X-Service-Token"])
def test_a_credential_header_value_is_redacted_and_a_plain_one_shown(header: str) -> None:
    document = {"policies": [{"set-header": {"header": header, "value": UPSTREAM_KEY}},
                             {"check-header": {"header": header, "values": CLIENT_KEYS}},
                             {"set-header": {"header": "X-Tenant", "value": "acme"}}]}  # fmt: skip
    shown = public_document(document)["policies"]
    assert shown[0]["set-header"] == {"header": header, "value": "REDACTED"}
    assert shown[1]["check-header"] == {"header": header, "values": "REDACTED"}
    assert shown[2]["set-header"]["value"] == "acme"


async def test_header_secrets_are_not_read_back_and_a_round_trip_cannot_replace_them(
    tmp_path: Any, upstream_server: UpstreamServer
) -> None:
    """An admin-token holder read a set-header's upstream credential and check-header's accepted keys in
    ``GET /apis``; sending the document back as read now names each redacted field (422) instead of
    setting the header to "REDACTED"."""
    policies = [{"set-header": {"header": "X-Internal-Auth", "value": UPSTREAM_KEY}},
                {"check-header": {"header": "X-Api-Key", "values": CLIENT_KEYS}}]  # fmt: skip
    config = {"apis": [api("chat", "/chat", upstream_server, policies=policies)]}
    with managed_gateway(config, tmp_path / "state.json") as running:
        async with running.http() as http:
            for path in ("config", "apis", "apis/chat"):
                text = (await http.get(path)).text
                assert UPSTREAM_KEY not in text and CLIENT_KEYS[0] not in text, path
            got = await http.get("apis/chat")
            sent_back = await http.put("apis/chat", json=got.json(), headers={"If-Match": got.headers["etag"]})
            assert sent_back.status_code == 422
            assert sent_back.json()["problems"] == [
                f"policies[{i}].{name}.{key}: REDACTED is what the API shows in place of this secret: send the "
                "value itself"
                for i, name, key in ((0, "set-header", "value"), (1, "check-header", "values"))
            ]
            document = got.json()
            document["policies"][0]["set-header"]["value"] = "new-upstream-key-0123"
            document["policies"][1]["check-header"]["values"] = ["new-client-key-0123"]
            replaced = await http.put("apis/chat", json=document, headers={"If-Match": got.headers["etag"]})
            assert replaced.status_code == 200, replaced.text


async def test_a_url_credential_sent_back_as_redacted_is_a_422(tmp_path: Any, upstream_server: UpstreamServer) -> None:
    """GET shows ``?access_token=REDACTED``; PUT it back and the upstream would have received "REDACTED"."""
    upstream = upstream_server.url("/echo") + "?access_token=real-upstream-token-0123&room=1"
    config = {"apis": [api("chat", "/chat", upstream_server, upstreams=[upstream])]}
    with managed_gateway(config, tmp_path / "state.json") as running:
        async with running.http() as http:
            got = await http.get("apis/chat")
            assert "real-upstream-token" not in got.text and "access_token=REDACTED&room=1" in got.text
            sent_back = await http.put("apis/chat", json=got.json(), headers={"If-Match": got.headers["etag"]})
            assert sent_back.status_code == 422
            assert [p.split(":")[0] for p in sent_back.json()["problems"]] == ["upstreams[0].url"]
