"""What the policies an API runs make of it that is valid but probably not meant: start-up warnings.

A token read from a cookie needs an Origin check. A browser sends a site's cookies with a WebSocket
handshake whatever page opens it, and WebSockets are not held to the same-origin policy: a page on any
site can open a connection as the signed-in user (cross-site WebSocket hijacking). docs/policies.md
says a cookie token must be combined with ``check-origin``; an API that did not was valid and silent
(an attack pass: 101 for ``Origin: https://evil.example`` and for ``Origin: null``, with the victim's
cookie).

A ``set-backend-service`` to ``ws://`` on an API whose upstreams are ``wss://`` sends the handshake, and
whatever the policies put in it (a credential header), in clear text: the URL decides (upstream/tls.py),
so it is what the file says, but rarely what was meant.

A limit keyed by a value the client chooses (``{header.x-tenant}``) gets a fresh counter per value, unless
a list check bounds the value before it: whether one does depends on the policies each client runs
before the limit, so it is said here, per API, not by the limit alone (which warned with a list check
in front of it, the very advice it gave).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from urllib.parse import unquote_plus

from ..handshake.pipeline import Policy
from ..redact import is_credential_header, is_credential_parameter
from ..templates import Reference, Template
from ..upstream.proxy_headers import is_proxy_header
from .admissions import Admission
from .auth import CheckHeader, ValidateJwt
from .base import Loc, client_chosen, loc_text
from .control import Choose
from .limits import QuotaByKey, RateLimitByKey
from .message_rates import RateLimitMessages
from .network import CheckOrigin
from .transform import RewriteUri, SetBackendService, SetHeader, SetQueryParameter


def cookie_token_warning(ways: Sequence[Admission], *, key_in_cookie: bool = False) -> str | None:
    """Why an API admits cross-site connections, if it does: for some way a client is admitted
    (``ways``), a built-in policy decides on a cookie (:func:`cookie_readers`; ``key_in_cookie``: the
    subscription key is read from the ``Cookie`` header) and no ``check-origin`` runs unconditionally.

    A ``check-origin`` counts only where it runs for that client: in the global or the API's
    policies, or in the product its key is of (for a client without a key, in one of the open
    products). One product's check is not another's subscribers'."""
    unchecked: list[Admission] = []
    reader: str | None = None
    for way in ways:
        if any(isinstance(policy, CheckOrigin) for policy in way.policies):
            continue
        found = next(iter(cookie_readers(way.policies)), None)
        if found is None and key_in_cookie and way.keyed:
            found = "the subscription key is read from the Cookie header (subscription_key.headers)"
        if found is not None:
            reader = reader or found
            unchecked.append(way)
    if reader is None:
        return None
    if unchecked[0].products:
        where = "no check-origin runs for " + "; ".join(way.describe() for way in unchecked)
        fix = "add check-origin to the global or the API's policies, or to every product of the API"
    else:
        where, fix = "no check-origin always runs for this API", "add check-origin"
    return (
        f"{reader} and {where}: a page on any site can open a connection with the user's cookie "
        f"(cross-site WebSocket hijacking); {fix}"
    )


def cookie_readers(policies: Sequence[Policy]) -> list[str]:
    """What in ``policies`` (and their ``choose`` branches) admits or refuses a client, or hands the
    upstream a credential, by a cookie: a browser sends cookies with any page's handshake.

    The built-in policies that decide on a value: ``validate-jwt`` with a cookie (or the ``Cookie``
    header) among its token places, ``check-header`` of ``Cookie``, a ``choose`` condition on
    ``{cookie.*}`` or ``{header.cookie}``, and a policy that hands the upstream a cookie where it
    decides who the client is by it: a ``set-header`` of a credential (``Authorization: Bearer
    {cookie.token}``) or of a header naming the user (``Remote-User``, ``X-Forwarded-Email``: a proxy's
    header, which the upstream believes), a ``set-query-parameter`` or a ``rewrite-uri`` query
    parameter named as a credential or a user (``access_token``, ``user``), a ``rewrite-uri`` path
    (``/u/{cookie.uid}``) or a ``set-backend-service`` URL. Counting only credential words missed
    ``Remote-User: {cookie.user}``: a page on any site got a 101 and the upstream the victim's name. A
    limit keyed by a cookie decides nothing about who the client is. A custom policy's reads are its
    own: docs/policies.md asks it to bring its own ``check-origin``."""
    found: list[str] = []
    for policy in _every(policies):
        if isinstance(policy, ValidateJwt):
            places = [
                source.cookie or "Cookie" for source, header, _ in policy.sources if source.cookie or header == "cookie"
            ]
            if places:
                found.append(f"validate-jwt '{policy.name}' reads its token from a cookie ({', '.join(places)})")
        elif isinstance(policy, CheckHeader) and policy.settings.header.strip().lower() == "cookie":
            found.append(f"check-header '{policy.name}' checks the Cookie header")
        elif isinstance(policy, Choose):
            refs = [str(c.ref) for conditions, _ in policy.branches for c in conditions if _cookie(c.ref)]
            if refs:
                found.append(f"choose '{policy.name}' decides on a cookie ({{{refs[0]}}})")
        elif isinstance(policy, SetHeader) and policy.action != "delete" and _identity_header(policy.header):
            refs = [str(ref) for ref in policy.value.references if _cookie(ref)]
            if refs:
                found.append(f"set-header '{policy.name}' sends a cookie ({{{refs[0]}}}) upstream as {policy.header}")
        elif isinstance(policy, SetQueryParameter) and policy.action != "delete":
            refs = [str(ref) for ref in policy.value.references if _cookie(ref)]
            if refs and is_credential_parameter(policy.parameter):
                found.append(
                    f"set-query-parameter '{policy.name}' sends a cookie ({{{refs[0]}}}) upstream as {policy.parameter}"
                )
        elif isinstance(policy, RewriteUri | SetBackendService):
            template = policy.template if isinstance(policy, RewriteUri) else policy.base_url
            where = _cookie_in_url(template)
            if where is not None:
                kind = "rewrite-uri" if isinstance(policy, RewriteUri) else "set-backend-service"
                found.append(f"{kind} '{policy.name}' sends a cookie ({{{where[0]}}}) upstream in {where[1]}")
    return found


