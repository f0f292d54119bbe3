"""Which parts of an ``asgi-ws-gateway connect`` handshake are credentials, and whether they may go to
the URL given: over plain ``ws://`` to a host beyond this one they are refused, unsent, unless
``--allow-insecure-http`` (:func:`.client_endpoint.refuse_in_clear`, the management commands' rule).

A credential is what the gateway's redaction takes for one (:mod:`asgi_ws_gateway.redact`): a header
so named (``Authorization``, ``Cookie``, ``X-Api-Key``, any name with ``token``, ``key``, ``auth``...)
an ``-s`` offer carrying a token (``bearer.<token>``: a token source of ``validate-jwt``), a query parameter so
named (``access_token``, ``sig``, ``password``...), the URL's ``user:password@`` (sent as Basic
authorization), and any value shaped like one wherever it is (a JWT, ``Bearer ...``,
``token=...``), the path included. Each is named, never quoted.

Each input is read before anything is sent (:func:`read_header`, :func:`read_subprotocol`,
:func:`read_url`, :func:`read_header_name`, :func:`read_header_value`): a ``ValueError`` names what is
wrong and never quotes the input (a header's value, an offer, a URL's query or userinfo may be the
credential), so ``connect`` exits 2 with a clear message instead of a traceback that quoted it.
"""

from __future__ import annotations

import argparse
import re
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import unquote

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
    from websockets.exceptions import InvalidURI  # websockets (~20 ms): read once the command is connect
    from websockets.uri import parse_uri

    try:
        target = parse_uri(url)
    except InvalidURI:  # websockets refuses it too: nothing is sent
        return
    found = [*named, *_in_url(target.path, target.query, target.user_info is not None)]
    found += [f"header {printable(name)}" for name, value in headers if is_credential_header(name) or _shaped(value)]
    found += [f"the {ordinal(i)} -s" for i, offer in enumerate(subprotocols, 1) if token_offer(offer)]
    if found:
        scheme = "wss" if target.secure else "ws"
        refuse_in_clear(scheme, target.host, ", ".join(found), allowed=allow_insecure_http)


def _in_url(path: str, query: str, user_info: bool) -> list[str]:
    found = ["the URL's user:password@"] if user_info else []
    if _shaped(unquote(path)):
        found.append("the URL's path")
    for item in query.split("&"):
        name, eq, value = item.partition("=")
        name, value = unquote(name.replace("+", " ")), unquote(value.replace("+", " "))
        if eq and (is_credential_parameter(name) or _shaped(value)):
            found.append(f"query parameter {printable(name)}")
        elif not eq and item and (is_credential_parameter(name) or _shaped(name)):
            found.append("a query item without a name")  # the item is the value: not quoted
    return found


def token_offer(offer: str) -> bool:
    """Whether a subprotocol offer carries a token (``bearer.<token>``, Kubernetes'
    ``base64url.bearer.authorization.k8s.io.<token>``, ``access_token.<token>``, a JWT):
    ``validate-jwt`` reads one from a prefix; ``chat.v1`` or ``graphql-ws`` is no credential."""
    labels = offer.lower().split(".")
    return _shaped(offer) or "bearer" in labels or is_credential_parameter(labels[0])


def _shaped(value: str) -> bool:
    """Whether ``value`` holds what a log line would not show: a JWT, ``Bearer ...``, ``token=...``."""
    return redact_free_text(value) != value


