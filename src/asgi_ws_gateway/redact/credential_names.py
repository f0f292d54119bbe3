"""Which names hold a credential: headers, query parameters, policy settings and a configuration's
token headers, and ``REDACTED``, what is written for such a value."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

REDACTED = "REDACTED"

#: Headers whose values are credentials, whatever the configuration (lower case).
SENSITIVE_HEADERS = frozenset(
    {
        "authorization", "proxy-authorization", "cookie", "set-cookie", "sec-websocket-protocol",
        "ocp-apim-subscription-key", "subscription-key", "x-api-key", "api-key", "x-auth-token",
    }
)  # fmt: skip


# The configuration's token headers, lower case: added (never removed) by text.add_sensitive_headers.
_extra_headers: set[str] = set()


def credential_headers(document: object) -> set[str]:
    """The header names a configuration (as plain data) reads credentials from (``token: [{header: ...}]``),
    and those it writes a client's credential to: a ``set-header`` whose value refers to one
    (``{cookie.session}``, ``{header.x-api-key}``, a token header's) sends it upstream under a name
    that may hold no credential word, and websockets' debug dump of the upstream handshake showed it."""
    readers: set[str] = set()
    writers: list[tuple[str, list[str]]] = []
    _walk(document, readers, writers)
    named = {header.lower() for header in readers}
    for header, refs in writers:
        if any(_credential_reference(ref) or _reads_header(ref, named) for ref in refs):
            readers.add(header)
    return readers


def _walk(document: object, readers: set[str], writers: list[tuple[str, list[str]]]) -> None:
    if isinstance(document, dict):
        header, value = document.get("header"), document.get("value")
        if isinstance(header, str) and isinstance(value, str) and "{" in value:
            writers.append((header, [m[1] for m in _TEMPLATE_REFERENCE.finditer(value.replace("{{", ""))]))
        for key, item in document.items():
            if key == "token" and isinstance(item, list):
                readers.update(s["header"] for s in item if isinstance(s, dict) and isinstance(s.get("header"), str))
            else:
                _walk(item, readers, writers)
    elif isinstance(document, list):
        for item in document:
            _walk(item, readers, writers)


_TEMPLATE_REFERENCE = re.compile(r"\{\s*([A-Za-z_]+\.[^{}|]+?)\s*(?:\|[^{}]*)?\}")
"""A template's reference (``{header.x-api-key}``, ``{cookie.session|none}``); ``{{`` is removed first."""


def _reads_header(ref: str, headers: set[str]) -> bool:
    """Whether ``ref`` reads a cookie (a session id may be named ``sid``) or one of ``headers``."""
    namespace, _, key = ref.strip().partition(".")
    return namespace == "cookie" or (namespace == "header" and key.lower() in headers)


CREDENTIAL_WORDS = ("pass", "pwd", "secret", "token", "key", "auth", "sig", "cred", "session", "cookie")
"""Words that make a name a credential's, in any case, anywhere in it: a header (``X-Signature``), a
parameter (``api_key``), a name in free text (``token=``); the one list for logs and the management API."""
_CREDENTIAL_NAME = re.compile("|".join(CREDENTIAL_WORDS), re.IGNORECASE)
# A query or fragment parameter whose value is a credential, by (decoded) name: redis-py's
# ?password= and ?username=, access_token, subscription-key, api_key, client_secret, a SAS sig...
_CREDENTIAL_PARAMETER = re.compile("|".join((*CREDENTIAL_WORDS, "user")), re.IGNORECASE)


def is_credential_name(name: str) -> bool:
    """Whether a header or setting so named holds a credential (one of ``CREDENTIAL_WORDS`` in it)."""
    return _CREDENTIAL_NAME.search(name) is not None


CREDENTIAL_VALUES = frozenset(
    {"value", "values", "pattern", "equals", "not_equals", "in", "one_of", "matches", "contains"}
)
"""The settings that hold or test the value of what :func:`credential_setting` names: a ``set-header``'s
``value``, a ``check-header``'s ``values`` and ``pattern``, a condition's operands (``in`` is ``one_of``
by its alias)."""


def credential_setting(settings: Mapping[str, Any]) -> str | None:
    """The header, query parameter, context value or JWT claim a policy's ``settings`` (or a condition)
    name as a credential, if any: their :data:`CREDENTIAL_VALUES` are then secrets (``set-header`` of
    ``X-Internal-Auth``, ``check-header`` of ``X-Api-Key``, ``set-query-parameter`` of ``api_key``,
    ``{ref: header.x-api-key, in: [...]}``, ``{claim: api_key, equals: ...}``), which no output may show."""
    header = settings.get("header")
    if isinstance(header, str) and (header.lower() in SENSITIVE_HEADERS or is_credential_name(header)):
        return header
    parameter = settings.get("parameter")
    if isinstance(parameter, str) and is_credential_parameter(parameter):
        return parameter
    ref = settings.get("ref")
    if isinstance(ref, str) and _credential_reference(ref):
        return ref
    claim = settings.get("claim")
    if isinstance(claim, str) and is_credential_name(claim):
        return claim
    return None


def _credential_reference(ref: str) -> bool:
    """Whether a condition's ``ref`` reads a credential: ``header.x-api-key``, ``query.api_key``,
    ``cookie.session``, ``jwt.session_id``, ``path.token``."""
    namespace, dot, key = ref.strip().partition(".")
    if not dot:
        return False
    if namespace == "header":
        return key.lower() in SENSITIVE_HEADERS or is_credential_name(key)
    if namespace == "query":
        return is_credential_parameter(key)
    return is_credential_name(key)


def is_credential_parameter(name: str) -> bool:
    """Whether a query parameter so named (decoded) holds a credential: ``password``, ``api_key``, ``sig``..."""
    return _CREDENTIAL_PARAMETER.search(name) is not None


def redact_headers(headers: Iterable[tuple[str, str]], sensitive: Iterable[str] = ()) -> list[tuple[str, str]]:
    """``headers`` with the values of credential headers (:func:`is_credential_header`, and ``sensitive``
    ones) replaced."""
    names = {name.lower() for name in sensitive}
    return [
        (name, REDACTED if is_credential_header(name) or name.lower() in names else value) for name, value in headers
    ]


def is_credential_header(name: str) -> bool:
    """Whether a header so named holds a credential: one of :data:`SENSITIVE_HEADERS`, a configured token
    header (:func:`add_sensitive_headers`), or a name with one of ``CREDENTIAL_WORDS`` in it
    (``X-Amz-Security-Token``, ``X-CSRF-Token``, ``X-Signature``, ``Authentication``). The one rule for
    a header's value in a header dump, a header list and a mapping."""
    lower = name.lower()
    return lower in SENSITIVE_HEADERS or lower in _extra_headers or is_credential_name(lower)


__all__ = [
    "CREDENTIAL_VALUES",
    "CREDENTIAL_WORDS",
    "REDACTED",
    "SENSITIVE_HEADERS",
    "credential_headers",
    "credential_setting",
    "is_credential_header",
    "is_credential_name",
    "is_credential_parameter",
    "redact_headers",
]
