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

from ..loading import ChainNotLoaded, cannot_read, load_cert_chain, read_env


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


def load_client_certificate(context: ssl.SSLContext, certificate: ClientCertificate) -> None:
    """Load ``certificate`` into ``context``; never prompts on a terminal for a passphrase.

    Raises:
        CertificateProblem: a file cannot be read, holds no certificate or key, the key does not
            match, or is encrypted without (or with a wrong) passphrase.
        LoadRefused: a restricted configuration named a file or variable the operator did not allow.
    """
    password = read_env(certificate.password_env, key_password=True) if certificate.password_env is not None else None
    try:
        load_cert_chain(context, certificate.cert, certificate.key, password)
    except ChainNotLoaded as failure:
        raise _problem(failure, certificate) from None


def _problem(failure: ChainNotLoaded, certificate: ClientCertificate) -> CertificateProblem:
    """What went wrong, in fixed words: OpenSSL's reason code is read, its text never shown."""
    key_field = "client_key" if certificate.key is not None else "client_cert"
    exc = failure.error
    if failure.missing_passphrase:
        why = "is not set" if certificate.password_env is not None else "is not given"
        return CertificateProblem(
            key_field, f"the private key is encrypted and its passphrase (client_key_password_env) {why}"
        )
    if failure.read_error is not None:
        field = "client_cert" if failure.path == certificate.cert else "client_key"
        return CertificateProblem(field, cannot_read(failure.read_error))
    if isinstance(exc, OSError) and not isinstance(exc, ssl.SSLError):  # read just before: a file replaced since
        return CertificateProblem("client_cert", cannot_read(exc))
    if isinstance(exc, ValueError):  # a passphrase longer than OpenSSL takes
        return CertificateProblem(key_field, "the passphrase is too long")
    if isinstance(exc, ssl.SSLError) and exc.reason == "KEY_VALUES_MISMATCH":
        return CertificateProblem(key_field, "the private key does not match the certificate in client_cert")
    if failure.passphrase_tried:
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
