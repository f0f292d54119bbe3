"""An on-path attacker between the gateway and a ``wss://`` upstream, on every connector.

A certificate that is self-signed, from a CA the upstream does not trust, expired, for another name,
for the IP where the URL names the host (or the reverse), or a server that speaks only TLS 1.1: the
handshake is refused 502 before the upstream application sees it, one log line names the backend and
the reason, the client's answer names neither the certificate nor a traceback. SNI carries the URL's
host name, the one ``set-backend-service`` renders too; never an IP literal (RFC 6066 §3).
``verify_tls: false`` is a WARNING at every start-up.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.config.checks import config_warnings
from asgi_ws_gateway.config.parsing import parse_config
from asgi_ws_gateway.standalone import not_found
from asgi_ws_gateway.upstream.tls import TlsSettings, client_context
from support.clients import connect, expect_status
from support.configs import api_entry
from support.gateway import PASSTHROUGH
from support.hostile import CONNECTORS
from support.servers import UvicornFactory
from support.upstream import UpstreamServer

_HOUR = datetime.timedelta(hours=1)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@dataclass(frozen=True)
class _Issuer:
    """A throwaway CA (or a self-signing key) in ``directory``."""

    directory: Path
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @classmethod
    def make(cls, directory: Path, name: str) -> _Issuer:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - _HOUR).not_valid_after(now + _HOUR)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )  # fmt: skip
        directory.mkdir(parents=True, exist_ok=True)
        return cls(directory, key, certificate)

    @property
    def ca_file(self) -> Path:
        path = self.directory / "ca.pem"
        path.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))
        return path

    def server(self, names: Sequence[str], *, expired: bool = False, self_signed: bool = False) -> ssl.SSLContext:
        """A server context with a certificate for ``names`` (DNS names or IP literals)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        start, end = (now - 3 * _HOUR, now - _HOUR) if expired else (now - _HOUR, now + _HOUR)
        sans: list[x509.GeneralName] = []
        for name in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                sans.append(x509.DNSName(name))
        subject = _name(names[0])
        leaf = (
            x509.CertificateBuilder().subject_name(subject)
            .issuer_name(subject if self_signed else self.certificate.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(key if self_signed else self.key, hashes.SHA256())
        )  # fmt: skip
        cert_file, key_file = self.directory / "leaf.pem", self.directory / "leaf.key"
        cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        return context


def _gateway(uvicorn_server: UvicornFactory, connector: str, upstream: Any, **fields: Any) -> str:
    entry = {**api_entry(name="h", path="/h", connect_timeout=5, **CONNECTORS[connector]), "upstreams": [upstream]}
    return uvicorn_server(WebSocketGateway(not_found, config={"apis": [{**entry, **fields}]}), ws=PASSTHROUGH).url("/h")


def _refusal_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.WARNING and "upstream" in r.name]


# (the certificate, the URL's host, whether the upstream's ca_bundle is the issuing CA, the reason logged)
_BAD: dict[str, tuple[dict[str, Any], str, bool, str]] = {
    "self-signed": ({"names": ["localhost"], "self_signed": True}, "localhost", False, "self-signed certificate"),
    "another CA": ({"names": ["localhost"]}, "localhost", False, "unable to get local issuer certificate"),
    "expired": ({"names": ["localhost"], "expired": True}, "localhost", True, "certificate has expired"),
    "another name": ({"names": ["other.example"]}, "localhost", True, "Hostname mismatch"),
    "the IP for a name": ({"names": ["127.0.0.1"]}, "localhost", True, "Hostname mismatch"),
    "a name for the IP": ({"names": ["localhost"]}, "127.0.0.1", True, "IP address mismatch"),
}


