"""A ``wss://`` upstream's client certificate (mutual TLS): loaded into a context, or what is wrong with it.

The same load checks the configuration (``UpstreamConfig``) and builds each connection's context
(``upstream/tls.py``), so that the two cannot disagree. Its problems are fixed words: they never quote a
file's content, the passphrase or OpenSSL's text about either. A management change may name only the
files and variable the configuration file names (``loading.Gate``), so a problem it reads tells an
admin-token holder nothing of any other file.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from ..loading import check_file, read_env, read_regular_file


@dataclass(frozen=True)
class ClientCertificate:
    """What a connection presents to its upstream.

    Attributes:
        cert: PEM file: the certificate, then its chain.
        key: PEM file of its private key; None when it is in ``cert``.
        password_env: the environment variable holding an encrypted key's passphrase, or None.
    """

    cert: str
    key: str | None = None
    password_env: str | None = None


class CertificateProblem(ValueError):
    """A client certificate cannot be loaded: ``field`` (``client_key``) and ``problem``, no secret in either."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class _NoPassphrase(Exception):
    """OpenSSL asked for a passphrase that the configuration does not give."""


def load_client_certificate(context: ssl.SSLContext, certificate: ClientCertificate) -> None:
    """Load ``certificate`` into ``context``; never prompts on a terminal for a passphrase.

    Raises:
        CertificateProblem: a file cannot be read, holds no certificate or key, the key does not
            match, or is encrypted without (or with a wrong) passphrase.
        LoadRefused: a restricted configuration named a file or variable the operator did not allow.
    """
    files = [("client_cert", certificate.cert)]
    if certificate.key is not None:
        files.append(("client_key", certificate.key))
    for field, path in files:
        check_file(path)
        try:
            read_regular_file(path)  # a FIFO or a device would hang or flood OpenSSL's own read
        except OSError as exc:
            raise CertificateProblem(field, f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    password = read_env(certificate.password_env, key_password=True) if certificate.password_env is not None else None
    asked = False

    def passphrase() -> str:
        nonlocal asked
        asked = True
        if password is None:
            raise _NoPassphrase
        return password

    key_field = "client_key" if certificate.key is not None else "client_cert"
    try:
        context.load_cert_chain(certificate.cert, certificate.key, passphrase)
    except _NoPassphrase:
        why = "is not set" if certificate.password_env is not None else "is not given"
        raise CertificateProblem(
            key_field, f"the private key is encrypted and its passphrase (client_key_password_env) {why}"
        ) from None
    except ValueError:  # a passphrase longer than OpenSSL takes
        raise CertificateProblem(key_field, "the passphrase is too long") from None
    except OSError as exc:  # ssl.SSLError too; read just before, so mostly a file replaced since
        raise _problem(exc, certificate, key_field, asked) from None


def _problem(exc: OSError, certificate: ClientCertificate, key_field: str, asked: bool) -> CertificateProblem:
    """What went wrong, in fixed words: OpenSSL's reason code is read, its text never shown."""
    if not isinstance(exc, ssl.SSLError):
        return CertificateProblem("client_cert", f"cannot be read ({exc.strerror or type(exc).__name__})")
    if exc.reason == "KEY_VALUES_MISMATCH":
        return CertificateProblem(key_field, "the private key does not match the certificate in client_cert")
    if asked:
        return CertificateProblem(key_field, "the passphrase does not decrypt the private key")
    try:
        ssl.create_default_context(cafile=certificate.cert)  # PEM certificates in it? (the key is never parsed here)
    except (OSError, ValueError):
        return CertificateProblem("client_cert", "holds no PEM certificate")
    if certificate.key is None:
        return CertificateProblem("client_cert", "holds no PEM private key after the certificate (or give client_key)")
    return CertificateProblem("client_key", "holds no PEM private key")


def checked_certificate(certificate: ClientCertificate) -> None:
    """Raise :class:`CertificateProblem` (or ``LoadRefused``) unless ``certificate`` loads."""
    load_client_certificate(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), certificate)


__all__ = ["CertificateProblem", "ClientCertificate", "checked_certificate", "load_client_certificate"]
