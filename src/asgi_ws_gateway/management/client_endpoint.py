"""Where and how :class:`~.client.ManagementClient` (and ``connect``) may send the admin token: the
base URL, the token itself and the certificates trusted, each checked before anything is sent.

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
    if token and parts.scheme == "http" and not is_loopback_host(host) and not allow_insecure_http:
        raise EndpointProblem(
            f"refusing to send the admin token over plain http to {host}, beyond this host: {INSECURE_HTTP_HINT}"
        )
    return base_url.rstrip("/") + "/"


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


__all__ = ["INSECURE_HTTP_HINT", "EndpointProblem", "checked_base_url", "tls_context", "token_problem"]
