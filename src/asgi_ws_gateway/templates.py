"""A small, safe template language over the handshake context, and conditions for ``choose``.

A template is text with ``{namespace.key}`` references, compiled once at start-up::

    "{jwt.sub}"                      a JWT claim (nested claims: {jwt.realm.roles})
    "tenant-{header.x-tenant}"       a request header (copies that differ: refused by the context, 400)
    "{query.room}" "{cookie.session}" "{path.room}"
    "{client.ip}" "{client.port}"    the client address, after trusted-proxy resolution
    "{client.network}"               the client's IPv6 /64 ("2001:db8:1:2::/64"), or its IPv4 address
    "{subscription.id}"              also .product and .name
    "{api.name}" "{request.path}" "{request.host}"   the Host header as sent ("Admin.Example.com:443")
    "{request.hostname}"             the host it names: lower case, no port nor trailing dot ("admin.example.com")
    "{var.tier}"                     a variable a custom policy set
    "{header.x-tenant|public}"       with a default when the value is missing
    "{{literal braces}}"

There is no expression evaluation: a reference names a value and nothing more. Unknown namespaces
are rejected when the template is compiled (that is, when the configuration is loaded).

A limit's key (:meth:`Template.render_key`) counts alike the spellings of a value that a gate took as
one: a value a case-insensitive check admitted (:class:`Caseless`) by its ``casefold``, a cookie as the
servers that decode it read it (:func:`canonical_cookie`), an ``Origin`` as ``check-origin`` compares it
(:func:`canonical_origin`). Other templates, and conditions, read the value as the client sent it.

A template may write a value many times (``"{header.x-a}" * 680``), so what it renders is bounded where
it is used: ``render(..., limit=N)`` adds up its parts' lengths and raises :class:`TemplateTooLarge`
once they pass ``N``, before any text is joined; a limit's key is bounded by :data:`MAX_KEY_LENGTH`.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import unquote

from .errors import HandshakeDenied
from .safe_regex import Pattern

NAMESPACES: dict[str, frozenset[str] | None] = {
    "jwt": None,
    "header": None,
    "query": None,
    "cookie": None,
    "path": None,
    "var": None,
    "client": frozenset({"ip", "port", "network"}),
    "subscription": frozenset({"id", "product", "name"}),
    "api": frozenset({"name"}),
    "request": frozenset({"path", "host", "hostname", "scheme"}),
}
"""Namespace -> the keys it allows (``None``: any key)."""

MAX_KEY_LENGTH = 64 * 1024
"""Characters a limit's key may render (:meth:`Template.render_key`); longer: :class:`TemplateTooLarge`."""

KEY_SEPARATOR = "\x1f"
"""Written between two references that nothing separates in a template, when it renders a key."""

_REF = re.compile(r"^([a-z]+)\.([A-Za-z0-9_:.-]+)$")
_CASELESS_FLAGS = re.compile(r"\(\?[imsU]*i[imsU]*(?:-[imsU]*)?[:)]")
"""An RE2 flag group that turns case-insensitive matching on: ``(?i)``, ``(?is:``, ``(?i-s)``."""
_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


class TemplateError(ValueError):
    """A template or a reference is malformed or names an unknown variable."""