# RFC 9110's token: what a header's name and a subprotocol are made of (websockets checks them alike).
_TOKEN = re.compile(r"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
_TOKEN_TEXT = "letters, digits and !#$%&'*+-.^_`|~ only"
# What a header's value may hold as websockets writes it (Latin-1): no line break, no other control.
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
_NOT_IN_A_HEADER = "a header cannot carry (a line break, a control or a non-Latin-1 character)"
_URL_CHARACTERS = re.compile(r"[^\x00-\x20\x7f]*")


def read_header(text: str) -> tuple[str, str]:
    """``-H 'Name: value'`` as a header; a ``ValueError`` that quotes neither."""
    name, colon, value = text.partition(":")
    if not colon:
        raise ValueError("not 'Name: value' (no colon; quote a value with spaces: -H 'Name: value')")
    if not _TOKEN.fullmatch(name.strip()):
        raise ValueError(f"no header name before the colon ({_TOKEN_TEXT})")
    if not _HEADER_VALUE.fullmatch(value.strip()):
        raise ValueError(f"a value {_NOT_IN_A_HEADER}")
    return name.strip(), value.strip()


def read_header_name(name: str) -> str:
    """``--key-header``: a header's name; a ``ValueError`` that does not quote it."""
    if not _TOKEN.fullmatch(name):
        raise ValueError(f"not a header name ({_TOKEN_TEXT})")
    return name


def read_header_value(value: str) -> str:
    """``--subscription-key``: what a header can carry; a ``ValueError`` that does not quote it."""
    if not _HEADER_VALUE.fullmatch(value):
        raise ValueError(f"a value {_NOT_IN_A_HEADER}")
    return value


def read_subprotocol(offer: str) -> str:
    """``-s OFFER``: one subprotocol (``chat.v1``, ``bearer.<token>``); a ``ValueError`` that does not quote it."""
    if not _TOKEN.fullmatch(offer):
        raise ValueError(f"not one subprotocol ({_TOKEN_TEXT}; no space, no comma: one offer per -s)")
    return offer


def read_url(url: str) -> str:
    """``connect``'s URL, checked as ``websockets`` reads it; a ``ValueError`` naming what is wrong, never
    quoting the URL (its query or userinfo may be the credential)."""
    if not _URL_CHARACTERS.fullmatch(url):
        raise ValueError("a space, a line break or a control character in it: percent-encode it")
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        raise ValueError("unbalanced [ ] around an IPv6 address") from None
    try:
        parts.port  # noqa: B018 - read to be checked: a port out of range or not a number raises
    except ValueError:
        raise ValueError("an invalid port (a number from 1 to 65535)") from None
    if parts.scheme not in ("ws", "wss"):
        raise ValueError("not a ws:// or wss:// URL")
    if not parts.hostname:
        raise ValueError("no host")
    if parts.fragment:
        raise ValueError("a #fragment, which a WebSocket URL cannot have")
    if parts.username is not None and parts.password is None:
        raise ValueError("a user name without a password (user:password@ is sent as Basic authorization)")
    from websockets.exceptions import InvalidURI  # as refuse_credentials_in_clear: the URL given, the command connect
    from websockets.uri import parse_uri

    try:
        parse_uri(url)
    except (InvalidURI, ValueError):  # UnicodeError too: a host no IDNA encodes, a userinfo not UTF-8
        raise ValueError("not a URL websockets can connect to (its host, or its user:password@)") from None
    return url


class ConnectParser(argparse.ArgumentParser):
    """``connect``'s parser: an argument it does not take is an error that does not quote it. ``-H
    Authorization: Bearer TOKEN``, unquoted, left ``Bearer TOKEN`` over, and argparse's "unrecognized
    arguments" repeated it."""

    def parse_known_args(  # type: ignore[override]  # typeshed's overloads; argparse calls it so
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(
                f"{len(extras)} argument(s) it does not take, not shown (one may be a credential; "
                "a value with spaces needs quotes: -H 'Name: value')"
            )
        return parsed, extras


class EachRead(argparse.Action):
    """A repeatable option whose every value ``read`` checks: its ``ValueError`` is exit 2 naming which one
    (``argument -H/--header: the 2nd: ...``), never quoting it."""

    def __init__(self, *args: Any, read: Callable[[str], Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read = read

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: str | None = None
    ) -> None:
        items = list(getattr(namespace, self.dest, None) or [])
        try:
            items.append(self.read(str(values)))
        except ValueError as exc:
            raise argparse.ArgumentError(self, f"the {ordinal(len(items) + 1)}: {exc}") from None
        setattr(namespace, self.dest, items)


def read_as(read: Callable[[str], str]) -> Callable[[str], str]:
    """An argparse ``type`` of ``read``: its ``ValueError`` said as it is, not as argparse's own "invalid
    value: '...'", which quotes the argument."""

    def check(text: str) -> str:
        try:
            return read(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    check.__name__ = read.__name__
    return check


def ordinal(number: int) -> str:
    """``1st``, ``2nd``, ``3rd``, ``4th``, ``11th``, ``21st``: which of a repeated option."""
    suffix = "th" if 10 <= number % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{suffix}"


__all__ = [
    "ConnectParser",
    "EachRead",
    "ordinal",
    "read_as",
    "read_header",
    "read_header_name",
    "read_header_value",
    "read_subprotocol",
    "read_url",
    "refuse_credentials_in_clear",
    "token_offer",
]
