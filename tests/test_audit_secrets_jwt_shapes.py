"""A JWT whose JSON has a blank after its ``{`` is redacted wherever a compact one is.

``{ "alg": "HS256" }`` or a pretty-printed ``{\\n  "alg": ...}`` header is valid JSON, and
``validate-jwt`` admits the token; but its first segment starts ``eyA``, ``ewo``, ``ew0`` or ``ewk``,
and the redaction looked for ``eyJ`` only: it saw ``<payload>.<signature>``, two segments, and left
the whole token in clear in a path (the access log, uvicorn's lines, spans) and in free text (a close
reason, a User-Agent). Unit checks of every redaction entry point, a hang guard, and a real ``run``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from pathlib import Path

import pytest
import yaml

from asgi_ws_gateway import redact
from asgi_ws_gateway.log_redaction import RedactingFilter
from support.clients import connect
from support.jwts import HS_SECRET
from support.processes import ready_server
from support.upstream import UpstreamServer

HEADERS = {
    "space": b'{ "alg": "HS256", "typ": "JWT" }',
    "pretty": b'{\n  "alg": "HS256",\n  "typ": "JWT"\n}',
    "crlf": b'{\r\n"alg":"HS256"}',
    "tab": b'{\t"alg":"HS256"}',
}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _token(header: bytes, *, pretty_payload: bool = False, sub: str = "alice") -> str:
    claims = {"iss": "https://issuer.test", "aud": "chat", "sub": sub, "exp": int(time.time()) + 3600}
    payload = json.dumps(claims, indent=2 if pretty_payload else None).encode()
    signing_input = f"{_b64(header)}.{_b64(payload)}"
    signature = hmac.new(HS_SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def _fragments(jwt: str) -> list[str]:
    _, payload, signature = jwt.split(".")
    return [payload, signature]


def _assert_clean(text: str, jwt: str) -> None:
    for fragment in _fragments(jwt):
        assert fragment not in text, f"a piece of the token is in: {text}"


@pytest.mark.parametrize("pretty_payload", [False, True])
@pytest.mark.parametrize("header", list(HEADERS))
def test_every_redaction_entry_point_hides_the_token(header: str, pretty_payload: bool) -> None:
    jwt = _token(HEADERS[header], pretty_payload=pretty_payload)
    _assert_clean(redact.redact_text(f"GET /ws/{jwt} HTTP/1.1"), jwt)
    _assert_clean(redact.redact_free_text(f"closing: {jwt} (bye)"), jwt)
    _assert_clean(redact.redact_path(f"/rooms/{jwt}"), jwt)
    _assert_clean(redact.redact_encoded_path(f"/rooms/{jwt}"), jwt)
    _assert_clean(redact.redact_url(f"ws://backend:9000/rooms/{jwt}"), jwt)
    record = logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1, "%s - %s", ("127.0.0.1", jwt), None)
    RedactingFilter().filter(record)
    _assert_clean(record.getMessage(), jwt)


@pytest.mark.parametrize(
    "text",
    ["eyes.eyewear.com", "key.value.x", "www.ewok.com/a.ew.b", "/rooms/design.v2.final", "they.eyAx.y"],
)
def test_text_that_is_no_token_is_kept(text: str) -> None:
    assert redact.redact_free_text(text) == text


@pytest.mark.timeout(20)
@pytest.mark.parametrize("piece", ["ewoa.", "ewo" + "a" * 50 + ".", "eyA" * 40 + ".ew", ".ewk-", "ewoxx.eyJ"])
def test_a_crafted_text_is_read_in_linear_time(piece: str) -> None:
    """400 KB of the shapes the pattern turns on, under a hang guard: a pattern that read from every
    segment start to the end again would take hours."""
    text = piece * (400_000 // len(piece))
    assert len(redact.redact_free_text(text)) > 0


async def test_under_run_no_sink_shows_the_token(tmp_path: Path, upstream_server: UpstreamServer) -> None:
    """The token admitted from the query, and sent in a path: the access log and uvicorn's lines hide it."""
    jwt = _token(HEADERS["pretty"])
    policy = {"validate-jwt": {"algorithms": ["HS256"], "secret": HS_SECRET, "issuer": "https://issuer.test",
                               "audience": "chat", "token": [{"query": "auth"}]}}  # fmt: skip
    config = {
        "apis": [
            {"name": "rooms", "path": "/rooms/{room}", "upstreams": [upstream_server.url("/echo")]},
            {"name": "jwt", "path": "/jwt", "upstreams": [upstream_server.url("/echo")], "policies": [policy]},
        ]
    }
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(config))
    command = ["-m", "asgi_ws_gateway", "run", "gateway.yaml", "--log-level", "debug"]
    with ready_server(lambda port: [*command, "--port", str(port)], cwd=tmp_path) as server:
        base = f"ws://127.0.0.1:{server.port}"
        async with await connect(f"{base}/jwt?auth={jwt}") as ws:  # admitted: the token is valid
            await ws.send("hi")
            assert await ws.recv() == "hi"
        async with await connect(f"{base}/rooms/{jwt}") as ws:
            await ws.send("hi")
            await ws.recv()
        with pytest.raises(Exception, match="404"):
            await connect(f"{base}/nowhere/{jwt}")
        assert server.stop() == 0
        output = server.output()
    assert '"WebSocket /rooms/REDACTED" 101 rooms' in output
    _assert_clean(output, jwt)
