"""Text as the logs, spans and access lines write it: :func:`redact_text`, a client's free text, paths
and URLs with their credentials redacted, the configured sensitive headers (:func:`add_sensitive_headers`),
and the bounded memory of texts found clean."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from urllib.parse import quote, unquote, urlunsplit

from ..bounded import remember, split_url
from .credential_names import CREDENTIAL_WORDS, REDACTED, SENSITIVE_HEADERS, _extra_headers
from .credential_paths import CredentialPaths, Segments
from .patterns import (
    _FRAGMENT_IN_TEXT,
    _HEADER_DUMP,
    _INVALID_HEADER,
    _JWT,
    _NAMED_VALUE,
    _QUERY_IN_TEXT,
    _SCHEME_CREDENTIAL,
    _SPACED_JWT,
    _USER_ONLY,
    _USERINFO,
    _fewest,
    _header_pattern,
    _redacted_dump_header,
    _redacted_fragment,
    _redacted_header,
    _redacted_invalid_header,
    _redacted_jwt,
    _redacted_named_value,
    _redacted_query,
    _redacted_scheme_credential,
    redact_query,
)

_HEADER_IN_TEXT = _header_pattern(SENSITIVE_HEADERS)
# What every match of _HEADER_IN_TEXT contains, lower case: ASCII text without any of these cannot
# match, and the check costs ~1 µs where the pattern's scan costs ~30 µs on an access line.
_HEADER_NAMES: tuple[str, ...] = _fewest((*SENSITIVE_HEADERS, "subscription-key"))


def add_sensitive_headers(names: Iterable[str]) -> None:
    """Also redact these headers' values (a configuration's token and subscription-key headers)."""
    global _HEADER_IN_TEXT, _HEADER_NAMES
    new = {name.lower() for name in names} - SENSITIVE_HEADERS - _extra_headers
    if new:
        _extra_headers.update(new)
        _HEADER_IN_TEXT = _header_pattern(SENSITIVE_HEADERS | _extra_headers)
        _HEADER_NAMES = _fewest((*SENSITIVE_HEADERS, *_extra_headers, "subscription-key"))


_secret_values: tuple[str, ...] = ()
"""Credentials the process holds whose values it knows (:func:`add_secret_values`), longest first."""

MIN_SECRET_VALUE = 8
"""Characters a known credential must have to be looked for: a shorter one is a word any line may hold."""

_SCHEMES = ("bearer ", "basic ", "token ", "apikey ")


def add_secret_values(values: Iterable[str]) -> None:
    """Also redact these values wherever :func:`redact_text` looks, whatever names them or none does:
    credentials the process was given (an ``OTEL_EXPORTER_OTLP_HEADERS`` value) that a peer's text may
    quote under a name no pattern knows (a collector's ``401 Invalid team <key>``). After an
    authorization scheme (``Bearer k``), the credential alone too; values shorter than
    :data:`MIN_SECRET_VALUE` are not looked for."""
    global _secret_values
    found = set(_secret_values)
    for value in values:
        value = value.strip()
        found.add(value)
        if value.lower().startswith(_SCHEMES):
            found.add(value.partition(" ")[2].strip())
    kept = tuple(sorted((value for value in found if len(value) >= MIN_SECRET_VALUE), key=len, reverse=True))
    if kept != _secret_values:
        _secret_values = kept
        _unchanged.clear()  # texts found clean before may hold one
        _unchanged_texts.clear()
        _unchanged_urls.clear()


def _known_values_redacted(text: str) -> str:
    for value in _secret_values:  # longest first: a value that holds another is taken whole
        if value in text:
            text = text.replace(value, REDACTED)
    return text


_credential_templates: set[Segments] = set()
_credential_paths: CredentialPaths | None = None
"""The configuration's paths with a credential segment (``/ws/{api_key}``), added by
:func:`add_credential_paths`; None while there are none (then no text is scanned for them)."""


MAX_CREDENTIAL_TEMPLATES = 4096
"""Credential path templates kept from the configurations a process served: past it, those of the
latest configuration only (management changes that each brought new paths grew them, and the cost of
each rebuild, without bound)."""


def add_credential_paths(templates: Iterable[Segments]) -> None:
    """Also redact the credential segments of paths shaped as these templates (those of a configuration:
    :func:`~.credential_paths.credential_path_templates`). The templates of earlier configurations stay,
    for the connections they admitted, up to :data:`MAX_CREDENTIAL_TEMPLATES`."""
    global _credential_paths
    current = set(templates)
    new = current - _credential_templates
    if new:
        if len(_credential_templates) + len(new) > MAX_CREDENTIAL_TEMPLATES:
            _credential_templates.clear()
            new = current
        _credential_templates.update(new)
        _credential_paths = CredentialPaths(_credential_templates)
        # Texts found clean before may hold such a path.
        _unchanged.clear()
        _unchanged_texts.clear()
        _unchanged_urls.clear()


def redact_url(url: str) -> str:
    """``url`` without userinfo or fragment, each query value replaced by ``REDACTED``, and a
    credential in its path redacted as in a client's path (a path parameter carries the client's
    text upstream, percent-encoded: it is decoded to be read, and written again only if redacted).

    >>> redact_url("wss://u:p@example.com:8443/ws/room?token=abc&key")
    'wss://example.com:8443/ws/room?token=REDACTED&REDACTED'
    >>> redact_url("ws://chat:9000/rooms/token%3Dabc")
    'ws://chat:9000/rooms/token=REDACTED'
    """
    parts = split_url(url)
    query = redact_query(parts.query) if parts.query else ""
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], redact_encoded_path(parts.path), query, ""))


def redact_encoded_path(path: str) -> str:
    """A percent-encoded path (an upstream URL's, uvicorn's logged request target) with a credential
    in it redacted as :func:`redact_path` reads a client's path: decoded first, so ``token%3Dabc`` and
    ``Bearer%20abc`` are seen; written again (encoded) only when something was redacted.

    >>> redact_encoded_path("/ws/token%3Dabc")
    '/ws/token=REDACTED'
    """
    if _credential_paths is not None:  # before decoding: a credential's own %2F must not split its segment
        path = _credential_paths.redact(path)
    decoded = unquote(path) if "%" in path else path
    redacted = redact_path(decoded)
    return path if redacted == decoded else quote(redacted, safe="/:@!$&'()*+,;=~")


def redact_targets(text: str) -> str:
    """``text`` with the values of each query and fragment in it redacted."""
    if "?" in text:
        text = _QUERY_IN_TEXT.sub(_redacted_query, text)
    if "#" in text:
        text = _FRAGMENT_IN_TEXT.sub(_redacted_fragment, text)
    return text


def redact_text(text: str) -> str:
    """``text`` with query values, credential header values, URL passwords and JWT-shaped strings redacted."""
    text = redact_targets(text)
    if _credential_paths is not None:
        text = _credential_paths.redact(text)
    if _may_hold(text, _HEADER_NAMES):
        text = _HEADER_IN_TEXT.sub(_redacted_header, text)
    if ":" in text and (text.startswith(("< ", "> ")) or "\n< " in text or "\n> " in text or "\r" in text):
        text = _HEADER_DUMP.sub(_redacted_dump_header, text)
    if " header: " in text:
        text = _INVALID_HEADER.sub(_redacted_invalid_header, text)
    if "//" in text and ("@" in text or "%40" in text):
        text = _USERINFO.sub(rf"\1\2{REDACTED}\3", text)
        text = _USER_ONLY.sub(lambda m: m[0] if m[0].endswith(REDACTED) else REDACTED, text)
    if "eyJ" in text:  # every match starts so: no scan without it
        text = _JWT.sub(_redacted_jwt, text)
    if ".ew" in text or ".eyA" in text or ".eyJ" in text:  # every match holds one: its second segment's start
        text = _SPACED_JWT.sub(REDACTED, text)
    if _secret_values:
        text = _known_values_redacted(text)
    return text


def redact_free_text(text: str) -> str:
    """:func:`redact_text`, and also, anywhere in ``text``, the credential of an authorization scheme
    (``Bearer abc``) and a value named as a credential (``token=abc``, ``api_key: abc``,
    ``{"token": "a b"}``), query or not, quoted or not.

    For a client's free text before it is recorded: a User-Agent, a Host, a close reason, a subject.

    >>> redact_free_text("probe/1 (Bearer abc123; token=s3cret) user=alice")
    'probe/1 (Bearer REDACTED; token=REDACTED) user=alice'
    """
    text = redact_text(text)
    # Schemes first: "auth: Bearer abc" read as a pair would take "Bearer" for the value and leave abc.
    # The pattern ignores case: for ASCII text, exactly these words are needed (a User-Agent: 1.5 µs less).
    if not text.isascii() or "bearer" in (lower := text.lower()) or "basic" in lower:
        text = _SCHEME_CREDENTIAL.sub(_redacted_scheme_credential, text)
    # A User-Agent with ``rv:109.0`` took 11 µs to scan, 1 µs with the words looked for first.
    if ("=" in text or ":" in text) and _may_hold(text, CREDENTIAL_WORDS):
        text = _NAMED_VALUE.sub(_redacted_named_value, text)
    return text


_UNCHANGED_LIMIT = 1024
_UNCHANGED_LENGTH = 512
_unchanged: dict[str, tuple[str, ...]] = {}
"""Paths ``redact_text`` left unchanged, each with the header names it was checked against."""
_unchanged_texts: dict[str, tuple[str, ...]] = {}
"""Free texts (a User-Agent, a Host, a close reason) ``redact_free_text`` left unchanged, as ``_unchanged``
(a store of their own: many distinct User-Agents must not push the paths out)."""
_unchanged_urls: dict[str, tuple[str, ...]] = {}
"""URLs ``redact_url`` left unchanged, as ``_unchanged`` (their paths are read as paths are)."""


def redact_path(path: str) -> str:
    """``redact_free_text(path)``, remembering the paths it leaves unchanged (most repeat; bounded).

    A client writes its path as freely as its User-Agent: ``/ws/token=s3cret`` and
    ``/ws/Bearer%20abc`` (the path is decoded) are redacted as in a close reason.

    A remembered path counts only under the sensitive header names it was checked with: after
    :func:`add_sensitive_headers` adds names, it is checked again.
    """
    return _remembered(path, redact_free_text, _unchanged, _HEADER_NAMES)


def redact_free_text_remembered(text: str) -> str:
    """``redact_free_text(text)``, remembering the texts it leaves unchanged, as :func:`redact_path`
    (User-Agents, Host headers and close reasons repeat from one connection to the next)."""
    if _unchanged_texts.get(text) is _HEADER_NAMES:  # _remembered's first step, without its call
        return text
    return _remembered(text, redact_free_text, _unchanged_texts, _HEADER_NAMES)


def redact_url_remembered(url: str) -> str:
    """``redact_url(url)``, remembering the URLs it leaves unchanged (an upstream's, per connection)."""
    return _remembered(url, redact_url, _unchanged_urls, _HEADER_NAMES)


def _remembered(
    text: str, redact: Callable[[str], str], store: dict[str, tuple[str, ...]], mark: tuple[str, ...]
) -> str:
    """``redact(text)``; a text it leaves unchanged is kept in ``store`` under ``mark`` and returned at
    once while the mark is the same. Only texts without a secret, of at most 512 characters (clients
    choose paths and path parameters), at most 1024 of them (emptied when full)."""
    if store.get(text) is mark:
        return text
    redacted = redact(text)
    if redacted == text and len(text) <= _UNCHANGED_LENGTH:
        remember(store, text, mark, _UNCHANGED_LIMIT)
    return redacted


def _may_hold(text: str, words: Iterable[str]) -> bool:
    """False only when ``text`` cannot hold any of ``words`` (lower-case) as a pattern ignoring case
    reads it: before a sensitive header's name or a credential's name is looked for.

    Exact for ASCII text (the pattern ignores case, and ASCII letters fold only to ASCII letters);
    text with other characters always takes the pattern, whose case folding also maps some of
    them to ASCII letters (U+0130, U+017F, the Kelvin sign).
    """
    if not text.isascii():
        return True
    lower = text.lower()
    for word in words:  # noqa: SIM110 - a loop: a third cheaper than any() over a generator, per log line
        if word in lower:
            return True
    return False


__all__ = [
    "MIN_SECRET_VALUE",
    "add_credential_paths",
    "add_secret_values",
    "add_sensitive_headers",
    "redact_encoded_path",
    "redact_free_text",
    "redact_free_text_remembered",
    "redact_path",
    "redact_targets",
    "redact_text",
    "redact_url",
    "redact_url_remembered",
]
