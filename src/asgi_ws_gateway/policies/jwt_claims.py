"""A JWT's payload as ``validate-jwt`` admits it: RFC 7519 NumericDate times, a bounded depth, text only,
no name twice in one object; and the view claim checks read it through (``{jwt.*}``).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any

from ..json_depth import nests_deeper
from ..json_names import LONE_SURROGATE, AmbiguousJson, unique_names
from ..templates import dig


class ClaimsView:
    """Claim checks' view of a token's claims (``{jwt.*}`` only)."""

    def __init__(self, claims: dict[str, Any]) -> None:
        self.claims = claims

    def lookup(self, namespace: str, path: tuple[str, ...]) -> object | None:
        return dig(self.claims, path) if namespace == "jwt" else None


_TIME_CLAIMS = ("exp", "nbf", "iat")
MAX_NUMERIC_DATE = 253402300799
"""The last second of the year 9999: a later ``exp`` is treated as a forgery, not as "never expires"."""


def numeric_date_problem(claims: dict[str, Any]) -> str | None:
    """Why a registered time claim is not an RFC 7519 NumericDate, or None if all present ones are.

    pyjwt converts with ``int()``, so ``"1767000000"`` and ``true`` pass its checks; this does not:
    a JSON number (not a bool), finite, from 0 to :data:`MAX_NUMERIC_DATE`.
    """
    for name in _TIME_CLAIMS:
        if name not in claims:
            continue
        value = claims[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"the token's '{name}' claim is not a number"
        if not (math.isfinite(value) and 0 <= value <= MAX_NUMERIC_DATE):
            return f"the token's '{name}' claim is out of range"
    return None


MAX_CLAIM_DEPTH = 32
"""Levels of objects and arrays a token's payload may nest (the payload itself is one)."""


def depth_problem(claims: dict[str, Any]) -> str | None:
    """Why a payload is refused for nesting deeper than :data:`MAX_CLAIM_DEPTH`, or None.

    A signed payload nested hundreds deep decodes, then broke whatever walks it recursively (the
    verified-token cache's copy, a template writing the claim) with a ``RecursionError``; no issuer
    nests claims that deep."""
    if nests_deeper(claims, MAX_CLAIM_DEPTH):
        return f"the token's payload nests deeper than {MAX_CLAIM_DEPTH} levels"
    return None


def surrogate_problem(claims: dict[str, Any]) -> str | None:
    """Why a payload is refused for a lone surrogate (``"\\ud800"``) in a string or a name, or None.

    Python's JSON parser keeps one, which UTF-8 cannot encode: templated into the upstream URL
    (``rewrite-uri``, ``set-query-parameter``) a signed one failed the handshake with a 500 and a
    traceback. Readers disagree on it (Go reads U+FFFD), as message policies refuse it in a message."""
    stack: list[object] = [claims]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not item.isascii() and LONE_SURROGATE.search(item):
                return "the token's payload holds a lone surrogate (\\uD800-\\uDFFF), which is not text"
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


def duplicate_name_problem(token: str) -> str | None:
    """Why a token is refused for a name twice in one object of its header or payload, or None.

    Python's parser, like pyjwt, keeps the last copy; gjson and jsonparser in Go, simdjson's lookups and
    several others the first. A payload ``{"sub": "admin", ..., "sub": "alice"}`` was checked (and its
    ``{jwt.sub}`` sent upstream) as ``alice``, while an upstream verifying the same token with such a
    reader took it for ``admin``. RFC 7519 §4 lets a recipient refuse such a token; message policies
    refuse such a message. Call it on a token pyjwt decoded: its segments are base64url JSON.
    """
    header, payload = token.split(".", 2)[:2]
    for part, segment in (("header", header), ("payload", payload)):
        try:
            json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)), object_pairs_hook=unique_names)
        except AmbiguousJson:
            return f"the token's {part} holds a name twice in one object"
        except (ValueError, binascii.Error, RecursionError):
            return "the token is malformed"
    return None


__all__ = [
    "MAX_CLAIM_DEPTH",
    "MAX_NUMERIC_DATE",
    "ClaimsView",
    "depth_problem",
    "duplicate_name_problem",
    "numeric_date_problem",
    "surrogate_problem",
]
