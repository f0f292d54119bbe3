"""The ``jwks fetch`` span and the JWKS lines never carry the JWKS URL's credentials.

The span's ``url.full`` was the configured URL as written: ``http://u:PASSWORD@host/jwks?token=KEY``
reached the trace backend. It is now the URL as every other ``url.full`` the gateway records (no
userinfo, each query value ``REDACTED``); so is the URL in the fetch's warning and in the 503's detail.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from support.clients import connect, expect_status
from support.gateway import ProbedGateway
from support.jwts import JwksServer, signing_key, token
from support.otlp import OtlpReceiver, ReceivedSpan
from support.servers import UvicornServer, free_port
from support.telemetry import export_to
from support.upstream import UpstreamServer

SECRET = "SEKRIT-JWKS-71"


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        yield receiver


def _api(name: str, url: str, upstream: UpstreamServer) -> dict[str, object]:
    policy = {"validate-jwt": {"algorithms": ["ES256"], "issuer": "https://issuer.test", "audience": "chat",
                               "jwks_url": url}}  # fmt: skip
    return {"name": name, "path": f"/ws/{name}", "upstreams": [upstream.url("/echo")], "policies": [policy]}


async def test_jwks_fetch_span_and_lines_show_no_url_credential(
    otlp: OtlpReceiver, upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``url.full`` of a fetched and of an unreachable JWKS URL: no password, no query value; nor the
    fetch-failed warning."""
    export_to(monkeypatch, otlp, "grpc")
    key = signing_key("ES256")
    with JwksServer(key) as jwks:
        port = jwks.url.split(":")[2].split("/")[0]
        fetched = f"http://u:{SECRET}@127.0.0.1:{port}/jwks?token={SECRET}&kid=1"
        dead = f"http://u:{SECRET}@127.0.0.1:{free_port()}/jwks?api_key={SECRET}"
        config = {"apis": [_api("up", fetched, upstream), _api("down", dead, upstream)]}
        with caplog.at_level(logging.WARNING), UvicornServer(ProbedGateway(config), proxy_headers=False) as server:
            headers = {"Authorization": f"Bearer {token(key)}"}
            async with await connect(server.url("/ws/up"), additional_headers=headers) as ws:
                await ws.send("hi")
                assert await ws.recv() == "hi"
            status, _, body = await expect_status(server.url("/ws/down"), additional_headers=headers)
            spans = [await _span(otlp, "jwks fetch", url) for url in (f"{port}/jwks", "/jwks?api_key")]
    assert status == 503
    assert spans[0].attributes["url.full"] == f"http://127.0.0.1:{port}/jwks?token=REDACTED&kid=REDACTED"
    for span in spans:
        assert SECRET not in repr(span), span
    lines = [r.getMessage() for r in caplog.records if "JWKS" in r.getMessage()]
    assert lines, "no fetch-failed line: the test would prove nothing"
    assert not [line for line in lines if SECRET in line]
    assert SECRET.encode() not in body


class _Redirecting(BaseHTTPRequestHandler):
    """A JWKS URL that answers with a redirect to a presigned URL (its signature a credential)."""

    def do_GET(self) -> None:
        self.send_response(302)
        self.send_header("Location", f"https://bucket.example/keys.json?X-Amz-Signature={SECRET}&X-Amz-Expires=60")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


async def test_a_redirects_location_reaches_the_fetch_span_redacted(
    otlp: OtlpReceiver, upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fetch fails (redirects are not followed); the exception recorded on its span names the
    redirect's target without its query values."""
    export_to(monkeypatch, otlp, "grpc")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Redirecting)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        config = {"apis": [_api("redirected", f"http://127.0.0.1:{httpd.server_address[1]}/jwks", upstream)]}
        with UvicornServer(ProbedGateway(config), proxy_headers=False) as server:
            headers = {"Authorization": f"Bearer {token(signing_key('ES256'))}"}
            status, _, _ = await expect_status(server.url("/ws/redirected"), additional_headers=headers)
            span = await _span(otlp, "jwks fetch", "/jwks")
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert status == 503
    assert "X-Amz-Signature=REDACTED" in repr(span), span
    assert SECRET not in repr(span), span


async def _span(receiver: OtlpReceiver, name: str, url_part: str) -> ReceivedSpan:
    def wanted(span: ReceivedSpan) -> bool:
        return span.name == name and url_part in str(span.attributes.get("url.full"))

    return await asyncio.to_thread(receiver.wait_for_span, wanted)
