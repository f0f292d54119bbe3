"""The URL connected decides TLS: a ``set-backend-service`` that changes the scheme, on every connector.

The TLS context was the configured upstream's, chosen before the policies ran: a ``ws://`` upstream
that ``set-backend-service`` sent to ``wss://`` (docs/policies.md's own example shape) sent its
handshake, the global ``set-header`` credential in it, in clear text on the splice and the frame
relay (101 from a plain-text server), and was a 500 with a traceback on the relay; a ``wss://``
upstream sent to ``ws://`` was a 502 or a 500. Now ``wss://`` is TLS, verified (the system's trust
store for a host a ``set-backend-service`` picked; the upstream's ``ca_bundle`` follows it; its
``verify_tls: false`` does not), and ``ws://`` is not.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.config.apis import UpstreamConfig
from asgi_ws_gateway.standalone import not_found
from asgi_ws_gateway.upstream.tls import PLAIN, TlsMismatch, TlsSettings, UpstreamTls, checked, connection_tls
from support import tls as test_tls
from support.clients import connect, expect_status
from support.configs import api_entry
from support.gateway import PASSTHROUGH
from support.hostile import CONNECTORS, Handler, hostile_upstream  # noqa: F401 - the fixture hostile
from support.servers import UvicornFactory
from support.upstream import UpstreamServer

SECRET = "operator-internal-key-0123456789"
AUTH = {"set-header": {"header": "X-Internal-Auth", "value": SECRET}}


def _gateway(
    uvicorn_server: UvicornFactory, connector: str, upstream: str | dict[str, Any], base_url: str, **options: Any
) -> str:
    """The URL of API ``/h``: ``upstream`` sent to ``base_url``, under the global credential, through ``connector``."""
    policies = [{"set-backend-service": {"base_url": base_url}}]
    entry = api_entry(name="h", path="/h", policies=policies, connect_timeout=5, **CONNECTORS[connector])
    entry["upstreams"] = [upstream]
    gateway = WebSocketGateway(not_found, config={"apis": [entry], "policies": [AUTH]}, **options)
    return uvicorn_server(gateway, ws=PASSTHROUGH).url("/h")


async def _echo(url: str) -> None:
    async with await connect(url) as ws:
        await ws.send("ping")
        assert await ws.recv() == "ping"


@pytest.fixture
def ca(tmp_path: Path) -> test_tls.TestCA:
    return test_tls.make_ca(tmp_path)


@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_a_ws_upstream_sent_to_wss_never_speaks_clear_text(
    hostile: Callable[[Handler], Awaitable[int]],
    uvicorn_server: UvicornFactory,
    upstream: UpstreamServer,
    connector: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A plain-text server at the wss:// base URL gets a TLS ClientHello, never the handshake: 502, no traceback."""
    received: list[bytes] = []

    async def plain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.read(65536))
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")  # what a plain-text server would answer
        writer.close()

    port = await hostile(plain)
    url = _gateway(uvicorn_server, connector, upstream.url("/echo"), f"wss://127.0.0.1:{port}")
    status, _, _ = await expect_status(url)
    assert status == 502
    assert received and received[0][:1] == b"\x16"  # a TLS handshake record
    assert SECRET.encode() not in b"".join(received) and b"GET " not in b"".join(received)
    assert not upstream.handshakes
    assert not [r for r in caplog.records if r.exc_info], "no traceback"


@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_a_wss_base_url_is_verified_against_the_system_store(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, ca: test_tls.TestCA, connector: str
) -> None:
    """A ws:// upstream sent to a wss:// server the system does not trust: 502, nothing sent."""
    with UpstreamServer(ssl=ca.server_context()) as tls_upstream:
        url = _gateway(uvicorn_server, connector, upstream.url("/echo"), tls_upstream.url("", scheme="wss"))
        status, _, _ = await expect_status(url)
    assert status == 502
    assert not tls_upstream.handshakes and not upstream.handshakes


