"""A throwaway CA that signs a 127.0.0.1 server certificate and client certificates (mutual TLS), made per test."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["ClientFiles", "MutualCA", "make_mutual_ca"]

_HOUR = datetime.timedelta(hours=1)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey, password: str | None = None) -> bytes:
    encryption = (
        serialization.BestAvailableEncryption(password.encode())
        if password is not None
        else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


@dataclass(frozen=True)
class ClientFiles:
    cert: Path
    key: Path


@dataclass
class MutualCA:
    """One CA for both sides: the upstream's server certificate and the gateway's client certificates."""

    directory: Path
    ca_file: Path
    _ca_key: ec.EllipticCurvePrivateKey
    _ca: x509.Certificate

    def _sign(self, common_name: str, key: ec.EllipticCurvePrivateKey, *, server: bool) -> x509.Certificate:
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(self._ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - _HOUR).not_valid_after(now + _HOUR)
        )  # fmt: skip
        if server:
            san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
            builder = builder.add_extension(san, critical=False)
        return builder.sign(self._ca_key, hashes.SHA256())

    def client(self, common_name: str, *, password: str | None = None) -> ClientFiles:
        """A client certificate ``CN=common_name`` and its key (encrypted with ``password``), as files."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self.directory / f"{common_name}.pem"
        key_file = self.directory / f"{common_name}.key"
        cert.write_bytes(self._sign(common_name, key, server=False).public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(_pem_key(key, password))
        return ClientFiles(cert, key_file)

    def upstream_context(self, *, require: bool = True) -> ssl.SSLContext:
        """A server context for 127.0.0.1 that asks for a client certificate from this CA (required, or optional)."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert, key_file = self.directory / "server.pem", self.directory / "server.key"
        cert.write_bytes(self._sign("127.0.0.1", key, server=True).public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(_pem_key(key))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key_file)
        context.load_verify_locations(cafile=self.ca_file)
        context.verify_mode = ssl.CERT_REQUIRED if require else ssl.CERT_OPTIONAL
        return context


def make_mutual_ca(directory: Path) -> MutualCA:
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(_name("mutual TLS test CA")).issuer_name(_name("mutual TLS test CA"))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - _HOUR).not_valid_after(now + _HOUR)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return MutualCA(directory, ca_file, key, ca)