def _cookie(ref: Reference) -> bool:
    return ref.namespace == "cookie" or (ref.namespace, ref.path) == ("header", ("cookie",))


def _identity_header(name: str) -> bool:
    """Whether an upstream believes a header so named about who the client is: a credential
    (``Authorization``, ``X-Api-Key``), a header of a proxy or an authenticating proxy
    (``Remote-User``, ``X-Forwarded-Email``: :func:`~..upstream.proxy_headers.is_proxy_header`), or one naming
    a user (``X-User-Id``, by the rule that redacts ``user`` query parameters)."""
    return is_credential_header(name) or is_proxy_header(name.strip().lower()) or is_credential_parameter(name)


class _Marks:
    """Every cookie reference of a template as a mark (``\x00`` and its index), any other as missing."""

    def __init__(self, refs: list[Reference]) -> None:
        self.refs = refs

    def lookup(self, namespace: str, path: tuple[str, ...]) -> object | None:
        ref = Reference(namespace, path)
        if not _cookie(ref):
            return None
        self.refs.append(ref)
        return f"\x00{len(self.refs) - 1}\x00"


_MARK = re.compile("\x00([0-9]+)\x00")


def _cookie_in_url(template: Template) -> tuple[str, str] | None:
    """The first cookie reference an upstream URL or path template writes where the upstream decides
    by it (its path, its host, or a credential-like query parameter: ``user``, ``access_token``), and
    where: a cookie in ``?theme={cookie.theme}`` decides nothing about who the client is."""
    refs: list[Reference] = []
    text = template.render(_Marks(refs))
    address, _, query = text.partition("?")
    mark = _MARK.search(address)
    if mark is not None:
        return str(refs[int(mark[1])]), "its path" if address.startswith("/") else "its URL"
    for part in query.split("&"):
        name, _, value = part.partition("=")
        mark = _MARK.search(value)
        if mark is not None and is_credential_parameter(unquote_plus(name)):
            return str(refs[int(mark[1])]), f"the query parameter {unquote_plus(name)}"
    return None


def plain_backend_warning(order: Sequence[Policy], upstream_urls: Sequence[str]) -> str | None:
    """Why an API whose upstreams are all ``wss://`` may send its handshakes in clear text, if it may."""
    if not upstream_urls or not all(url.startswith("wss://") for url in upstream_urls):
        return None
    for policy in _every(order):
        if isinstance(policy, SetBackendService) and policy.base_url.source.lower().startswith("ws://"):
            return (
                f"set-backend-service sends this API's handshakes to {policy.base_url.source.split('/')[2]!r} over "
                "ws://, in clear text (with every header the policies set), where its upstreams use wss://"
            )
    return None


_RAW_HOST = frozenset({("request", ("host",)), ("header", ("host",)), ("header", ("x-forwarded-host",))})
"""References that read the ``Host`` header as the client sent it (``X-Forwarded-Host`` is the gateway's copy)."""


def raw_host_warnings(policies: Sequence[Policy], locations: Mapping[int, Loc]) -> list[str]:
    """Each ``choose`` branch of ``policies`` whose condition compares the ``Host`` header as sent
    (:data:`_RAW_HOST`) with ``equals``, ``not_equals``, ``in`` or ``matches``, by field path
    (``locations``: each policy's).

    A server finds its virtual host whatever the case, the port or a trailing dot (Starlette's ``Host``
    route, nginx's ``server_name``): a branch gating ``admin.example.com`` was passed by for
    ``ADMIN.example.com`` and ``admin.example.com:443``, which the upstream routed to its admin handler
    all the same. ``{request.hostname}`` is that host, spelled one way."""
    found: list[str] = []
    for policy in _every(policies):
        loc = locations.get(id(policy))
        if not isinstance(policy, Choose) or loc is None:
            continue
        for i, (conditions, _) in enumerate(policy.branches):
            refs = [f"{{{c.ref}}}" for c in conditions if (c.ref.namespace, c.ref.path) in _RAW_HOST and
                    (c.equals, c.not_equals, c.one_of, c.matches) != (None, None, None, None)]  # fmt: skip
            if refs:
                found.append(
                    f"{loc_text((*loc, 'when', i, 'if'))}: compares {refs[0]}, the Host header as the client sent "
                    "it: ADMIN.example.com, admin.example.com:443 and admin.example.com. are one host to the "
                    "upstream's server and three values to this condition; compare {request.hostname} (lower "
                    "case, without the port or a trailing dot)"
                )
    return found


