"""Which handshake values pick the host or port of a ``set-backend-service`` base URL, read from its template.

A value a handshake brings (a claim, a custom policy's variable) written into the URL's authority picks
where the gateway connects: such a connect is held to ``upstream_networks``' stricter rule for picked
hosts (the gateway's own host only where ``allow`` names it), and a value that picks the *whole* host
is warned about at start-up. Values are percent-encoded into the URL (``:``, ``@``, ``/``, ``[`` never
reach it as written), and one in a label the operator began (``chat-{jwt.region}``) may hold no dot
(:attr:`PickedAuthority.in_label`, refused per handshake), so a value fills only its place; but a value
that is a whole label may hold dots, and a host's labels past the value are the operator's only when they
hold a registrable domain:

* ``chat-{jwt.region}.internal``, ``{jwt.tenant}.chat.example.com``: the operator's domain;
* ``{jwt.host}``, ``{jwt.sub}.{jwt.zone}``, ``{jwt.host}.`` (a root dot is no domain), ``chat-{jwt.region}``
  (no domain: the resolver's search list completes it): the whole host;
* ``{jwt.host}.me``, ``{jwt.host}.co.uk``, ``{jwt.host}.github.io``: the value fills the label above a
  public suffix (:mod:`.public_suffixes`: every single label, the known ones, the system's list), where
  anyone registers a name: the whole host;
* ``chat-{jwt.region}.com``: the operator's text shares the label, but ``com`` is a suffix the list
  names, so ``chat-evil.com`` is anyone's: the whole host. Above a single label the list does not
  name (``.internal``, ``.lan``: private names), such a label is taken as the operator's.

``api`` and ``subscription`` values are the operator's own (an API's name, a subscription the
management API created): they pick nothing.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass

from ..templates import Reference, Template, TemplateError
from .public_suffixes import KNOWN, SuffixRules, is_public_suffix, system_rules

OPERATOR_NAMESPACES = frozenset({"api", "subscription"})
"""Namespaces whose values the operator writes: they pick no host."""

CLIENT_NAMESPACES = frozenset({"header", "query", "cookie", "path", "client", "request"})
"""Namespaces any client fills (``set-backend-service`` refuses them at start-up)."""

PICKERS: dict[str, str] = {
    "jwt": "a token's claim",
    "var": "a custom policy's variable",
    "header": "a request header",
    "query": "a query parameter",
    "cookie": "a cookie",
    "path": "a path parameter",
    "request": "the request's Host or path",
    "client": "the client's address",
}
"""What each namespace that picks a host is, as a warning names it."""


@dataclass(frozen=True)
class PickedAuthority:
    """What handshake values pick in a URL template's authority.

    Attributes:
        host: the references that fill part of the host (as written, each once), in order.
        port: those that fill part of the port.
        whole_host: the host values fill leaves no registrable domain of the operator's.
        local: the operator wrote the host itself, and it is the gateway's own (``127.0.0.1``,
            ``[::1]``, ``0.0.0.0``, ``localhost``).
        in_label: the host's references that share their label with something else (``chat-{jwt.region}``,
            ``{jwt.a}{jwt.b}``): each fills part of one label, so its value may hold no dot.
    """

    host: tuple[str, ...] = ()
    port: tuple[str, ...] = ()
    whole_host: bool = False
    local: bool = False
    in_label: tuple[str, ...] = ()

    @property
    def picked(self) -> bool:
        """Whether a handshake value picks the host or the port."""
        return bool(self.host or self.port)

    @property
    def namespaces(self) -> tuple[str, ...]:
        """The namespaces that pick the host or port, in the order written."""
        return tuple(dict.fromkeys(ref.partition(".")[0] for ref in self.host + self.port))


NOTHING_PICKED = PickedAuthority()

_Token = str | Reference


def picked_authority(template: Template, rules: SuffixRules | None = None) -> PickedAuthority:
    """What handshake values pick in ``template``'s authority (a ``ws[s]://`` URL template).

    ``rules``: the Public Suffix List's (default :func:`.public_suffixes.system_rules`)."""
    authority = _authority(template.pieces)
    if authority is None:
        return NOTHING_PICKED
    host, port = _split(authority)
    picked_host = [str(t) for t in host if isinstance(t, Reference) and t.namespace not in OPERATOR_NAMESPACES]
    picked_port = [str(t) for t in port if isinstance(t, Reference) and t.namespace not in OPERATOR_NAMESPACES]
    local = not picked_host and all(isinstance(t, str) for t in host) and _is_local_host("".join(map(str, host)))
    whole = bool(picked_host) and _whole_host(host, system_rules() if rules is None else rules)
    bracketed = bool(host) and isinstance(host[0], str) and host[0].startswith("[")
    in_label = [] if bracketed else [str(t) for i, t in enumerate(host) if str(t) in picked_host and _shares(host, i)]
    return PickedAuthority(
        tuple(dict.fromkeys(picked_host)),
        tuple(dict.fromkeys(picked_port)),
        whole,
        local,
        tuple(dict.fromkeys(in_label)),
    )


