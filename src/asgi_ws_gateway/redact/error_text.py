"""An error message without what it quotes of secrets (a pattern, a value a policy's settings hold)."""

from __future__ import annotations

import re
from collections.abc import Mapping

from .credential_names import REDACTED


def redact_values(text: str, values: object) -> str:
    """``text`` (an error message) without what it quotes of the strings in ``values`` (secrets, or
    JSON-like data holding them): each part that is wholly of one (quoted, or after ``: ``, as RE2's
    ``missing ): (abc`` quotes a pattern's rest), and each run of 4 characters or more that one
    holds, read as ``REDACTED``.

    >>> redact_values("bad escape: \\\\k<s3cret-key", {"pattern": "ab|\\\\k<s3cret-key"})
    'bad escape: REDACTED'
    """
    secrets = [value for value in _strings(values) if value]
    if not secrets:
        return text

    def secret(part: str) -> bool:
        return any(part in value for value in secrets)

    text = _QUOTED_PART.sub(lambda m: m[0] if not secret(m[2]) else f"{m[1]}{REDACTED}{m[1]}", text)
    text = _LAST_PART.sub(lambda m: m[0] if not secret(m[1]) else REDACTED, text)
    out, start, i = [], 0, 0
    while i <= len(text) - _SHORTEST_QUOTE:
        end = i + _SHORTEST_QUOTE
        if not secret(text[i:end]):
            i += 1
            continue
        while end < len(text) and secret(text[i : end + 1]):
            end += 1
        out += [text[start:i], REDACTED]
        start = i = end
    return "".join([*out, text[start:]])


def _strings(value: object) -> list[str]:
    """Every string in ``value`` (JSON-like), keys aside."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        value = list(value.values())
    return [text for item in value for text in _strings(item)] if isinstance(value, list | tuple) else []


_SHORTEST_QUOTE = 4  # shorter runs are words any message and any secret may share (")", "an")
_QUOTED_PART = re.compile(r"(['\"])((?:(?!\1).)+)\1")
_LAST_PART = re.compile(r"(?<=: )((?:(?!: ).)+)$")


__all__ = ["redact_values"]
