"""A certificate names its host in subjectAltName, never in its common name alone, on every connector.

Python's client contexts check a certificate without a subjectAltName against its common name
(``hostname_checks_common_name``, on by default): one issued with ``CN=localhost`` and no SAN — by a
CA that never meant it as a server name — passed for ``wss://localhost``. The gateway's contexts
read names from subjectAltName only (RFC 9525), as browsers do.
"""

from __future__ import annotations

import datetime
import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.standalone import not_found
from asgi_ws_gateway.upstream.tls import TlsSettings, client_context
from support.clients import connect, expect_status
from support.configs import api_entry
from support.gateway import PASSTHROUGH
from support.hostile import CONNECTORS
from support.servers import UvicornFactory
from support.upstream import UpstreamServer


@dataclass(frozen=True)
class _Certificates:
    ca_file: Path
    server: ssl.SSLContext


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issue(directory: Path, *, san: bool) -> _Certificates:
    """A CA, and a server certificate it signed with ``CN=localhost`` (and ``DNS:localhost`` if ``san``)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(_name("common-name test CA")).issuer_name(_name("common-name test CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    leaf = (
        x509.CertificateBuilder().subject_name(_name("localhost")).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(hours=1))
    )  # fmt: skip
    if san:
        leaf = leaf.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
    ca_file, cert_file, key_file = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(leaf.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    return _Certificates(ca_file, server)


def _gateway(uvicorn_server: UvicornFactory, connector: str, port: int, ca_file: Path) -> str:
    upstream = {"url": f"wss://localhost:{port}/echo", "ca_bundle": str(ca_file)}
    entry = {**api_entry(name="h", path="/h", connect_timeout=5, **CONNECTORS[connector]), "upstreams": [upstream]}
    return uvicorn_server(WebSocketGateway(not_found, config={"apis": [entry]}), ws=PASSTHROUGH).url("/h")


@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_a_common_name_without_a_subject_alt_name_is_refused(
    tmp_path: Path, uvicorn_server: UvicornFactory, connector: str
) -> None:
    """``CN=localhost``, no SAN, from the trusted CA, for wss://localhost: 502 (it was a 101)."""
    certificates = _issue(tmp_path, san=False)
    with UpstreamServer(ssl=certificates.server) as upstream:
        status, _, _ = await expect_status(_gateway(uvicorn_server, connector, upstream.port, certificates.ca_file))
        assert status == 502
        assert not upstream.handshakes


@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_the_same_name_in_subject_alt_name_is_accepted(
    tmp_path: Path, uvicorn_server: UvicornFactory, connector: str
) -> None:
    """The control: ``DNS:localhost`` in subjectAltName connects."""
    certificates = _issue(tmp_path, san=True)
    with UpstreamServer(ssl=certificates.server) as upstream:
        async with await connect(_gateway(uvicorn_server, connector, upstream.port, certificates.ca_file)) as ws:
            await ws.send("ping")
            assert await ws.recv() == "ping"
        assert len(upstream.handshakes) == 1


@pytest.mark.parametrize("settings", [TlsSettings(tls=True), TlsSettings(tls=True, verify=False)])
def test_every_client_context_ignores_the_common_name(settings: TlsSettings) -> None:
    context = client_context(settings)
    assert context is not None and context.hostname_checks_common_name is False