_Place = tuple[str, tuple[str, ...]]
_HOST_READINGS: tuple[_Place, ...] = (("header", ("host",)), ("request", ("host",)), ("request", ("hostname",)))
_BOUNDED_WITH: dict[_Place, tuple[_Place, ...]] = {place: _HOST_READINGS for place in _HOST_READINGS[:2]}
"""What a list check of a value bounds besides it: the ``Host`` header (a request has exactly one) is
``{request.host}``, and ``{request.hostname}`` is made of it."""


def chosen_key_warnings(
    connections: Sequence[tuple[Admission, Sequence[object]]], locations: Mapping[int, Loc]
) -> list[str]:
    """Each limit an API runs keyed by a value the client chooses that no list check bounds before it, for
    some way a client is admitted (``connections``: each way with its connection's message policies), by
    the key's field path (``locations``: each policy's).

    A list check bounds a value for the policies after it, in the order they run: a ``check-header`` with
    ``values`` (in either case mode: a caseless one's spellings are one key), for the policies after it;
    a ``choose`` condition with ``equals`` or ``in``, for its branch's. A pattern bounds nothing in
    general (``acme.*``), nor does a check in a ``choose`` branch for what follows the ``choose``, nor a
    check of the ``Cookie`` header for ``{header.cookie}`` (its copies are joined: ``a; a`` is another
    key). Message limits come after every handshake policy. ``limit-concurrency`` is not warned about:
    its keys live as long as their connections (a cap per room, ``{path.room}``, is what it is for)."""
    unbounded: dict[int, dict[str, None]] = {}
    for way, message_policies in connections:
        bounded = _unbounded_keys(way.policies, frozenset(), unbounded)
        for policy in message_policies:
            if isinstance(policy, RateLimitMessages) and policy.key is not None:
                _note(policy, policy.key, bounded, unbounded)
    return [
        f"{loc_text((*locations[key], 'key'))}: {_chosen_key_text(list(refs))}"
        for key, refs in unbounded.items()
        if key in locations
    ]


def _unbounded_keys(
    policies: Iterable[object], bounded: frozenset[_Place], unbounded: dict[int, dict[str, None]]
) -> frozenset[_Place]:
    """Note in ``unbounded`` the references no list check bounds for each limit of ``policies`` (run in
    order, ``bounded`` already bounded), and return what is bounded once they all ran."""
    for policy in policies:
        if isinstance(policy, CheckHeader) and policy.settings.values and policy.place != ("header", ("cookie",)):
            bounded = bounded.union(_places(policy.place))
        elif isinstance(policy, Choose):
            for conditions, branch in policy.branches:
                listed = [place for c in conditions if c.equals is not None or c.one_of is not None
                          for place in _places((c.ref.namespace, c.ref.path))]  # fmt: skip
                _unbounded_keys(branch, bounded.union(listed), unbounded)
            _unbounded_keys(policy.otherwise, bounded, unbounded)
        elif isinstance(policy, RateLimitByKey | QuotaByKey):
            _note(policy, policy.key, bounded, unbounded)
    return bounded


def _places(place: _Place) -> tuple[_Place, ...]:
    return _BOUNDED_WITH.get(place, (place,))


def _note(policy: object, key: Template, bounded: frozenset[_Place], unbounded: dict[int, dict[str, None]]) -> None:
    refs = [f"{{{ref}}}" for ref in key.references if client_chosen(ref) and (ref.namespace, ref.path) not in bounded]
    if refs:
        unbounded.setdefault(id(policy), {}).update(dict.fromkeys(sorted(refs)))


def _chosen_key_text(refs: list[str]) -> str:
    return (
        f"keyed by {', '.join(sorted(refs))}, which the client chooses: a fresh value per handshake is a fresh "
        "counter (the limit never refuses it), and fills the store: in memory this limit's max_keys, then it "
        "fails open or closed; in Redis up to maxmemory, then every limit of the store fails open or closed. Key "
        "it by a verified identity ({jwt.sub}, {subscription.id}, {client.network}), or check the value against "
        "a list before the limit (check-header with values, or a choose condition with equals or in)"
    )


def _every(policies: Sequence[Policy]) -> Iterator[Policy]:
    """``policies`` and those inside their ``choose`` branches (which may run)."""
    for policy in policies:
        yield policy
        if isinstance(policy, Choose):
            for _, branch in policy.branches:
                yield from _every(branch)
            yield from _every(policy.otherwise)


__all__ = [
    "chosen_key_warnings",
    "cookie_readers",
    "cookie_token_warning",
    "plain_backend_warning",
    "raw_host_warnings",
]