def _shares(host: list[_Token], i: int) -> bool:
    """Whether the reference at ``host[i]`` shares its label: a neighbour that is not a dot (or the host's end)."""
    before = host[i - 1] if i > 0 else "."
    after = host[i + 1] if i + 1 < len(host) else "."
    return not (isinstance(before, str) and before.endswith(".")) or not (
        isinstance(after, str) and after.startswith(".")
    )


@functools.lru_cache(maxsize=1024)
def picked_in_url(base_url: str) -> PickedAuthority:
    """:func:`picked_authority` of a base URL as written (nothing picked for a template that does not compile)."""
    try:
        return picked_authority(Template(base_url))
    except TemplateError:
        return NOTHING_PICKED


def _authority(pieces: list[_Token]) -> list[_Token] | None:
    """The tokens between ``://`` and the path (or query, fragment); None without a ``://`` first."""
    tokens: list[_Token] = []
    started = False
    for piece in pieces:
        if not isinstance(piece, str):
            if not started:
                return None
            tokens.append(piece)
            continue
        text = piece
        if not started:
            _, separator, text = text.partition("://")
            if not separator:
                return None
            started = True
        ends = [at for at in map(text.find, "/?#") if at != -1]
        if ends:
            tokens.append(text[: min(ends)])
            return [t for t in tokens if t != ""]
        tokens.append(text)
    return [t for t in tokens if t != ""] if started else None


def _split(authority: list[_Token]) -> tuple[list[_Token], list[_Token]]:
    """The host's tokens and the port's: after the user info (``@``, refused anyway), at the last ``:``
    written outside brackets (a value's ``:`` is encoded: only the operator's text holds one)."""
    for i in range(len(authority) - 1, -1, -1):
        token = authority[i]
        if isinstance(token, str) and "@" in token:
            rest = token.rpartition("@")[2]
            authority = _tokens([], rest, authority[i + 1 :])
            break
    bracketed = bool(authority) and isinstance(authority[0], str) and authority[0].startswith("[")
    for i in range(len(authority) - 1, -1, -1):
        token = authority[i]
        if not isinstance(token, str):
            continue
        if bracketed and "]" in token:
            before, _, after = token.rpartition("]")
            port = after.partition(":")[2]
            return _tokens(authority[:i], before + "]"), _tokens([], port, authority[i + 1 :])
        if not bracketed and ":" in token:
            before, _, port = token.rpartition(":")
            return _tokens(authority[:i], before), _tokens([], port, authority[i + 1 :])
    return authority, []


def _tokens(head: list[_Token], text: str, tail: list[_Token] | None = None) -> list[_Token]:
    return [*head, *([text] if text else []), *(tail or [])]


def _whole_host(host: list[_Token], rules: SuffixRules) -> bool:
    """Whether the values in ``host`` leave no registrable domain of the operator's after the last of them."""
    if host and isinstance(host[0], str) and host[0].startswith("["):
        return True  # an IPv6 address a value completes
    last = max(i for i, t in enumerate(host) if isinstance(t, Reference) and t.namespace not in OPERATOR_NAMESPACES)
    after = "".join(t if isinstance(t, str) else "x" for t in host[last + 1 :])  # the operator's values: a label
    rest_of_label, dot, fixed = after.partition(".")
    fixed = fixed.removesuffix(".").lower()
    if not dot or not fixed:
        return True  # nothing (or a root dot) after the value: it may hold dots, so it is any name
    before = host[:last]
    own_label = rest_of_label != "" or _label_text_before(before)
    if not own_label:
        return is_public_suffix(fixed, rules)
    return fixed in KNOWN or rules.listed(fixed)  # only a suffix the list names: not a private ".internal"


def _label_text_before(tokens: list[_Token]) -> bool:
    """Whether the label the value ends holds the operator's own text before it (``chat-`` of ``chat-{jwt.r}``)."""
    for token in reversed(tokens):
        if isinstance(token, str):
            return token.rpartition(".")[2] != ""
        if token.namespace in OPERATOR_NAMESPACES:
            return True
    return False


def _is_local_host(host: str) -> bool:
    """Whether a host as written is the gateway's own: ``localhost`` (and names under it), or an address
    that reaches it (loopback, ``0.0.0.0``, ``::``, mapped)."""
    name = host.removesuffix(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback or address.is_unspecified or (address.version == 4 and int(address) >> 24 == 0)


def describe(namespaces: tuple[str, ...]) -> tuple[str, str]:
    """What picks a host (``a token's claim``), and who can therefore pick it (``the token's issuer``):
    a value any client sends is said first, and most plainly."""
    what = " and ".join(PICKERS.get(n, f"{n} values") for n in namespaces)
    if any(n in CLIENT_NAMESPACES for n in namespaces):
        return what, "any client, with no credential at all,"
    if "var" in namespaces:
        return what, "whatever the custom policy set it from (a client's header or query, perhaps)"
    return what, "the token's issuer"


__all__ = [
    "CLIENT_NAMESPACES",
    "NOTHING_PICKED",
    "OPERATOR_NAMESPACES",
    "PICKERS",
    "PickedAuthority",
    "describe",
    "picked_authority",
    "picked_in_url",
]
