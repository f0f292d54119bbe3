"""The upstream request, Sans-I/O: URL templates, the client's subprotocol offer, the request a connector opens."""

from __future__ import annotations

from urllib.parse import parse_qsl, quote, unquote_plus

from .._types import Scope
from ..config.apis import ApiConfig, UpstreamConfig
from ..config.fields import is_token
from ..errors import HandshakeDenied
from ..forwarded import Networks
from ..param_names import spelled_as
from ..routing import matched_segments
from .base import UpstreamRequest
from .headers import ForwardedHeader, upstream_headers

# What stays as is in a path segment and in a query string; everything else is percent-encoded.
_SEGMENT_SAFE = "-._~!$&'()*+,;=:@"
_QUERY_SAFE = "-._~!$&'()*+,=:@/?%"
"""A query's safe characters: not ``;``, which the gateway reads as part of a value (``parse_qsl``)
and some upstream parsers as a separator (Rack 2, Go before 1.17, Python before 3.10): encoded, a
``?x=1;access_token=...`` is one parameter to every reader, as the gateway's policies saw it."""


def fill_template(template: str, params: dict[str, str]) -> str:
    """Substitute ``{name}`` placeholders with percent-encoded path parameter values.

    Every character that could end the segment (``/``, ``?``, ``#``, ``%``, ``\\``) is encoded;
    values that would be a dot segment are refused earlier (``upstream.checks.check_path_params``).
    """
    for name, value in params.items():
        template = template.replace("{" + name + "}", quote(value, safe=""))
    return template


def with_query(url: str, query: bytes) -> str:
    """``url`` with the client's query string appended; bytes a URL cannot carry are percent-encoded.

    A parameter ``url`` sets itself (``ws://chat/?room={room}``, ``?tenant=acme``) is the operator's:
    the client's copies of it, in every spelling a server reads as its name (:mod:`.param_names`:
    ``ROOM``, ``r%6Fom``, ``room[]``), are dropped, as ``set-query-parameter`` and ``rewrite-uri`` drop
    them. Appended after it, ``/ws/chat/lobby?room=staff`` reached the upstream as
    ``/chat?room=lobby&room=staff``, and frameworks that read the last copy read ``staff``, a room
    the policies, which saw the path parameter ``lobby``, never checked.
    """
    if not query:
        return url
    own = url.partition("?")[2]
    if own:
        spellings = [spelled_as(name) for name, _ in parse_qsl(own, keep_blank_values=True)]
        if spellings:
            sent = query.split(b"&")
            kept = [part for part in sent if not any(s(_sent_name(part)) for s in spellings)]
            if len(kept) != len(sent):
                query = b"&".join(part for part in kept if part)
                if not query:
                    return url
    return f"{url}{'&' if '?' in url else '?'}{quote(query, safe=_QUERY_SAFE)}"


def _sent_name(part: bytes) -> str:
    """A query parameter's name as servers read it: decoded once, ``+`` a space (as ``parse_qsl``)."""
    return unquote_plus(part.partition(b"=")[0].decode("latin-1"), errors="surrogateescape")


def request_path(scope: Scope, pattern: str) -> str:
    """The client's path as the API at ``pattern`` matched it (less the root path it was routed under),
    percent-encoded segment by segment as it was split for routing."""
    return "/" + "/".join(quote(part, safe=_SEGMENT_SAFE) for part in matched_segments(scope, pattern))


def build_request(
    api: ApiConfig,
    upstream: UpstreamConfig,
    scope: Scope,
    params: dict[str, str],
    *,
    trust_forwarded: bool = False,
    trusted_proxies: Networks | None = None,
    forwarded_header: ForwardedHeader = "x-forwarded-for",
    subprotocols: list[str] | None = None,
) -> UpstreamRequest:
    """The upstream request for ``upstream``, before the policies' edits.

    ``subprotocols`` is the client's offer as :func:`offered_subprotocols` read it (read from
    ``scope`` when None).

    Raises:
        HandshakeDenied: 400 (``bad_request``) for an offer that is not a list of tokens.
    """
    query = scope.get("query_string", b"") if api.forward_query else b""
    if upstream.kind == "asgi":
        url = with_query(fill_template(upstream.path or request_path(scope, api.path), params), query)
    else:
        url = with_query(fill_template(upstream.url, params), query)
    return UpstreamRequest(
        url=url,
        headers=upstream_headers(
            scope, trust_forwarded=trust_forwarded, trusted_proxies=trusted_proxies, forwarded_header=forwarded_header
        ),
        subprotocols=list(offered_subprotocols(scope) if subprotocols is None else subprotocols),
        scope=scope,
        path_params=params,
    )


_OWS = " \t"


def offered_subprotocols(scope: Scope) -> list[str]:
    """The subprotocols the client offers: the one reading of ``Sec-WebSocket-Protocol`` that the
    policies (``RequestView.subprotocols``) and every connector's upstream request share.

    The header is ``1#token`` (RFC 6455 §4.1): its lines' elements, in order, each without the blanks
    around it; an empty element is ignored (RFC 9110 §5.6.1: ``chat, ``, ``, chat``, ``chat,,v2``)
    and a repeated one kept once. Read from the header lines as sent (servers differ:
    uvicorn keeps the empty elements in ``scope["subprotocols"]``), else from ``scope["subprotocols"]``.

    Raises:
        HandshakeDenied: 400 (``bad_request``) for an element that is not a token (``v 2``,
            ``"x"``, a control character). Before, the relay's client library refused to send it: a
            500 and a traceback in the log for each such handshake; the splice sent it on.
    """
    listed = scope.get("subprotocols")
    if listed is not None and not listed:  # none offered: servers list every header line's elements
        return []
    values = [value.decode("latin-1") for name, value in scope.get("headers", ()) if name.lower() == _PROTOCOL]
    offered: dict[str, None] = {}
    for value in values or listed or ():
        for element in value.split(","):
            element = element.strip(_OWS)
            if not element:
                continue
            if is_token(element) is None:
                raise bad_request(_not_a_token(element))
            offered[element] = None
    return list(offered)


_PROTOCOL = b"sec-websocket-protocol"


def _not_a_token(element: str) -> str:
    """What is wrong with ``element``, naming its first wrong character only (a token may be a credential)."""
    wrong = next(c for c in element if is_token(c) is None)
    return (f"Sec-WebSocket-Protocol offers a subprotocol with the character {wrong!a}: each subprotocol "
            "must be a token (RFC 6455 §4.1), no blanks, quotes, separators or control characters in it")  # fmt: skip


def bad_request(detail: str) -> HandshakeDenied:
    """A 400 for an upstream request the client's values made unsendable (never a backend failure)."""
    return HandshakeDenied(400, detail, reason="bad_request")


__all__ = [
    "bad_request",
    "build_request",
    "offered_subprotocols",
]
