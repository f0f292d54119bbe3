"""The changes policies make to the upstream request (:class:`UpstreamEdits`: headers, query parameters,
a rewritten path, another backend, a subprotocol dropped), recorded once and replayed for each backend
tried."""

from __future__ import annotations

import re
from collections.abc import Callable
from operator import itemgetter
from typing import Literal
from urllib.parse import parse_qsl, quote, urlencode, urlunsplit

from ..bounded import split_url
from ..errors import HandshakeDenied
from ..param_names import spelled_as
from ..upstream.base import UpstreamRequest

ExistsAction = Literal["override", "skip", "append", "delete"]


class UpstreamEdits:
    """Changes to the upstream request, recorded by policies and replayed for each backend tried."""

    def __init__(self) -> None:
        self._ops: list[tuple[str, str, str | None, ExistsAction]] = []

    def __bool__(self) -> bool:
        return bool(self._ops)

    def set_header(self, name: str, value: str | None, action: ExistsAction = "override") -> None:
        """Set, append, keep (``skip``) or remove (``delete``, or ``value=None``) a request header.

        Raises:
            ValueError: for ``Via``: the gateway's entry in it, and the hops before, are how it detects
                a forwarding loop (an API proxied to itself whose policy removed it nested handshakes
                until the worker's file descriptors ran out).
        """
        if name.lower() == "via":
            raise ValueError(
                "no policy may change or remove the Via header: the gateway detects forwarding loops by it"
            )
        self._ops.append(("header", name.lower(), _clean(value), "delete" if value is None else action))

    def remove_header(self, name: str) -> None:
        self.set_header(name, None)

    def set_query(self, name: str, value: str | None, action: ExistsAction = "override") -> None:
        """Set, append, keep (``skip``) or remove (``delete``, or ``value=None``) a query parameter; every
        spelling of ``name`` a server may read as it counts as it (:func:`.names.fold_name`)."""
        self._ops.append(("query", name, value, "delete" if value is None else action))

    def remove_query(self, name: str) -> None:
        self.set_query(name, None)

    def rewrite(self, target: str, *, copy_unmatched_params: bool = True) -> None:
        """Replace the upstream path (and, if ``target`` has one, set its query parameters)."""
        self._ops.append(("rewrite", target, None, "override" if copy_unmatched_params else "delete"))

    def set_base_url(self, base_url: str, *, picked: bool = True) -> None:
        """Send the connection to ``ws[s]://host[:port][/prefix]`` instead; the path is kept.

        ``picked``: a handshake value (a claim, a header, ...) chose the host or port, so it reaches the
        gateway's own host (loopback) only where ``upstream_networks.allow`` names it. Default True:
        code may build the URL from anything; pass False for a host the code itself fixes.
        """
        self._ops.append(("base", base_url, _PICKED if picked else None, "override"))

    def remove_subprotocol(self, value: str) -> None:
        self._ops.append(("subprotocol", value, None, "delete"))

    def apply(self, request: UpstreamRequest, *, in_process: bool = False) -> UpstreamRequest:
        """``request`` with every recorded change applied, in order.

        Raises:
            HandshakeDenied: 500 when a base URL is set for an in-process upstream (a misconfiguration).
        """
        if not self._ops:
            return request
        headers = list(request.headers)  # this request's own copy, edited in place
        subprotocols = request.subprotocols
        edits_url = False
        for kind, name, value, action in self._ops:
            if kind == "header":
                _edit_header(headers, name, value, action)
            elif kind == "subprotocol":
                subprotocols = [p for p in subprotocols if p != name]
            else:
                edits_url = True
                if kind == "base":  # the last base URL set is the host connected to
                    request.picked_host = value is _PICKED
        if edits_url:  # parsed and written again only when changed: header edits keep the URL as built
            request.url = _edited_url(request.url, self._ops, in_process)
        request.headers, request.subprotocols = headers, list(subprotocols)
        return request


def _edited_url(url: str, ops: list[tuple[str, str, str | None, ExistsAction]], in_process: bool) -> str:
    """``url`` with the query, rewrite and base-URL edits among ``ops`` applied, in order."""
    scheme, netloc, path, query, _ = split_url(url)
    # surrogateescape both ways: a client's %ff in a parameter no policy touches goes on as %FF (it
    # was read as U+FFFD and sent as %EF%BF%BD, another value to an upstream that reads bytes).
    params = parse_qsl(query, keep_blank_values=True, errors="surrogateescape")
    for kind, name, value, action in ops:
        if kind == "query":  # every spelling of the name is overridden or removed, not only this one
            params = _edit(params, name, value, action, same=_spelling_of(name))
        elif kind == "rewrite":
            new_path, _, new_query = name.partition("?")
            path = new_path
            template_params = parse_qsl(new_query, keep_blank_values=True, errors="surrogateescape")
            spellings = [spelled_as(n) for n, _ in template_params]
            kept = [(n, v) for n, v in params if not any(s(n) for s in spellings)] if action == "override" else []
            params = template_params + kept
        elif kind == "base":
            if in_process:
                raise HandshakeDenied(500, "set-backend-service cannot redirect an in-process upstream",
                                      reason="misconfigured")  # fmt: skip
            base = split_url(name)
            scheme, netloc = base.scheme, base.netloc
            path = base.path.rstrip("/") + path
    query = urlencode(params, quote_via=quote, safe="/:@!$'()*,", errors="surrogateescape")  # no ";"
    return urlunsplit((scheme, netloc, path, query, ""))


_PICKED = "picked"
"""A base-URL edit's mark: a handshake value picked its host or port."""

_NAME = itemgetter(0)
"""A header's or a parameter's name in its ``(name, value)`` pair."""

_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
"""The control characters a header value may not carry (the tab may): C1 ones too, which Latin-1
writes as the bytes 0x80-0x9F and readers splitting with Python's ``str.splitlines`` take for a line
break (U+0085, NEL)."""


def _clean(value: str | None) -> str | None:
    """No control characters in a header value: a claim must not be able to inject a header."""
    if value is None or value.isprintable():  # no control character (the usual claim): checked in C
        return value
    return _CONTROL.sub("", value)


def _spelling_of(name: str) -> Callable[[str, str], bool]:
    """``_edit``'s test for a parameter: the client's names that spell the configured ``name``."""
    spelling = spelled_as(name)
    return lambda sent, _configured: spelling(sent)


def _edit_header(headers: list[tuple[str, str]], name: str, value: str | None, action: ExistsAction) -> None:
    """:func:`_edit` of a header, on a list of the request's own: changed in place (no copy of it per edit)."""
    if action != "append" and name in map(_NAME, headers):  # looked for in C; filtered only when it is there
        if action == "skip":
            return
        headers[:] = [item for item in headers if item[0] != name]
    if action != "delete":
        assert value is not None
        headers.append((name, value))


def _edit(
    items: list[tuple[str, str]],
    name: str,
    value: str | None,
    action: ExistsAction,
    same: Callable[[str, str], bool] = str.__eq__,
) -> list[tuple[str, str]]:
    if action == "append":
        assert value is not None
        return [*items, (name, value)]
    if same is str.__eq__:  # a header's name: looked for in C, and the list filtered only when it is there
        present = name in map(_NAME, items)
        if action == "skip" and present:
            return items
        kept = [item for item in items if item[0] != name] if present else [*items]
    else:
        if action == "skip" and any(same(item[0], name) for item in items):
            return items
        kept = [item for item in items if not same(item[0], name)]
    if action != "delete":
        assert value is not None
        kept.append((name, value))
    return kept


__all__ = ["UpstreamEdits"]
