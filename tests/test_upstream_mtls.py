"""Mutual TLS to upstreams: an upstream's ``client_cert``, presented to its own host only, on every connector.

Real components: a CA made per test (``support.mtls``), a real TLS upstream that requires (or only
asks for) a client certificate and records the one it got, the gateway under uvicorn (the splice,
the frame relay, the relay) and under ``asgi-ws-gateway run``.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect as ws_connect

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.config.apis import UpstreamConfig
from asgi_ws_gateway.standalone import not_found
from asgi_ws_gateway.upstream.tls import TlsSettings, connection_tls, shared_context
from support.access import access_line
from support.clients import connect, expect_status
from support.configs import api_entry, write_config
from support.gateway import PASSTHROUGH, ProbedGateway
from support.hostile import CONNECTORS
from support.mtls import ClientFiles, MutualCA, make_mutual_ca
from support.processes import ready_server
from support.servers import UvicornFactory
from support.upstream import UpstreamServer

PASSPHRASE = "mtls-passphrase-never-logged-0123"
PASSPHRASE_ENV = "ASGI_WS_GATEWAY_TEST_CLIENT_KEY_PASSWORD"


@pytest.fixture
def pki(tmp_path: Path) -> MutualCA:
    return make_mutual_ca(tmp_path)


def _upstream(pki: MutualCA, server: UpstreamServer, client: ClientFiles | None, **fields: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"url": server.url("/echo", scheme="wss"), "ca_bundle": str(pki.ca_file), **fields}
    if client is not None:
        entry |= {"client_cert": str(client.cert), "client_key": str(client.key)}
    return entry


def _gateway(uvicorn_server: UvicornFactory, connector: str, upstream: dict[str, Any], **api: Any) -> str:
    entry = api_entry(name="h", path="/h", connect_timeout=5, **CONNECTORS[connector], **api)
    entry["upstreams"] = [upstream]
    return uvicorn_server(WebSocketGateway(not_found, config={"apis": [entry]}), ws=PASSTHROUGH).url("/h")


async def _echo(url: str) -> None:
    async with await connect(url) as ws:
        await ws.send("ping")
        assert await ws.recv() == "ping"


@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_the_client_certificate_is_presented_to_the_upstream(
    pki: MutualCA, uvicorn_server: UvicornFactory, connector: str
) -> None:
    """An upstream that requires a client certificate gets ``client_cert``'s: 101, its subject seen."""
    with UpstreamServer(ssl=pki.upstream_context()) as server:
        await _echo(_gateway(uvicorn_server, connector, _upstream(pki, server, pki.client("gateway-a"))))
        (handshake,) = server.handshakes
    assert handshake.client_certificate == "gateway-a"


