"""What :class:`~.client.ManagementClient` accepts from the management API: a bounded body, JSON
of the shape each call expects.

The endpoint may be hostile or compromised, or a proxy may stand in front of it: every answer is
read to at most a size, counted once inflated (a 1 MB gzip body was 1 GiB in memory), parsed as
strict JSON no deeper than :data:`MAX_DEPTH`, and checked for its shape here, in one place. Anything
else raises :class:`AnswerProblem`, which says what was wrong without quoting the body.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ..json_depth import nests_deeper
from ..json_names import no_constant

if TYPE_CHECKING:
    import httpx2

DEFAULT_MAX_ANSWER = 64 * 1024 * 1024
"""Bytes an answer's body may have, inflated (64 MiB): a configuration exported, a thousand connections."""
ERROR_PREFIX = 64 * 1024
"""Bytes of a refusal's body read (64 KiB): its problem details; the rest of a huge error page is left unread."""
MAX_DEPTH = 64
"""Levels an answer's JSON may nest (the API's own documents: a few, a policy's settings 16 more)."""

Shape = Callable[[Any], Any]


class AnswerProblem(ValueError):
    """The answer is not one the call expects (too big, not JSON, another shape): the reason, no body."""


async def read_body(response: httpx2.Response, limit: int, *, truncate: bool = False) -> bytearray:
    """The body of a streamed ``response``, inflated as it arrives, at most ``limit`` bytes.

    Each chunk is inflated :data:`_PIECE` bytes at a time and each piece counted before it is kept:
    the body is the one copy of the answer held (a gzip bomb's first 64 KiB inflated to 64 MiB at
    once, then copied into the body: twice the limit). Returned as the buffer it was read into,
    not copied again.

    Raises:
        AnswerProblem: more than ``limit`` bytes (unless ``truncate``: the first ``limit`` are
            returned, the rest left unread), or a content coding that is not gzip, deflate or
            identity, or not valid in its coding.
    """
    pieces = _inflater(response.headers.get("content-encoding", "identity"))
    body = bytearray()
    try:
        async for chunk in response.aiter_raw():
            for piece in pieces(chunk):
                room = limit - len(body)
                if len(piece) > room:
                    if not truncate:
                        raise AnswerProblem(f"the body is larger than {limit} bytes")
                    body += piece[:room]
                    return body
                body += piece
    except zlib.error:
        raise AnswerProblem("the body is not valid in its Content-Encoding") from None
    return body


_PIECE = 64 * 1024
"""Bytes inflated at a time: the most held besides the body itself, whatever the ratio."""


def _inflater(coding: str) -> Callable[[bytes], Iterator[bytes]]:
    """The pieces a chunk inflates to, each at most :data:`_PIECE` bytes; the client asks for identity."""
    coding = coding.strip().lower()
    if coding in ("", "identity"):
        return lambda chunk: iter((chunk,))
    if coding not in ("gzip", "x-gzip", "deflate"):
        raise AnswerProblem("the body's Content-Encoding is not gzip, deflate or identity")
    decompressor = zlib.decompressobj(zlib.MAX_WBITS | (16 if "gzip" in coding else 0))

    def inflate(chunk: bytes) -> Iterator[bytes]:
        while True:
            piece = decompressor.decompress(chunk, _PIECE)
            if piece:
                yield piece
            chunk = decompressor.unconsumed_tail
            if not chunk and len(piece) < _PIECE:  # a full piece may leave output pending without input
                return

    return inflate


def parse_json(body: bytes | bytearray) -> Any:
    """``body`` as JSON: no NaN or Infinity, no more than :data:`MAX_DEPTH` levels.

    Raises:
        AnswerProblem: not such JSON (the parser's reason, never the text).
    """
    try:
        value = json.loads(body, parse_constant=no_constant, parse_float=_finite)
    except RecursionError:
        raise AnswerProblem("the JSON is nested too deeply") from None
    except ValueError as exc:  # not JSON, not UTF-8, NaN, an integer of thousands of digits
        raise AnswerProblem(f"not JSON ({type(exc).__name__})") from None
    if nests_deeper(value, MAX_DEPTH):
        raise AnswerProblem(f"the JSON is nested deeper than {MAX_DEPTH} levels")
    return value


