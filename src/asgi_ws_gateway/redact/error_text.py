"""An error message without what it quotes of secrets (a pattern, a value a policy's settings hold)."""

from __future__ import annotations

import re
from collections.abc import Mapping

from .credential_names import CREDENTIAL_VALUES, REDACTED, credential_setting, is_credential_name


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


def redact_input(value: object) -> object:
    """``value`` (JSON-like: the input a validation error quotes, ``(got ...)``) with every credential in
    it ``REDACTED``: the value of a key named as one (``{'api_key': [...]}``, ``{'secret': {...}}``), and
    the :data:`CREDENTIAL_VALUES` of a mapping that names one (``{'claim': 'api_key', 'equals': ...}``,
    ``{'header': 'X-Api-Key', 'value': ...}``), at any depth. A value of the wrong type (a mapping where
    a list belongs) was quoted whole, credentials and all, by ``check``, start-up and a 422.

    >>> redact_input({"api_key": ["s3cret"], "room": "a"})
    {'api_key': 'REDACTED', 'room': 'a'}
    """
    if isinstance(value, Mapping):
        named = credential_setting(value) is not None
        return {key: REDACTED if _secret(key, item, named) else redact_input(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_input(item) for item in value]
    return value


def _secret(key: object, item: object, named: bool) -> bool:
    """Whether ``item``, under ``key`` in a mapping (``named``: one naming a credential), is a credential."""
    if item is None:
        return False
    return (isinstance(key, str) and is_credential_name(key)) or (named and key in CREDENTIAL_VALUES)


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


__all__ = ["redact_input", "redact_values"]
