"""Which parts of an ``asgi-ws-gateway connect`` handshake are credentials, and whether they may go to
the URL given: over plain ``ws://`` to a host beyond this one they are refused, unsent, unless
``--allow-insecure-http`` (:func:`.client_endpoint.refuse_in_clear`, the management commands' rule).

A credential is what the gateway's redaction takes for one (:mod:`asgi_ws_gateway.redact`): a header
so named (``Authorization``, ``Cookie``, ``X-Api-Key``, any name with ``token``, ``key``, ``auth``...)
an ``-s`` offer carrying a token (``bearer.<token>``: a token source of ``validate-jwt``), a query parameter so
named (``access_token``, ``sig``, ``password``...), the URL's ``user:password@`` (sent as Basic
authorization), and any value shaped like one wherever it is (a JWT, ``Bearer ...``,
``token=...``), the path included. Each is named, never quoted.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import parse_qsl, unquote

from websockets.exceptions import InvalidURI
from websockets.uri import parse_uri

from ..redact import is_credential_header, is_credential_parameter, printable, redact_free_text
from .client_endpoint import refuse_in_clear


def refuse_credentials_in_clear(
    url: str,
    *,
    headers: Sequence[tuple[str, str]] = (),
    subprotocols: Sequence[str] = (),
    named: Sequence[str] = (),
    allow_insecure_http: bool = False,
) -> None:
    """Refuse a handshake to ``url`` that would carry a credential in clear beyond this host.

    Args:
        url: the ``ws://`` or ``wss://`` URL, read as ``websockets`` reads it (the host it connects to).
        headers: the ``-H`` headers, found to be credentials by name or value.
        subprotocols: the ``-s`` offers, a credential when one carries a token (``bearer.<token>``, a JWT).
        named: the credentials the caller knows it sends (``--token``, ``--subscription-key``).
        allow_insecure_http: send them anyway.

    Raises:
        EndpointProblem: refused: the message names what would have been sent and ``--allow-insecure-http``.
    """
    try:
        target = parse_uri(url)
    except InvalidURI:  # websockets refuses it too: nothing is sent
        return
    found = [*named, *_in_url(target.path, target.query, target.user_info is not None)]
    found += [f"header {printable(name)}" for name, value in headers if is_credential_header(name) or _shaped(value)]
    found += [f"-s {printable(offer.partition('.')[0])}" for offer in subprotocols if _token_offer(offer)]
    if found:
        scheme = "wss" if target.secure else "ws"
        refuse_in_clear(scheme, target.host, ", ".join(found), allowed=allow_insecure_http)


def _in_url(path: str, query: str, user_info: bool) -> list[str]:
    found = ["the URL's user:password@"] if user_info else []
    if _shaped(unquote(path)):
        found.append("the URL's path")
    for name, value in parse_qsl(query, keep_blank_values=True):
        if is_credential_parameter(name) or _shaped(value):
            found.append(f"query parameter {printable(name)}")
    return found


def _token_offer(offer: str) -> bool:
    """Whether a subprotocol offer carries a token (``bearer.<token>``, Kubernetes'
    ``base64url.bearer.authorization.k8s.io.<token>``, ``access_token.<token>``, a JWT):
    ``validate-jwt`` reads one from a prefix; ``chat.v1`` or ``graphql-ws`` is no credential."""
    labels = offer.lower().split(".")
    return _shaped(offer) or "bearer" in labels or is_credential_parameter(labels[0])


def _shaped(value: str) -> bool:
    """Whether ``value`` holds what a log line would not show: a JWT, ``Bearer ...``, ``token=...``."""
    return redact_free_text(value) != value


__all__ = ["refuse_credentials_in_clear"]