_KINDS: dict[type, str] = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}


def _finite(text: str) -> float:
    """A JSON number as a float: ``1e999`` is infinity to Python, which JSON cannot write back."""
    number = float(text)
    if math.isinf(number):
        raise ValueError("a number out of range")
    return number


def _kind(value: object) -> str:
    """What a value is, as an error names it (never the value: it may be huge, or a secret)."""
    return "null" if value is None else _KINDS.get(type(value), f"a {type(value).__name__}")


def an_object(value: Any) -> dict[str, Any]:
    """An object (a resource), else :class:`AnswerProblem`."""
    if not isinstance(value, dict):
        raise AnswerProblem(f"expected an object, got {_kind(value)}")
    return value


def a_resource(key: str) -> Shape:
    """An object whose ``key`` (its name or id) is a string, its ``key`` field for a key if it has one."""

    def check(value: Any) -> dict[str, Any]:
        resource = an_object(value)
        if not isinstance(resource.get(key), str):
            raise AnswerProblem(f"expected an object with a string {key!r}, got {_kind(resource.get(key))} for it")
        if "key" in resource and not isinstance(resource["key"], str):
            raise AnswerProblem(f"expected a string 'key', got {_kind(resource['key'])}")
        return resource

    return check


def rows(field: str, key: str) -> Shape:
    """``{field: [resource, ...]}``, each resource as :func:`a_resource` checks it; returns the list."""
    resource = a_resource(key)

    def check(value: Any) -> list[dict[str, Any]]:
        found = an_object(value).get(field)
        if not isinstance(found, list):
            raise AnswerProblem(f"expected {field!r} to be a list, got {_kind(found)}")
        for index, row in enumerate(found):
            try:
                resource(row)
            except AnswerProblem as exc:
                raise AnswerProblem(f"{field}[{index}]: {exc}") from None
        return found

    return check


def a_string_field(field: str) -> Shape:
    """An object's ``field``, a string (the worker that held a connection)."""

    def check(value: Any) -> str:
        found = an_object(value).get(field)
        if not isinstance(found, str):
            raise AnswerProblem(f"expected a string {field!r}, got {_kind(found)}")
        return found

    return check


def warnings_of(value: Any) -> list[str]:
    """The ``warnings`` of an answer (absent: none): a list of strings."""
    found = an_object(value).get("warnings", [])
    if not isinstance(found, list) or not all(isinstance(warning, str) for warning in found):
        raise AnswerProblem("expected 'warnings' to be a list of strings")
    return found


def nothing_or_warnings(value: Any) -> list[str]:
    """A deletion's answer: no body (204), or an object with its ``warnings``."""
    return [] if value is None else warnings_of(value)


def problem_fields(value: Any) -> tuple[str | None, str | None, list[str]]:
    """A refusal's ``title``, ``detail`` and ``problems`` where they are strings (a list of them): what
    a hostile body holds otherwise is dropped, never a reason to fail otherwise than as a refusal."""
    body = value if isinstance(value, dict) else {}
    title, detail, problems = body.get("title"), body.get("detail"), body.get("problems")
    return (
        title if isinstance(title, str) else None,
        detail if isinstance(detail, str) else None,
        [p for p in problems if isinstance(p, str)] if isinstance(problems, list) else [],
    )


__all__ = [
    "DEFAULT_MAX_ANSWER",
    "ERROR_PREFIX",
    "MAX_DEPTH",
    "AnswerProblem",
    "Shape",
    "a_resource",
    "a_string_field",
    "an_object",
    "nothing_or_warnings",
    "parse_json",
    "problem_fields",
    "read_body",
    "rows",
    "warnings_of",
]
