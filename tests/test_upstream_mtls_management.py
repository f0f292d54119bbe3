"""Client certificates through the management API: shown as paths, never as keys; loaded only as the file loads them.

A change may name only the certificate, key and passphrase variable the configuration file names
(any other path is refused before it is opened: no file-read oracle), and may present them only to a
host and port the file presents them to (not to a token holder's server).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.clients import connect
from support.configs import api_entry
from support.management import Managed, managed_gateway
from support.mtls import ClientFiles, MutualCA, make_mutual_ca
from support.upstream import UpstreamServer

PASSPHRASE = "mtls-management-passphrase-0123"
PASSPHRASE_ENV = "ASGI_WS_GATEWAY_TEST_MANAGED_KEY_PASSWORD"
JWT_SECRET_ENV = "ASGI_WS_GATEWAY_TEST_MANAGED_JWT_SECRET"
JWT = {"validate-jwt": {"secret_env": JWT_SECRET_ENV, "issuer": "https://issuer.test/", "algorithms": ["HS256"]}}


@pytest.fixture
def pki(tmp_path: Path) -> MutualCA:
    return make_mutual_ca(tmp_path)


@pytest.fixture
def client(pki: MutualCA, monkeypatch: pytest.MonkeyPatch) -> ClientFiles:
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)
    monkeypatch.setenv(JWT_SECRET_ENV, "j" * 40)
    return pki.client("gateway-managed", password=PASSPHRASE)


@pytest.fixture
def mtls_upstream(pki: MutualCA) -> Iterator[UpstreamServer]:
    with UpstreamServer(ssl=pki.upstream_context()) as server:
        yield server


def _upstream(pki: MutualCA, server: UpstreamServer, client: ClientFiles, path: str = "/echo") -> dict[str, Any]:
    return {
        "url": server.url(path, scheme="wss"),
        "ca_bundle": str(pki.ca_file),
        "client_cert": str(client.cert),
        "client_key": str(client.key),
        "client_key_password_env": PASSPHRASE_ENV,
    }


@pytest.fixture
def managed(pki: MutualCA, client: ClientFiles, mtls_upstream: UpstreamServer, tmp_path: Path) -> Iterator[Managed]:
    entry = {**api_entry(name="m", path="/ws/m"), "upstreams": [_upstream(pki, mtls_upstream, client)]}
    jwt = api_entry(name="j", path="/ws/j", policies=[JWT])  # the file reads JWT_SECRET_ENV as an HMAC secret
    with managed_gateway({"apis": [entry, jwt]}, tmp_path / "state.json") as gateway:
        yield gateway


async def _create(managed: Managed, body: dict[str, Any]) -> tuple[int, str]:
    async with managed.http() as http:
        response = await http.post("apis", json=body)
    return response.status_code, response.text


async def test_get_shows_the_paths_not_the_key_or_the_passphrase(managed: Managed, client: ClientFiles) -> None:
    async with managed.http() as http:
        shown = (await http.get("apis/m")).json()
    (upstream,) = shown["upstreams"]
    assert (upstream["client_cert"], upstream["client_key"]) == (str(client.cert), str(client.key))
    assert upstream["client_key_password_env"] == PASSPHRASE_ENV
    text = json.dumps(shown)
    assert "BEGIN" not in text and PASSPHRASE not in text


@pytest.mark.parametrize("field", ["client_cert", "client_key"])
async def test_another_file_is_refused_before_it_is_opened(
    managed: Managed, pki: MutualCA, mtls_upstream: UpstreamServer, client: ClientFiles, tmp_path: Path, field: str
) -> None:
    """A path the file does not name: 422, the file never read, nothing of it in the answer."""
    bait = tmp_path / "bait.pem"
    bait.write_text("-----BEGIN PRIVATE KEY-----\nbait-content-0123\n-----END PRIVATE KEY-----\n")
    upstream = {**_upstream(pki, mtls_upstream, client), field: str(bait)}
    status, text = await _create(managed, {"name": "x", "path": "/ws/x", "upstreams": [upstream]})
    assert status == 422, text
    assert f"reading file '{bait}' is not allowed" in text
    assert "bait-content" not in text


@pytest.mark.parametrize("variable", ["HOME", JWT_SECRET_ENV], ids=["unused", "the-files-jwt-secret"])
async def test_another_passphrase_variable_is_refused(
    managed: Managed, pki: MutualCA, mtls_upstream: UpstreamServer, client: ClientFiles, variable: str
) -> None:
    """A variable the file does not read as a passphrase (its JWT secret's neither: no oracle of the two being one)."""
    upstream = {**_upstream(pki, mtls_upstream, client), "client_key_password_env": variable}
    status, text = await _create(managed, {"name": "x", "path": "/ws/x", "upstreams": [upstream]})
    assert status == 422 and f"reading environment variable '{variable}' is not allowed" in text, text


async def test_the_passphrase_variable_is_no_jwt_secret(managed: Managed, mtls_upstream: UpstreamServer) -> None:
    """validate-jwt's secret_env naming the passphrase's variable: 422 (the passphrase, an HMAC secret to guess at)."""
    policy = {"validate-jwt": {"secret_env": PASSPHRASE_ENV, "issuer": "https://issuer.test/", "algorithms": ["HS256"]}}
    body = api_entry(mtls_upstream, name="x", path="/ws/x", policies=[policy])
    status, text = await _create(managed, body)
    assert status == 422 and f"reading environment variable '{PASSPHRASE_ENV}' is not allowed" in text, text


async def test_the_files_certificate_is_not_presented_to_another_host(
    managed: Managed, pki: MutualCA, client: ClientFiles
) -> None:
    """The operator's certificate, keyed to a token holder's server: 422 naming the field."""
    with UpstreamServer(ssl=pki.upstream_context(require=False)) as theirs:
        status, text = await _create(
            managed, {"name": "x", "path": "/ws/x", "upstreams": [_upstream(pki, theirs, client)]}
        )
        assert status == 422, text
        assert "upstreams[0].client_cert: the configuration file presents this client certificate" in text
        assert not theirs.handshakes


@pytest.mark.parametrize("weaker", [{"verify_tls": False}, {"ca_bundle": None}], ids=["unverified", "system-store"])
async def test_the_files_certificate_is_not_presented_to_the_files_host_less_strictly(
    managed: Managed, pki: MutualCA, mtls_upstream: UpstreamServer, client: ClientFiles, weaker: dict[str, Any]
) -> None:
    """The file's host, but not verified as the file verifies it: whoever held the address would see it."""
    upstream = {k: v for k, v in {**_upstream(pki, mtls_upstream, client), **weaker}.items() if v is not None}
    status, text = await _create(managed, {"name": "x", "path": "/ws/x", "upstreams": [upstream]})
    assert status == 422, text
    assert "upstreams[0].client_cert: the configuration file presents this client certificate to 127.0.0.1:" in text
    assert "may present it only as strictly as the file does" in text


async def test_the_files_certificate_to_the_files_host_is_served(
    managed: Managed, pki: MutualCA, mtls_upstream: UpstreamServer, client: ClientFiles
) -> None:
    """Where the file presents it (another path, the same host and port): created, and presented."""
    body = {"name": "x", "path": "/ws/x", "upstreams": [_upstream(pki, mtls_upstream, client, "/echo/x")]}
    status, text = await _create(managed, body)
    assert status == 201, text
    async with await connect(managed.url("/ws/x")) as ws:
        await ws.send("ping")
        assert await ws.recv() == "ping"
    (handshake,) = mtls_upstream.handshakes
    assert handshake.client_certificate == "gateway-managed"