@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_a_wss_base_url_the_system_store_trusts_gets_the_handshake_over_tls(
    uvicorn_server: UvicornFactory,
    upstream: UpstreamServer,
    ca: test_tls.TestCA,
    connector: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same, with the test CA in the system store (``SSL_CERT_FILE``): 101, the credential over TLS."""
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.ca_file))  # read when the context is made: at the first switch
    with UpstreamServer(ssl=ca.server_context()) as tls_upstream:
        await _echo(_gateway(uvicorn_server, connector, upstream.url("/echo"), tls_upstream.url("", scheme="wss")))
        (handshake,) = tls_upstream.handshakes
    assert handshake.header("X-Internal-Auth") == SECRET and handshake.path == "/echo"
    assert not upstream.handshakes


@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_a_wss_upstream_sent_to_ws_connects_without_tls(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, ca: test_tls.TestCA, connector: str
) -> None:
    """The file's own ws:// base URL for a wss:// upstream is what it says (it was a 502, or a 500)."""
    with UpstreamServer(ssl=ca.server_context()) as tls_upstream:
        configured = {"url": tls_upstream.url("/echo", scheme="wss"), "ca_bundle": str(ca.ca_file)}
        await _echo(_gateway(uvicorn_server, connector, configured, upstream.url("")))
        assert not tls_upstream.handshakes
    (handshake,) = upstream.handshakes
    assert handshake.path == "/echo"


@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_verify_tls_false_holds_for_the_upstreams_own_host_only(
    uvicorn_server: UvicornFactory, ca: test_tls.TestCA, connector: str
) -> None:
    """``verify_tls: false`` on wss://127.0.0.1:A: a base URL to A connects; to B (same certificate) is a 502."""
    with UpstreamServer(ssl=ca.server_context()) as own, UpstreamServer(ssl=ca.server_context()) as other:
        configured = {"url": own.url("/echo", scheme="wss"), "verify_tls": False}
        await _echo(_gateway(uvicorn_server, connector, configured, own.url("/", scheme="wss")))
        status, _, _ = await expect_status(_gateway(uvicorn_server, connector, configured, other.url("", scheme="wss")))
        assert status == 502
        assert len(own.handshakes) == 1 and not other.handshakes


@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_the_ca_bundle_follows_the_upstream_to_another_host(
    uvicorn_server: UvicornFactory, ca: test_tls.TestCA, connector: str
) -> None:
    """A wss:// upstream's ``ca_bundle`` verifies the wss:// host its ``set-backend-service`` picked."""
    with UpstreamServer(ssl=ca.server_context()) as own, UpstreamServer(ssl=ca.server_context()) as other:
        configured = {"url": own.url("/echo", scheme="wss"), "ca_bundle": str(ca.ca_file)}
        await _echo(_gateway(uvicorn_server, connector, configured, other.url("", scheme="wss")))
        assert not own.handshakes and len(other.handshakes) == 1


@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_the_connect_span_names_the_host_connected(
    uvicorn_server: UvicornFactory,
    upstream: UpstreamServer,
    connector: str,
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """``server.address``/``server.port`` of the attempt are the base URL's (they were the configured upstream's)."""
    configured = "ws://127.0.0.1:9/echo"  # nothing listens: only the base URL can answer
    url = _gateway(uvicorn_server, connector, configured, f"ws://localhost:{upstream.port}", tracer_provider=spans[0])
    await _echo(url)
    (attempt,) = [s for s in spans[1].get_finished_spans() if s.name == "upstream connect h"]
    attributes = dict(attempt.attributes or {})
    assert attributes["url.full"] == f"ws://localhost:{upstream.port}/echo"
    assert (attributes["server.address"], attributes["server.port"]) == ("localhost", upstream.port)
    assert attributes["ws_gateway.backend"] == configured  # the backend (and the metrics' labels) stay


def _upstream(url: str, **tls: Any) -> UpstreamConfig:
    return UpstreamConfig.model_validate({"url": url, **tls})


def test_the_tls_of_a_connection_follows_its_url() -> None:
    """Pure logic: ws:// is plain; wss:// verified, with the upstream's CA; verify_tls: false for its own host only."""
    ws = _upstream("ws://a:80/x")
    insecure = _upstream("wss://a/x", verify_tls=False)
    assert connection_tls(ws, "ws", "b", 80) == PLAIN
    assert connection_tls(ws, "wss", "a", 80) == TlsSettings(tls=True)  # the system's store
    assert connection_tls(insecure, "ws", "a", 443) == PLAIN
    assert connection_tls(insecure, "wss", "a", 443) == TlsSettings(tls=True, verify=False)
    assert connection_tls(insecure, "wss", "a", 8443) == TlsSettings(tls=True)
    assert connection_tls(insecure, "wss", "b", 443) == TlsSettings(tls=True)


def test_a_scheme_and_a_context_that_disagree_are_refused() -> None:
    """The guard at every connect: wss:// without a context, or ws:// with one, is a 500, never sent."""
    context = ssl.create_default_context()
    assert checked("u", "wss", context) is context and checked("u", "ws", None) is None
    for scheme, wrong in (("wss", None), ("ws", context)):
        with pytest.raises(TlsMismatch) as refused:
            checked("u", scheme, wrong)
        assert (refused.value.status, refused.value.reason) == (500, "misconfigured")


@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_a_mismatch_at_connect_is_a_clean_refusal(
    hostile: Callable[[Handler], Awaitable[int]],
    uvicorn_server: UvicornFactory,
    upstream: UpstreamServer,
    connector: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Were a wss:// connection ever given no context (a bug, simulated): 500, not a byte sent, no traceback."""
    received: list[bytes] = []

    async def listener(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.read(65536))
        writer.close()

    monkeypatch.setattr(UpstreamTls, "context", lambda self, scheme, host, port: None)
    port = await hostile(listener)
    status, _, _ = await expect_status(
        _gateway(uvicorn_server, connector, upstream.url("/echo"), f"wss://127.0.0.1:{port}")
    )
    assert status == 500
    assert not received and not upstream.handshakes
    assert not [r for r in caplog.records if r.exc_info], "no traceback"
    assert any("was about to open without TLS" in r.getMessage() for r in caplog.records)