class TemplateTooLarge(HandshakeDenied):
    """A template would render more than ``limit`` characters: raised before its text is built.

    In a handshake it refuses the client (400: its values made the text too long), unless the caller
    says better what was too long (``set-header``: 431); a message policy turns it into its own answer.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(
            400, f"a value built from the request would be longer than {limit} characters", reason="bad_request"
        )
        self.limit = limit


class Caseless(str):
    """A value a gate admitted whatever its case (``check-header`` with ``ignore_case``, an RE2 ``(?i)``
    pattern): its text is the client's spelling, which conditions test and the upstream is sent; a limit's
    key counts it by its ``casefold``, so that every spelling the gate took as one is one counter.

    ``casefold``, not ``lower``: RE2's ``(?i)`` takes the Kelvin sign (U+212A) for ``k``, the long s
    (U+017F) for ``s`` and the micro sign for Greek mu, and ``casefold`` maps each pair to one text
    (``lower`` keeps the long s and the micro sign as they are)."""

    __slots__ = ()


def caseless_pattern(source: str) -> bool:
    """Whether an RE2 pattern turns case-insensitive matching on somewhere (``(?i)``, ``(?i:...)``).

    Read from the text: a pattern that holds such a group only in a character class (``[(?i)]``) is
    taken as caseless too, which can only make keys count more spellings as one, never fewer."""
    return "(?" in source and _CASELESS_FLAGS.search(source) is not None


class Lookup(Protocol):
    """What templates are rendered against (the handshake context implements it)."""

    def lookup(self, namespace: str, path: tuple[str, ...]) -> object | None:
        """The value at ``namespace.path``, or None when it is missing."""
        ...


@dataclass(frozen=True)
class Reference:
    """A parsed ``namespace.key[.more]`` reference."""

    namespace: str
    path: tuple[str, ...]

    @classmethod
    def parse(cls, text: str, namespaces: Mapping[str, frozenset[str] | None] = NAMESPACES) -> Reference:
        match = _REF.match(text.strip())
        if not match:
            raise TemplateError(f"'{text}' is not a reference like namespace.key")
        namespace, key = match.groups()
        if namespace not in namespaces:
            raise TemplateError(f"unknown namespace '{namespace}' in '{text}' (known: {', '.join(sorted(namespaces))})")
        path = tuple(key.split(".")) if namespace in ("jwt", "var") else (key,)
        allowed = namespaces[namespace]
        if allowed is not None and key not in allowed:
            raise TemplateError(f"unknown key '{key}' for '{namespace}' (known: {', '.join(sorted(allowed))})")
        if namespace == "header":
            path = (key.lower(),)
        return cls(namespace, path)

    def resolve(self, context: Lookup) -> object | None:
        return context.lookup(self.namespace, self.path)

    def __str__(self) -> str:
        return f"{self.namespace}.{'.'.join(self.path)}"


def dig(value: object, path: tuple[str, ...]) -> object | None:
    """What ``path`` names in nested mappings (``{jwt.a.b}``: ``("a", "b")``), or None.

    Dots reach into objects; where that finds nothing, a name holding the dots is read (Azure AD's
    ``extn.tier`` claim, a Keycloak mapper's ``realm.role``): a claim check on ``extn.tier`` found no
    value in ``{"extn.tier": "banned"}``, and ``not_equals: banned`` let that token in.
    """
    found = value
    for key in path:
        if type(found) is not dict and not isinstance(found, Mapping):  # claims are dicts: no ABC check
            found = None
            break
        found = found.get(key)
    if found is None and len(path) > 1:
        return _dotted(value, path)
    return found


def _dotted(value: object, path: tuple[str, ...]) -> object | None:
    """:func:`dig` where a name on ``path`` may hold dots: each such name tried, nearest first."""
    if not path or not isinstance(value, Mapping):
        return value if not path else None
    found = _dotted(value[path[0]], path[1:]) if path[0] in value else None
    for cut in range(2, len(path) + 1):
        if found is not None:
            break
        name = ".".join(path[:cut])
        if name in value:
            found = _dotted(value[name], path[cut:])
    return found


def to_text(value: object) -> str:
    """How a value is written into text: lists comma-joined, booleans lower-case, objects as JSON.

    A list item holding ``,`` or ``%`` has them percent-encoded (``%2C``, ``%25``), so that no two
    lists read the same: ``["user,admin"]`` was ``["user", "admin"]`` to an upstream splitting the
    header at its commas."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(_list_item(to_text(v)) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return str(value)


def _list_item(text: str) -> str:
    if "," not in text and "%" not in text:
        return text
    return text.replace("%", "%25").replace(",", "%2C")


class Template:
    """A compiled template. Missing values render as their default or ``""``; ``render`` raises only past
    the ``limit`` its caller gives.

    Args:
        source: the template text.
        namespaces: the namespaces it may use (default :data:`NAMESPACES`).

    Raises:
        TemplateError: on unbalanced braces or an unknown namespace or key.
    """

    def __init__(self, source: str, namespaces: Mapping[str, frozenset[str] | None] = NAMESPACES) -> None:
        self.source = source
        self._parts: list[str | tuple[Reference, str]] = []
        self._bare: list[Reference] = []  # written without a "|default"
        pos = 0
        for match in _TOKEN.finditer(source):
            literal = source[pos : match.start()]
            token = match.group(0)
            pos = match.end()
            if token in ("{{", "}}"):
                self._append(literal + token[0])
            elif match.group(1) is not None:
                self._append(literal)
                text, bar, default = match.group(1).partition("|")
                ref = Reference.parse(text, namespaces)
                self._parts.append((ref, default))
                if not bar:
                    self._bare.append(ref)
            else:
                raise TemplateError(f"unbalanced '{token}' in '{source}' (write '{token * 2}' for a literal)")
        self._append(source[pos:])
        # One reference alone (the usual "{jwt.sub}" of a limit's key and a header): rendered by render and
        # render_key without _render's steps; with whether a key spells its value otherwise (_key_text).
        self._single: tuple[Reference, str, bool] | None = None
        if len(self._parts) == 1 and not isinstance(part := self._parts[0], str):
            ref = part[0]
            spelled = ref.namespace == "cookie" or (ref.namespace == "header" and ref.path == ("origin",))
            self._single = (ref, part[1], spelled)

    def constant_texts(self) -> list[str]:
        """The text the template writes whatever the context: its literal parts and its references' defaults."""
        return [part if isinstance(part, str) else part[1] for part in self._parts]

    def _append(self, text: str) -> None:
        if not text:
            return
        if self._parts and isinstance(self._parts[-1], str):
            self._parts[-1] += text
        else:
            self._parts.append(text)

    @property
    def pieces(self) -> list[str | Reference]:
        """The template in order: its literal texts and its references (their defaults left out)."""
        return [part if isinstance(part, str) else part[0] for part in self._parts]

    @property
    def references(self) -> list[Reference]:
        return [part[0] for part in self._parts if not isinstance(part, str)]

    @property
    def references_without_default(self) -> list[Reference]:
        """The references written without a ``|default``: those that render empty when the value is missing."""
        return list(self._bare)

    @property
    def is_constant(self) -> bool:
        return all(isinstance(part, str) for part in self._parts)

    def render_key(self, context: Lookup, *, limit: int = MAX_KEY_LENGTH) -> str:
        """The text as a limit's key, written so that different values never render alike.

        In each value, the characters the template's own text holds are percent-encoded, and so is
        ``%`` (``{a}:{b}`` for ``x:y`` and ``z`` was ``x:y:z``, as for ``x`` and ``y:z``: two tenants
        counted as one). Two references with nothing between them are written with
        :data:`KEY_SEPARATOR` between them, encoded in values too (``{a}{b}`` rendered ``xyz`` for
        ``x`` + ``yz`` and ``xy`` + ``z``). When the template's text holds a ``%``, the first of
        ``~!^*`` (then a private-use character) that it does not hold introduces an encoded byte
        instead (``{a}%25{b}`` rendered ``%25%25`` for ``%`` + nothing and nothing + ``%``).
        Other templates render keys as they always did.

        Raises:
            TemplateTooLarge: the key would be longer than ``limit`` characters (default
                :data:`MAX_KEY_LENGTH`): it is digested, but built first.
        """
        single = self._single
        if single is None:
            return _render(self._key_parts, context, self._key_escape, limit, key=True)
        ref, default, spelled = single  # _reference_text's steps, inline
        value = context.lookup(ref.namespace, ref.path)
        text = value if type(value) is str else default if value is None else to_text(value)
        if spelled or type(value) is Caseless:
            text = _key_text(ref, value, text)
        text = self._key_escape(text)
        if len(text) > limit:
            raise TemplateTooLarge(limit)
        return text

    @functools.cached_property
    def _key_parts(self) -> list[str | tuple[Reference, str]]:
        """The parts, with :data:`KEY_SEPARATOR` between two references that nothing separates."""
        parts: list[str | tuple[Reference, str]] = []
        for part in self._parts:
            if parts and not isinstance(part, str) and not isinstance(parts[-1], str):
                parts.append(KEY_SEPARATOR)
            parts.append(part)
        return parts

    @functools.cached_property
    def _key_escape(self) -> Callable[[str], str]:
        """A value as a key writes it: each character of the template's text (the separator too) and
        the introducer encoded as the introducer and the character's UTF-8 bytes in hex.

        Read left to right, a key then parses one way only: in a value, the introducer always
        starts an encoded byte (the text never holds it), and any other encoded character is where
        the template's text, or the separator, begins."""
        used = set("".join(part for part in self._key_parts if isinstance(part, str)))
        candidates = itertools.chain("%~!^*", map(chr, range(0xE000, 0xF900)))
        introducer = next(c for c in candidates if c not in used)
        reserved = frozenset(used | {introducer})

        def escape(text: str) -> str:
            if reserved.isdisjoint(text):  # the usual value: nothing to encode (checked in C, not per character)
                return text
            return "".join(
                "".join(f"{introducer}{b:02X}" for b in c.encode("utf-8", "surrogatepass")) if c in reserved else c
                for c in text
            )

        return escape

    def render(self, context: Lookup, escape: Callable[[str], str] | None = None, *, limit: int | None = None) -> str:
        """The text with each reference replaced (passed through ``escape`` when given).

        Raises:
            TemplateTooLarge: the text would be longer than ``limit`` characters (None: no limit).
                Known from the parts' lengths: the text is never built.
        """
        single = self._single
        if single is None:
            return _render(self._parts, context, escape, limit)
        ref, default, _ = single  # _reference_text's steps, inline
        value = context.lookup(ref.namespace, ref.path)
        text = value if type(value) is str else default if value is None else to_text(value)
        if escape is not None:
            text = escape(text)
        if limit is not None and len(text) > limit:
            raise TemplateTooLarge(limit)
        return text

    def __repr__(self) -> str:
        return f"Template({self.source!r})"


def _render(
    parts: Sequence[str | tuple[Reference, str]],
    context: Lookup,
    escape: Callable[[str], str] | None,
    limit: int | None,
    *,
    key: bool = False,
) -> str:
    """``key``: a limit's key, which counts the spellings a gate took as one value alike (:func:`_key_text`);
    any other text (a URL, a header) carries the value as the client sent it."""
    out: list[str] = []  # (one reference alone is rendered by Template.render and render_key themselves)
    length = 0
    for part in parts:
        text = part if isinstance(part, str) else _reference_text(part, context, escape, key)
        length += len(text)
        if limit is not None and length > limit:  # one value past the limit at most was made, none joined
            raise TemplateTooLarge(limit)
        out.append(text)
    return "".join(out)


def _reference_text(
    part: tuple[Reference, str], context: Lookup, escape: Callable[[str], str] | None, key: bool
) -> str:
    """A reference's part of a render: its value's text (or its default), as a key counts it, escaped."""
    ref, default = part
    # Reference.resolve and to_text inline for the usual value, a string (a claim's, a header's): two
    # calls fewer per reference (~1 k instructions each).
    value = context.lookup(ref.namespace, ref.path)
    text = value if type(value) is str else default if value is None else to_text(value)
    if key:
        text = _key_text(ref, value, text)
    return text if escape is None else escape(text)


def _key_text(ref: Reference, value: object, text: str) -> str:
    """A value's text as a limit's key counts it: one text for every spelling a gate took as that value."""
    if ref.namespace == "cookie":
        text = canonical_cookie(text)
    elif ref.path == ("origin",) and ref.namespace == "header":
        text = canonical_origin(text)
    return text.casefold() if type(value) is Caseless else text


def canonical_cookie(value: str) -> str:
    """A cookie value as a limit's key reads it: one key for every spelling some server reads alike.

    PHP's ``$_COOKIE`` percent-decodes a value and reads ``+`` as a space; Node's ``cookie``
    (Express) percent-decodes it only; Go and Python read it as sent. ``ac%6De`` was a fresh key for
    what PHP and Node read as ``acme`` (past a limit of one, each spelling again). Decoded, with every
    ``+`` a space, each tenant of any of those readers is one key (tenants only one of them tells
    apart may share one: counted together, never apart). Templates other than keys read the value
    as sent, which is what the upstream gets.
    """
    if "%" not in value and "+" not in value:
        return value
    return unquote(value).replace("+", " ")


_DEFAULT_PORTS = {"http": ":80", "https": ":443"}


def canonical_origin(value: str) -> str:
    """An ``Origin`` as a limit's key reads it: as ``check-origin`` compares it, in lower case and without
    its scheme's default port (``HTTPS://App.Example.com:443`` is ``https://app.example.com``). Keyed as
    sent, each spelling check-origin admitted was a fresh counter."""
    text = value.strip().lower()
    scheme, _, _ = text.partition("://")
    port = _DEFAULT_PORTS.get(scheme)
    return text.removesuffix(port) if port is not None and text.endswith(port) else text


@dataclass(frozen=True)
class Condition:
    """A test on one context value; exactly one operator is set (``exists`` alone is allowed).

    ``contains`` tests membership in a list, or in the space-separated words of a string (so
    ``{ref: jwt.scope, contains: chat:write}`` works for OAuth ``scope`` strings; RFC 6749 separates
    scopes with a space alone: ``"x\u3000chat:write"`` holds no ``chat:write``). ``not_equals`` on a
    list holds only when no item and not the whole list's text is that value: ``["banned", "x"]``
    is not ``not_equals: banned``.

    ``caseless``: ``matches`` is case-insensitive (:func:`caseless_pattern`). When such a condition
    holds on a text value, it tells a context that can hear it (``admit_caseless``, as the handshake's
    does), so that limit keys count the value's spellings as one (:class:`Caseless`).
    """

    ref: Reference
    exists: bool | None = None
    equals: str | None = None
    not_equals: str | None = None
    one_of: Sequence[str] | None = None
    matches: Pattern | None = None
    contains: str | None = None
    caseless: bool = False

    def holds(self, context: Lookup) -> bool:
        if not self._holds(context):
            return False
        if self.caseless:
            _admit_caseless(context, self.ref)
        return True

    def _holds(self, context: Lookup) -> bool:
        value = self.ref.resolve(context)
        if self.exists is not None and (value is not None) != self.exists:
            return False
        if value is None:
            return self.exists is False or (self.not_equals is not None)
        if self.equals is not None and to_text(value) != self.equals:
            return False
        if self.not_equals is not None and self.not_equals in _texts(value):
            return False
        if self.one_of is not None and to_text(value) not in self.one_of:
            return False
        if self.matches is not None and not self.matches.search(to_text(value)):
            return False
        return self.contains is None or _has_item(value, self.contains)


def _has_item(value: object, item: str) -> bool:
    """Whether a list ``value`` has ``item``, or its text has it as a word between single spaces.

    A word is found with one substring search, not by splitting: split into a list of texts, an 8 KiB
    header of ``a a a ...`` cost 0.18 ms per condition in Python's own loop, and an API of 20 ``choose``
    with 1,024 branches each (963 KB through the management API) held the worker's event loop 5-6 s per
    handshake of any client sending it."""
    if isinstance(value, list | tuple):
        return item in [to_text(each) for each in value]
    return " " not in item and f" {item} " in f" {to_text(value)} "


def _admit_caseless(context: Lookup, ref: Reference) -> None:
    """Tell ``context``, when it can hear it, that a case-insensitive test admitted its value at ``ref``."""
    admit = getattr(context, "admit_caseless", None)
    if admit is None:
        return
    value = ref.resolve(context)
    if isinstance(value, str):
        admit(ref.namespace, ref.path, value)


def _texts(value: object) -> list[str]:
    """``value``'s text, and when it is a list, each item's at any depth (``["x", ["banned"]]``)."""
    texts, pending = [], [value]
    while pending:
        item = pending.pop()
        texts.append(to_text(item))
        if isinstance(item, list | tuple):
            pending.extend(item)
    return texts


__all__ = [
    "KEY_SEPARATOR",
    "MAX_KEY_LENGTH",
    "NAMESPACES",
    "Caseless",
    "Condition",
    "Lookup",
    "Reference",
    "Template",
    "TemplateError",
    "TemplateTooLarge",
    "canonical_cookie",
    "canonical_origin",
    "caseless_pattern",
    "dig",
    "to_text",
]
