"""The files a ``rediss://`` URL names in its query (``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``,
``ssl_ca_path``), loaded when the configuration is checked.

redis-py opens them at its first connection, while the gateway serves: a missing CA file passed
``check`` and ``run`` started, and then every call to the store failed ("Error 2 connecting") and each
limit was judged unchecked (fail-open) or refused (fail-closed), a warning a handshake. Now such a URL
is a start-up problem by field path, in fixed words (no file content, no password, no OpenSSL text).
"""

from __future__ import annotations

import os
import ssl
from urllib.parse import parse_qsl, urlsplit

from ..loading import ChainNotLoaded, cannot_read, load_cert_chain
from .ca_bundles import CaBundleProblem, checked_ca_bundle


class TlsFileProblem(ValueError):
    """A file a Redis URL names cannot be used; the words quote nothing of it."""


def check_redis_tls_files(url: str) -> None:
    """Raise :class:`TlsFileProblem` or ``LoadRefused`` unless the URL's TLS files load."""
    options = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
    if ca_certs := options.get("ssl_ca_certs"):
        try:
            checked_ca_bundle(ca_certs)
        except CaBundleProblem as exc:
            raise TlsFileProblem(f"ssl_ca_certs: {exc}") from None
    if (ca_path := options.get("ssl_ca_path")) and not os.path.isdir(ca_path):
        raise TlsFileProblem("ssl_ca_path: not a directory")
    certfile, keyfile = options.get("ssl_certfile") or None, options.get("ssl_keyfile") or None
    if keyfile is not None and certfile is None:
        raise TlsFileProblem("ssl_keyfile needs ssl_certfile")
    if certfile is not None:
        _check_chain(certfile, keyfile, options.get("ssl_password") or None)


def _check_chain(certfile: str, keyfile: str | None, password: str | None) -> None:
    try:
        load_cert_chain(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), certfile, keyfile, password)
    except ChainNotLoaded as failure:
        if failure.read_error is not None:
            option = "ssl_certfile" if failure.path == certfile else "ssl_keyfile"
            raise TlsFileProblem(f"{option}: {cannot_read(failure.read_error)}") from None
        if failure.missing_passphrase:
            raise TlsFileProblem("ssl_keyfile: the private key is encrypted and ssl_password is not given") from None
        # no certificate, no key, a mismatch or a wrong password
        raise TlsFileProblem(
            "ssl_certfile/ssl_keyfile: no usable certificate and private key (PEM, the key matching, "
            "ssl_password decrypting it)"
        ) from None


__all__ = ["TlsFileProblem", "check_redis_tls_files"]
