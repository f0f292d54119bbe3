"""The TLS of an upstream connection, decided by the URL it connects to, on every connector.

An upstream request's URL is final only once the policies ran: ``set-backend-service`` may give it
another scheme, host and port than the upstream's configured URL. The TLS context was the configured
upstream's, chosen before: a ``ws://`` upstream sent to ``wss://`` sent its handshake, the operator's
``set-header`` credential in it, in clear text (splice and frame relay) or failed with a traceback
(the relay's client); a ``wss://`` upstream sent to ``ws://`` was a 502 or a 500. Now the URL
connected decides (:func:`connection_tls`):

* ``ws://``: no TLS;
* ``wss://``: the certificate is verified, its names against the URL's host (a certificate's common
  name is never read: ``hostname_checks_common_name`` off), with the upstream's ``ca_bundle`` when it
  is a ``wss://`` upstream that has one (the CA the operator chose for its backends), else with the
  system's trust store; ``verify_tls: false`` holds only for the upstream's own host and port, never
  for a host a ``set-backend-service`` (perhaps a claim in its template) chose; so does the
  upstream's client certificate (``client_cert``): a host a template chose never sees it, nor gets
  the gateway's signature to use elsewhere.

The management API's secret-host rule compares the same :class:`TlsSettings`
(``management/upstream_hosts.py``).
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from urllib.parse import SplitResult

from ..bounded import remember, split_url
from ..config.apis import UpstreamConfig
from ..config.client_certificates import ClientCertificate, load_client_certificate
from ..errors import HandshakeDenied
from .resolver import host_and_port


@dataclass(frozen=True)
class TlsSettings:
    """How one connection is secured.

    Attributes:
        tls: over TLS (``wss://``).
        verify: the certificate is verified (the chain and the host name).
        ca_bundle: the PEM file of CAs it is verified with; None for the system's trust store.
        client_certificate: what the gateway presents (mutual TLS); None for nothing.
    """

    tls: bool
    verify: bool = True
    ca_bundle: str | None = None
    client_certificate: ClientCertificate | None = None

    def at_least_as_strict_as(self, other: TlsSettings) -> bool:
        """Whether no one can read or answer this connection who could not read or answer ``other``:
        TLS where it has TLS, verified where it is verified, and then by the same CAs only.

        The client certificate is not compared: it says who the gateway is to the upstream, not who
        may read or answer the connection (with or without one, the same server answers)."""
        if not other.tls:
            return True
        if not self.tls:
            return False
        return not other.verify or (self.verify and self.ca_bundle == other.ca_bundle)


PLAIN = TlsSettings(tls=False)


def connection_tls(upstream: UpstreamConfig, scheme: str, host: str, port: int) -> TlsSettings:
    """The TLS of a connection made for ``upstream`` to ``scheme://host:port`` (its final URL's)."""
    if scheme != "wss":
        return PLAIN
    if upstream.kind != "wss":  # wss:// that set-backend-service made of a ws:// upstream
        return TlsSettings(tls=True)
    own = host_and_port(split_url(upstream.url)) == (host, port)
    return TlsSettings(
        tls=True,
        verify=upstream.verify_tls or not own,
        ca_bundle=upstream.ca_bundle,
        client_certificate=upstream.client_certificate if own else None,
    )


def client_context(settings: TlsSettings) -> ssl.SSLContext | None:
    """A client context for ``settings`` (None without TLS); reads ``ca_bundle`` (or the system's store)
    and the client certificate's files.

    Raises:
        OSError: a file cannot be read (``ssl.SSLError``: not what it should hold).
        CertificateProblem: the client certificate cannot be loaded (its words quote no secret).
    """
    if not settings.tls:
        return None
    context = ssl.create_default_context(cafile=settings.ca_bundle)
    context.hostname_checks_common_name = False  # names are subjectAltNames only (RFC 9525), as browsers read them
    if not settings.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if settings.client_certificate is not None:
        load_client_certificate(context, settings.client_certificate)
    return context


_CONTEXTS = 256
"""Contexts kept (:func:`shared_context`): configured settings, a few per upstream; emptied when full."""
_shared: dict[tuple[TlsSettings, tuple[object, ...]], ssl.SSLContext | None] = {}


def shared_context(settings: TlsSettings) -> ssl.SSLContext | None:
    """:func:`client_context` made once for ``settings`` and the files it reads as they are now.

    Making one reads and parses the CAs and loads the client certificate (a private key's signature
    check, a passphrase's key derivation): every upstream, connector and API with the same settings
    shares it. A file changed since (replaced: another inode; rewritten: another size, modification or
    change time) makes it again, so a configuration applied after a certificate's rotation presents the
    new one.
    """
    key = (settings, _stamps(settings))
    if key not in _shared:
        remember(_shared, key, client_context(settings), _CONTEXTS)
    return _shared[key]


def _stamps(settings: TlsSettings) -> tuple[object, ...]:
    if not settings.tls:
        return ()
    paths: list[str | None] = [settings.ca_bundle or ssl.get_default_verify_paths().cafile]
    if settings.client_certificate is not None:
        paths += [settings.client_certificate.cert, settings.client_certificate.key]
    return tuple(_stamp(path) for path in paths)


def _stamp(path: str | None) -> tuple[int, ...] | None:
    if path is None:
        return None
    try:
        found = os.stat(path)
    except OSError:
        return None
    # ctime too: ``cp -p`` or ``rsync -t`` set the modification time back, and no one sets the change time
    return found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns, found.st_ctime_ns


class TlsMismatch(HandshakeDenied):
    """A connection was about to open whose TLS does not match its URL's scheme: refused, never sent."""

    def __init__(self, label: str, scheme: str) -> None:
        what = "without TLS" if scheme == "wss" else "with TLS"
        super().__init__(500, f"{label}: a {scheme}:// connection was about to open {what}; refused",
                         reason="misconfigured")  # fmt: skip


def checked(label: str, scheme: str, context: ssl.SSLContext | None) -> ssl.SSLContext | None:
    """``context``, when it matches ``scheme`` (``wss`` ⇔ a context).

    Raises:
        TlsMismatch: it does not (500): nothing is sent in clear text that was meant for TLS.
    """
    if (scheme == "wss") != (context is not None):
        raise TlsMismatch(label, scheme)
    return context


_ADDRESSES = 256
"""Other addresses an upstream's connections went to whose context is remembered."""


class UpstreamTls:
    """The TLS contexts of one upstream's connections, each made once, chosen by each connection's URL.

    Those that read the upstream's ``ca_bundle`` and client certificate (its own host's, and the
    verified one for other hosts) are taken at once (:func:`shared_context`), so that a changed file is
    read when the configuration is applied; the system store's only when a connection first needs it.
    """

    def __init__(self, upstream: UpstreamConfig) -> None:
        self.upstream = upstream
        self._label = upstream.label  # a property that parses the URL: once
        self._contexts: dict[TlsSettings, ssl.SSLContext | None] = {PLAIN: None}
        self._own = _scheme_host_port(split_url(upstream.url)) if upstream.kind != "asgi" else None
        self._own_context: ssl.SSLContext | None = None  # what nearly every connection takes: no lookup
        self._elsewhere: dict[tuple[str, str, int], ssl.SSLContext | None] = {}
        if self._own is not None and upstream.kind == "wss":
            own = connection_tls(upstream, *self._own)
            for settings in {own, TlsSettings(tls=True, ca_bundle=upstream.ca_bundle)}:
                self._contexts[settings] = shared_context(settings)
            self._own_context = self._contexts[own]

    def label(self, scheme: str, host: str, port: int) -> str:
        """The upstream's label for log lines and errors, naming where the connection goes when a
        ``set-backend-service`` sent it elsewhere (``ws://a:80/x (to wss://b:443)``)."""
        if (scheme, host, port) == self._own:
            return self._label
        shown = f"[{host}]" if ":" in host else host
        return f"{self._label} (to {scheme}://{shown}:{port})"

    def context(self, scheme: str, host: str, port: int) -> ssl.SSLContext | None:
        """The context of a connection to ``scheme://host:port`` (None for ``ws://``).

        Raises:
            HandshakeDenied: 500 (``misconfigured``) when the system's trust store cannot be loaded.
        """
        address = (scheme, host, port)
        if address == self._own:
            return self._own_context
        if address in self._elsewhere:  # a few hosts a set-backend-service picks (a claim may: bounded)
            return self._elsewhere[address]
        settings = connection_tls(self.upstream, scheme, host, port)
        if settings not in self._contexts:
            try:
                self._contexts[settings] = shared_context(settings)
            except OSError as exc:  # ssl.SSLError too: the gateway's own, not the backend's
                raise HandshakeDenied(500, f"{self._label}: the TLS trust store cannot be loaded: {exc}",
                                      reason="misconfigured") from None  # fmt: skip
        remember(self._elsewhere, address, self._contexts[settings], _ADDRESSES)
        return self._contexts[settings]


def _scheme_host_port(url: SplitResult) -> tuple[str, str, int]:
    return (url.scheme, *host_and_port(url))


__all__ = [
    "PLAIN",
    "TlsMismatch",
    "TlsSettings",
    "UpstreamTls",
    "checked",
    "client_context",
    "connection_tls",
    "shared_context",
]