@pytest.mark.parametrize("case", list(_BAD))
@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_a_certificate_that_does_not_verify_is_a_502_named_in_the_log(
    tmp_path: Path, uvicorn_server: UvicornFactory, caplog: pytest.LogCaptureFixture, connector: str, case: str
) -> None:
    certificate, host, trusted, reason = _BAD[case]
    issuer = _Issuer.make(tmp_path / "ca", "trust test CA")
    server = issuer.server(**certificate)
    ca_bundle = str(issuer.ca_file if trusted else _Issuer.make(tmp_path / "other", "other CA").ca_file)
    with UpstreamServer(ssl=server) as upstream:
        url = f"wss://{host}:{upstream.port}/echo"
        caplog.set_level(logging.INFO)
        status, _, body = await expect_status(_gateway(uvicorn_server, connector, {"url": url, "ca_bundle": ca_bundle}))
        assert status == 502
        assert not upstream.handshakes
    assert b"certificate" not in body.lower() and b"Traceback" not in body
    lines = [r.getMessage() for r in _refusal_lines(caplog)]
    assert any(reason in line and f"port {upstream.port}" in line for line in lines), lines
    assert not any(r.exc_info for r in caplog.records if "asgi_ws_gateway" in r.name)


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")  # the point: an old server
@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_a_server_that_speaks_tls_1_1_at_most_is_refused(
    tmp_path: Path, uvicorn_server: UvicornFactory, connector: str
) -> None:
    issuer = _Issuer.make(tmp_path, "tls 1.1 CA")
    server = issuer.server(["localhost"])
    server.minimum_version, server.maximum_version = ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1
    server.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL 3 refuses TLS 1.1 at its default level
    with UpstreamServer(ssl=server) as upstream:
        old = ssl.create_default_context(cafile=issuer.ca_file)  # the control: the server does speak TLS 1.1
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.set_ciphers("DEFAULT:@SECLEVEL=0")
        async with await connect(f"wss://localhost:{upstream.port}/echo", ssl=old) as ws:
            await ws.send("ping")
            assert await ws.recv() == "ping"
        url = f"wss://localhost:{upstream.port}/echo"
        status, _, _ = await expect_status(
            _gateway(uvicorn_server, connector, {"url": url, "ca_bundle": str(issuer.ca_file)})
        )
        assert status == 502
        assert len(upstream.handshakes) == 1  # the control's only


@pytest.mark.parametrize("settings", [TlsSettings(tls=True), TlsSettings(tls=True, verify=False)])
def test_every_client_context_refuses_tls_below_1_2(settings: TlsSettings) -> None:
    context = client_context(settings)
    assert context is not None and context.minimum_version >= ssl.TLSVersion.TLSv1_2


_SNI: dict[str, tuple[str, list[dict[str, Any]], str, str | None]] = {
    # (the API's name, its policies, the upstream's host, the name the server is sent)
    "the upstream's name": ("h", [], "localhost", "localhost"),
    "an IP: none": ("h", [], "127.0.0.1", None),
    "upper case": ("h", [], "LocalHost", "localhost"),
    "set-backend-service": ("h", [{"set-backend-service": {"base_url": "wss://localhost:{port}"}}], "127.0.0.1",
                            "localhost"),
    "a templated host": ("localhost", [{"set-backend-service": {"base_url": "wss://{api.name}:{port}"}}], "127.0.0.1",
                         "localhost"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(_SNI))
@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_the_server_name_sent_is_the_url_host_name(
    tmp_path: Path, uvicorn_server: UvicornFactory, connector: str, case: str
) -> None:
    name, policies, host, expected = _SNI[case]
    issuer = _Issuer.make(tmp_path, "sni CA")
    server = issuer.server(["localhost", "127.0.0.1"])
    sent: list[str | None] = []
    server.sni_callback = lambda _socket, server_name, _context: sent.append(server_name)
    with UpstreamServer(ssl=server) as upstream:
        rendered = [
            {kind: {"base_url": settings["base_url"].replace("{port}", str(upstream.port))}}
            for policy in policies
            for kind, settings in policy.items()
        ]
        upstream_entry = {"url": f"wss://{host}:{upstream.port}/echo", "ca_bundle": str(issuer.ca_file)}
        url = _gateway(uvicorn_server, connector, upstream_entry, name=name, policies=rendered)
        async with await connect(url) as ws:
            await ws.send("ping")
            assert await ws.recv() == "ping"
    assert sent == [expected]


def _warnings(upstream: dict[str, Any]) -> list[str]:
    config = parse_config({"apis": [{"name": "chat", "path": "/chat", "upstreams": [upstream]}]})
    return [w for w in config_warnings(config) if "verify_tls" in w]


def test_verify_tls_false_is_warned_about_by_upstream() -> None:
    (warning,) = _warnings({"url": "wss://chat.internal:9443/x", "verify_tls": False})
    assert warning.startswith("API chat: upstreams[0].verify_tls: false: the certificate of wss://chat.internal:9443/x")
    assert _warnings({"url": "wss://chat.internal:9443/x"}) == []


def test_verify_tls_false_is_logged_at_start_up(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    upstream = {"url": "wss://chat.internal:9443/x", "verify_tls": False}
    WebSocketGateway(not_found, config={"apis": [{"name": "chat", "path": "/chat", "upstreams": [upstream]}]})
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("upstreams[0].verify_tls: false" in line for line in lines) == 1, lines
