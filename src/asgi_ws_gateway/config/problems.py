"""Validation errors as people read them: ``apis[1].upstreams[0].url: message``, one problem per field,
no credential quoted and no huge value echoed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from ..redact import is_credential_name, redact_free_text, redact_input, redact_values
from .limits import MAX_NAME

_OWN_ERRORS = ("ws_url", "url_", "asgi_", "tls_", "path_", "policy_", "limit_", "text_", "host_")


def union_member(part: object) -> bool:
    """A union member pydantic puts in an error's location (``passthrough.literal['auto']``, ``.bool``)."""
    return isinstance(part, str) and _UNION_MEMBER.match(part) is not None


_UNION_MEMBER = re.compile(r"^(str|int|float|bool|list|dict|none|[a-z-]+\[.*\]|[A-Z][A-Za-z]*Settings)$")


def _member_at(error: Any, i: int) -> bool:
    loc = error["loc"]
    last = len(loc) - 1 if error["type"] == "extra_forbidden" else len(loc)  # an unknown key named "bool" stays
    return i < last and union_member(loc[i])


def shape_selected(errors: Sequence[Any]) -> list[Any]:
    """Only the errors of the member the value's shape selects, for "a thing or a list of things".

    Pydantic tries every member of ``X | list[X]`` and reports what each refused: a mapping with one
    bad field also got "Input should be a valid list", a list with one bad item "Input should be a
    valid dictionary". A list selects the ``list[...]`` member, anything else the others; a value
    that fits no member's shape keeps every member's error (what each wanted).
    """
    errors = list(errors)
    groups: dict[tuple[Any, ...], list[int]] = {}  # where a union's members were tried -> its errors
    for n, error in enumerate(errors):
        for i in range(len(error["loc"])):
            if _member_at(error, i):
                groups.setdefault(tuple(error["loc"][:i]), []).append(n)
    dropped: set[int] = set()
    for where, found in groups.items():
        at = len(where)
        listed = [n for n in found if str(errors[n]["loc"][at]).startswith("list[")]
        single = [n for n in found if n not in listed]
        if not listed or not single:
            continue
        tops = [errors[n] for n in found if len(errors[n]["loc"]) == at + 1]  # a member refused the value itself
        if not tops:
            continue
        if isinstance(tops[0]["input"], list):
            dropped.update(single)
        elif not all(len(errors[n]["loc"]) == at + 1 and errors[n]["type"].endswith("_type") for n in single):
            dropped.update(listed)  # a single member took the value's shape: its errors are the ones
    return [error for n, error in enumerate(errors) if n not in dropped]


def describe_errors(errors: Sequence[Any]) -> list[str]:
    """Pydantic's errors as ``apis[1].upstreams[0].url: message``, one problem per field.

    A value every member of a union refused is one problem whose message names what each member
    wanted (``passthrough: Input should be 'auto'; Input should be a valid boolean (got 'AUTO')``);
    of "a thing or a list of things", only the errors of the form the value has (:func:`shape_selected`).
    """
    fields: dict[tuple[Any, ...], list[Any]] = {}
    for error in shape_selected(errors):
        loc = error["loc"]
        key = len(loc) - 1 if error["type"] == "extra_forbidden" else len(loc)  # an unknown key named "bool" stays
        field = tuple(part for i, part in enumerate(loc) if i >= key or not union_member(part))
        fields.setdefault(field, []).append(error)
    return [_describe(field, found) for field, found in fields.items()]


def _describe(loc: tuple[Any, ...], errors: list[Any]) -> str:
    where = ""
    for part in loc:
        if isinstance(part, str) and len(part) > MAX_NAME:  # an unknown key is echoed: never a huge one
            part = part[:MAX_NAME] + "..."
        where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
    first = errors[0]
    message = "; ".join(dict.fromkeys(error["msg"] for error in errors))
    if first["type"] in {"extra_forbidden"}:
        message = "unknown field"
    elif _credential_field(loc):  # its value is never quoted, not even by a validator's message
        message = redact_values(message, first.get("input"))
    elif first["type"] != "missing" and not first["type"].startswith(_OWN_ERRORS):
        message = f"{message} (got {quoted(first['input'])})"
    return f"{where or '(top level)'}: {message}"


def _credential_field(loc: tuple[Any, ...]) -> bool:
    """Whether the field is named as a credential (``key_sha256``, a ``password``): the error about a
    wrong value must not quote it (``check`` and start-up write errors to terminals and logs)."""
    name = next((part for part in reversed(loc) if isinstance(part, str)), "")
    return is_credential_name(name) and name not in _NAMED_LIKE_CREDENTIALS


_NAMED_LIKE_CREDENTIALS = frozenset({"passthrough", "max_keys"})  # a mode and a count


def quoted(value: Any) -> str:
    """``value`` as an error quotes it (``(got ...)``): cut, each credential in it ``REDACTED``, by name
    (:func:`~asgi_ws_gateway.redact.redact_input`) and by shape (a ``Bearer`` token, ``token=...``)."""
    return redact_free_text(shorten(redact_input(value)))


def shorten(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters: an error must not echo a 10 MB field back."""
    text = repr(value) if not isinstance(value, str | bytes) or len(value) <= limit else repr(value[:limit])
    return text if len(text) <= limit + 2 else text[:limit] + "..."


__all__ = [
    "describe_errors",
    "quoted",
    "shape_selected",
    "shorten",
    "union_member",
]