@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_an_encrypted_key_is_opened_with_the_passphrase_from_the_environment(
    pki: MutualCA,
    uvicorn_server: UvicornFactory,
    connector: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``client_key_password_env`` names the variable; the passphrase is in no log line."""
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)
    client = pki.client("gateway-encrypted", password=PASSPHRASE)
    with UpstreamServer(ssl=pki.upstream_context()) as server:
        upstream = _upstream(pki, server, client, client_key_password_env=PASSPHRASE_ENV)
        await _echo(_gateway(uvicorn_server, connector, upstream))
        (handshake,) = server.handshakes
    assert handshake.client_certificate == "gateway-encrypted"
    assert not [r for r in caplog.records if PASSPHRASE in r.getMessage()]


@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_without_a_client_certificate_an_upstream_that_requires_one_is_a_502(
    pki: MutualCA, uvicorn_server: UvicornFactory, connector: str, caplog: pytest.LogCaptureFixture
) -> None:
    """No ``client_cert``: the upstream refuses the TLS handshake; 502, an access line saying why, no traceback."""
    caplog.set_level("INFO")
    with UpstreamServer(ssl=pki.upstream_context()) as server:
        status, _, _ = await expect_status(_gateway(uvicorn_server, connector, _upstream(pki, server, None)))
        assert status == 502
        assert not server.handshakes
    line = await access_line(caplog)
    assert " 502 " in line and "upstream_unreachable" in line, line
    assert not [r for r in caplog.records if r.exc_info], "no traceback"


@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_a_host_set_backend_service_picks_never_sees_the_client_certificate(
    pki: MutualCA, uvicorn_server: UvicornFactory, connector: str
) -> None:
    """The same ``ca_bundle`` verifies the other host, but the certificate is the own host's only: none presented."""
    with (
        UpstreamServer(ssl=pki.upstream_context()) as own,
        UpstreamServer(ssl=pki.upstream_context(require=False)) as other,
    ):
        policies = [{"set-backend-service": {"base_url": other.url("", scheme="wss")}}]
        upstream = _upstream(pki, own, pki.client("gateway-a"))
        await _echo(_gateway(uvicorn_server, connector, upstream, policies=policies))
        (handshake,) = other.handshakes
        assert not own.handshakes
    assert handshake.client_certificate is None


def test_only_the_own_host_and_port_gets_the_client_certificate(pki: MutualCA) -> None:
    client = pki.client("gateway-a")
    upstream = UpstreamConfig(url="wss://127.0.0.1:9443/x", client_cert=str(client.cert), client_key=str(client.key))
    assert connection_tls(upstream, "wss", "127.0.0.1", 9443).client_certificate == upstream.client_certificate
    assert connection_tls(upstream, "wss", "127.0.0.1", 9444).client_certificate is None
    assert connection_tls(upstream, "wss", "localhost", 9443).client_certificate is None


def test_a_client_certificate_does_not_change_who_may_answer(pki: MutualCA) -> None:
    """The management API's secret-host floor compares who may read or answer; the certificate is not part of it."""
    client = pki.client("gateway-a")
    upstream = UpstreamConfig(url="wss://127.0.0.1:9443/x", client_cert=str(client.cert), client_key=str(client.key))
    with_certificate = connection_tls(upstream, "wss", "127.0.0.1", 9443)
    assert with_certificate.at_least_as_strict_as(TlsSettings(tls=True))
    assert TlsSettings(tls=True).at_least_as_strict_as(with_certificate)


def test_a_context_is_made_once_and_again_after_a_file_changed(pki: MutualCA) -> None:
    """Shared by every upstream with the same settings; a rotated certificate (same paths) is read again."""
    client = pki.client("gateway-a")
    upstream = UpstreamConfig(url="wss://127.0.0.1:9443/x", client_cert=str(client.cert), client_key=str(client.key))
    settings = connection_tls(upstream, "wss", "127.0.0.1", 9443)
    first = shared_context(settings)
    assert shared_context(settings) is first
    rotated = pki.client("gateway-rotated")
    client.cert.write_bytes(rotated.cert.read_bytes())
    client.key.write_bytes(rotated.key.read_bytes())
    again = shared_context(settings)
    assert again is not first and again is not None


async def test_a_configuration_applied_after_a_rotation_presents_the_new_certificate(
    pki: MutualCA, uvicorn_server: UvicornFactory
) -> None:
    """Files replaced in place, then a configuration applied (here: the same one again): the new subject is seen."""
    client = pki.client("gateway-a")
    with UpstreamServer(ssl=pki.upstream_context()) as server:
        config = {"apis": [{**api_entry(name="h", path="/h"), "upstreams": [_upstream(pki, server, client)]}]}
        gateway = ProbedGateway(config)
        url = uvicorn_server(gateway, ws=PASSTHROUGH).url("/h")
        await _echo(url)
        rotated = pki.client("gateway-rotated")
        client.cert.write_bytes(rotated.cert.read_bytes())
        client.key.write_bytes(rotated.key.read_bytes())
        await _echo(url)  # not applied yet: the context in force
        await gateway.on_server(lambda: gateway.gateway.apply_config(config))
        await _echo(url)
        assert [h.client_certificate for h in server.handshakes] == ["gateway-a", "gateway-a", "gateway-rotated"]


@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_run_presents_the_client_certificate(pki: MutualCA, tmp_path: Path, connector: str) -> None:
    """Under ``asgi-ws-gateway run``: the upstream sees the certificate; the passphrase is in no output."""
    client = pki.client("gateway-run", password=PASSPHRASE)
    with UpstreamServer(ssl=pki.upstream_context()) as server:
        upstream = _upstream(pki, server, client, client_key_password_env=PASSPHRASE_ENV)
        entry = {**api_entry(name="h", path="/h", **CONNECTORS[connector]), "upstreams": [upstream]}
        config = write_config(tmp_path, {"apis": [entry]})

        def command(port: int) -> list[str]:
            return ["-m", "asgi_ws_gateway", "run", str(config), "--port", str(port)]

        with ready_server(command, env={PASSPHRASE_ENV: PASSPHRASE}) as gateway:
            async with ws_connect(f"ws://127.0.0.1:{gateway.port}/h", compression=None) as ws:
                await ws.send("ping")
                assert await ws.recv() == "ping"
            output = gateway.output()
        (handshake,) = server.handshakes
    assert handshake.client_certificate == "gateway-run"
    assert PASSPHRASE not in output


def test_run_without_the_passphrase_refuses_to_start(pki: MutualCA, tmp_path: Path) -> None:
    """``run`` names the field and what is wrong and exits before serving, with no traceback; OpenSSL never
    prompts for the passphrase (stdin is closed: a prompt would fail, not wait)."""
    client = pki.client("gateway-run", password=PASSPHRASE)
    upstream = {"url": "wss://127.0.0.1:1/", "client_cert": str(client.cert), "client_key": str(client.key)}
    config = write_config(tmp_path, {"apis": [{**api_entry(name="h", path="/h"), "upstreams": [upstream]}]})
    done = subprocess.run(
        [sys.executable, "-m", "asgi_ws_gateway", "run", str(config), "--port", "0"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode != 0
    assert "apis[0].upstreams[0]: client_key: the private key is encrypted" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


@contextlib.contextmanager
def _tls_server_that_alerts(context: ssl.SSLContext) -> Iterator[int]:
    """A blocking TLS server: its refused handshake sends its alert, as OpenSSL's servers do (asyncio's
    server closes without flushing it). Yields its port."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except TimeoutError:
                continue
            raw.settimeout(5)
            with (
                contextlib.suppress(OSError),
                context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False) as tls,
            ):
                try:
                    tls.do_handshake()
                except ssl.SSLError:  # the alert is out: a FIN after it, not a reset that could discard it
                    tls.shutdown(socket.SHUT_WR)
                    while tls.recv(65536):  # plain bytes now: what the client sent, until it closes
                        pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()


@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_the_upstreams_certificate_required_alert_is_named_in_the_log(
    pki: MutualCA, uvicorn_server: UvicornFactory, connector: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An upstream that alerts ``certificate_required``: 502, the WARNING names the alert, no traceback."""
    with _tls_server_that_alerts(pki.upstream_context()) as port:
        upstream = {"url": f"wss://127.0.0.1:{port}/echo", "ca_bundle": str(pki.ca_file)}
        status, _, _ = await expect_status(_gateway(uvicorn_server, connector, upstream))
    assert status == 502
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("TLSV13_ALERT_CERTIFICATE_REQUIRED" in warning for warning in warnings), warnings
    assert not [r for r in caplog.records if r.exc_info], "no traceback"
