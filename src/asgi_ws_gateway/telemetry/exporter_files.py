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

from ..loading import read_regular_file

_FILES = ("CERTIFICATE", "CLIENT_KEY", "CLIENT_CERTIFICATE")


class _Encrypted(Exception):
    """OpenSSL asked for a passphrase: the OTLP exporters take none."""


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
        return f"{name}: cannot be read ({exc.strerror or type(exc).__name__})"
    return None


def _holds_certificates(path: str) -> bool:
    try:
        ssl.create_default_context(cafile=path)
    except (OSError, ValueError):
        return False
    return True


def _pair_problems(name: str, chain: str, key: str) -> list[str]:
    def no_passphrase() -> str:
        raise _Encrypted

    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(chain, key, no_passphrase)
    except _Encrypted:
        return [f"{name}: its private key is encrypted, and the OTLP exporters take no passphrase"]
    except (OSError, ValueError):
        return [f"{name}: no usable client certificate and private key (PEM, the key matching the certificate)"]
    return []


__all__ = ["exporter_file_problems"]
