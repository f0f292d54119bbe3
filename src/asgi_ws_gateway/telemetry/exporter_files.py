"""The TLS files the OTLP exporters read (``OTEL_EXPORTER_OTLP[_SIGNAL]_CERTIFICATE``, ``_CLIENT_KEY``,
``_CLIENT_CERTIFICATE``), loaded before the providers are built.

The SDK reads them as it builds an exporter and takes a file it cannot open as none: a misspelt CA path
logged a traceback and the gateway ran on, verifying the collector against the system's store (every
export failing against a private CA), a client certificate without its key was sent as no certificate,
and a FIFO made the start wait for a writer. Each is now a start-up problem naming the variable, in
fixed words (no file content, no OpenSSL text).
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping

from ..loading import ChainNotLoaded, cannot_read, load_cert_chain, read_regular_file

_FILES = ("CERTIFICATE", "CLIENT_KEY", "CLIENT_CERTIFICATE")


def exporter_file_problems(signal: str, environ: Mapping[str, str]) -> list[str]:
    """``VARIABLE: what is wrong`` for each TLS file ``signal``'s OTLP exporter would read."""
    named: dict[str, str] = {}
    for kind in _FILES:
        for name in (f"OTEL_EXPORTER_OTLP_{signal.upper()}_{kind}", f"OTEL_EXPORTER_OTLP_{kind}"):
            if environ.get(name):  # the signal's own variable first, and the path as written, as the SDK reads them
                named[kind] = name
                break
    problems = [problem for kind, name in named.items() if (problem := _unreadable(name, environ[name]))]
    if problems:
        return problems
    if "CERTIFICATE" in named and not _holds_certificates(environ[named["CERTIFICATE"]]):
        problems.append(f"{named['CERTIFICATE']}: holds no PEM certificate")
    key, chain = named.get("CLIENT_KEY"), named.get("CLIENT_CERTIFICATE")
    if (key is None) != (chain is None):
        given, missing = (key, "CLIENT_CERTIFICATE") if chain is None else (chain, "CLIENT_KEY")
        problems.append(f"{given}: set without OTEL_EXPORTER_OTLP_{missing} (a client certificate needs its key)")
    elif key is not None and chain is not None:
        problems += _pair_problems(chain, environ[chain], environ[key])
    return problems


def _unreadable(name: str, path: str) -> str | None:
    try:
        read_regular_file(path)  # a FIFO or a device would hang or flood the exporter's own read
    except OSError as exc:
        return f"{name}: {cannot_read(exc)}"
    return None


def _holds_certificates(path: str) -> bool:
    try:
        ssl.create_default_context(cafile=path)
    except (OSError, ValueError):
        return False
    return True


def _pair_problems(name: str, chain: str, key: str) -> list[str]:
    try:  # no passphrase: the OTLP exporters take none
        load_cert_chain(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), chain, key)
    except ChainNotLoaded as failure:
        if failure.missing_passphrase:
            return [f"{name}: its private key is encrypted, and the OTLP exporters take no passphrase"]
        return [f"{name}: no usable client certificate and private key (PEM, the key matching the certificate)"]
    return []


__all__ = ["exporter_file_problems"]
