"""Where and how :class:`~.client.ManagementClient` (and ``connect``) may send the admin token: the
base URL, the token itself and the certificates trusted, each checked before anything is sent; and
the one rule for both: no credential in clear beyond this host (:func:`refuse_in_clear`).

Every error here describes the problem without quoting the secret: a base URL's userinfo, or the
token (an exception's text ends up in a terminal, a CI log, a bug report).
"""

from __future__ import annotations

import ssl
from urllib.parse import SplitResult, urlsplit

from ..forwarded import is_loopback_host

INSECURE_HTTP_HINT = "use https://, or allow plain http explicitly (--allow-insecure-http, allow_insecure_http=True)"


class EndpointProblem(ValueError):
    """A base URL, token or CA file the client cannot use: why, without the secret."""


def checked_base_url(base_url: str, *, token: bool, allow_insecure_http: bool) -> str:
    """``base_url`` with one trailing ``/``, once it is one the admin token may be sent to.

    Refused: not ``http`` or ``https``; a query or fragment (the paths are appended after it: the
    gateway answered ``?tenant=a/apis/x`` with a redirect to its console); userinfo (it replaced the
    Bearer token with Basic authentication); plain ``http`` to a host beyond this one with a token,
    unless ``allow_insecure_http`` (anyone on the path reads the token).
    """
    parts = _split(base_url)
    if parts.scheme not in ("http", "https"):
        raise EndpointProblem("the management API URL must start with http:// or https://")
    if "@" in parts.netloc:
        raise EndpointProblem(
            "the management API URL must not hold a user or password (user:password@): "
            "the admin token is the API's credential (--token-file or $ASGI_WS_GATEWAY_ADMIN_TOKEN)"
        )
    if parts.query or parts.fragment or base_url.rstrip("/").endswith(("?", "#")):
        raise EndpointProblem("the management API URL must not have a query (?...) or fragment (#...)")
    host = _host(parts)
    if not host:
        raise EndpointProblem("the management API URL has no host")
    if token:
        refuse_in_clear(parts.scheme, host, "the admin token", allowed=allow_insecure_http)
    return base_url.rstrip("/") + "/"


def refuse_in_clear(scheme: str, host: str, credentials: str, *, allowed: bool) -> None:
    """Refuse to send ``credentials`` (what they are, never their value) by ``scheme`` to ``host`` when
    anyone on the path would read them: ``http`` or ``ws`` to a host beyond this one, unless ``allowed``
    (``--allow-insecure-http``).

    This host is ``localhost`` or a loopback address (``127.0.0.0/8``, ``::1``, ``::ffff:127.0.0.1``), as
    :func:`~asgi_ws_gateway.forwarded.is_loopback_host` reads them, strictly: ``localhost.``,
    ``foo.localhost``, ``127.1``, ``0x7f.1``, ``2130706433``, ``0.0.0.0`` (which the resolver may take
    to this host) and names whose DNS answer is 127.0.0.1 (``127.0.0.1.nip.io``) are beyond it: what
    a resolver makes of a name, or a lenient parser of a number, is not this check's to guess.

    Raises:
        EndpointProblem: refused; the message names ``--allow-insecure-http``.
    """
    if allowed or scheme not in _CLEARTEXT or is_loopback_host(host):
        return
    hint = INSECURE_HTTP_HINT if scheme == "http" else _INSECURE_WS_HINT
    raise EndpointProblem(f"refusing to send {credentials} over plain {scheme} to {host}, beyond this host: {hint}")


_CLEARTEXT = frozenset({"http", "ws"})
_INSECURE_WS_HINT = "use wss://, or allow plain ws explicitly (--allow-insecure-http)"


def _split(url: str) -> SplitResult:
    try:
        return urlsplit(url)
    except ValueError:  # an unclosed [ (its text, which may hold a password, is not quoted)
        raise EndpointProblem("the management API URL is not a valid URL") from None


def _host(parts: SplitResult) -> str | None:
    try:
        parts.port  # noqa: B018  (read to check it: a password with "/" made the rest a "port")
    except ValueError:
        raise EndpointProblem("the management API URL's port is not a number from 0 to 65535") from None
    return parts.hostname


def token_problem(token: str) -> str | None:
    """Why ``token`` cannot be sent as ``Authorization: Bearer``, if it cannot: the rule of the gateway's
    own check (``admin_auth.admin_token_problem`` asks this one: visible ASCII, not empty), said without
    the token.

    A token read from a file or a Kubernetes secret often keeps its final newline: named as such.
    """
    if not token:
        return "the admin token is empty"
    for index, character in enumerate(token):
        if "!" <= character <= "~":
            continue
        where = "at its end" if index == len(token) - 1 else f"at character {index + 1} of {len(token)}"
        what = {"\n": "a newline", "\r": "a carriage return", " ": "a space", "\t": "a tab"}.get(
            character, "a non-ASCII character" if ord(character) > 127 else "a control character"
        )
        hint = " (a file's final line break? strip it)" if character in "\r\n" else ""
        return f"the admin token has {what} {where}{hint}: a header can carry visible ASCII characters only"
    return None


def tls_context(cafile: str | None) -> ssl.SSLContext:
    """Verification against the system's CAs, or against ``cafile``'s (a private CA) instead.

    Raises:
        EndpointProblem: ``cafile`` cannot be read as PEM certificates.
    """
    if cafile is None:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise EndpointProblem(f"{cafile}: not a readable file of PEM certificates ({type(exc).__name__})") from None


__all__ = [
    "INSECURE_HTTP_HINT",
    "EndpointProblem",
    "checked_base_url",
    "refuse_in_clear",
    "tls_context",
    "token_problem",
]
