"""A management request's body, read within limits and parsed as JSON every later step can use.

The ASGI server in front bounds neither the body's size nor its arrival, and Python's JSON parser takes
what the API must refuse: names twice, NaN, integers past what it reads, nesting past the recursion
limit, lone surrogates no encoder writes later. Each is a 4xx here, before a handler sees the value.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from ..config.limits import MIB
from ..json_names import AmbiguousJson, no_constant, unique_names
from ..strict_numbers import non_finite_numbers
from .errors import Invalid, PayloadTooLarge, RequestTimeout, UnsupportedMediaType
from .head import content_length, has_body


@dataclass(frozen=True, kw_only=True)
class BodyLimits:
    """What one management request body may be.

    Args:
        max_bytes: the largest body, in bytes (default 1 MiB); more is a 413, whether announced by
            Content-Length or found while reading a chunked body (never read further).
        timeout: seconds the whole body may take to arrive (default 10); slower is a 408.
        max_depth: how deeply JSON arrays and objects may nest (default 32); deeper is a 422.
    """

    max_bytes: int = MIB
    timeout: float = 10.0
    max_depth: int = 32


async def read_body(request: Request, limits: BodyLimits) -> bytes:
    """The request body, refused (413) as soon as it exceeds ``limits.max_bytes``, or (408) too slow."""
    declared = content_length(request)
    if declared is not None and declared > limits.max_bytes:
        raise PayloadTooLarge(f"the body is larger than {limits.max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(limits.timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limits.max_bytes:
                    raise PayloadTooLarge(f"the body is larger than {limits.max_bytes} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeout(f"the body did not arrive within {limits.timeout:g} s") from None
    return b"".join(chunks)


async def read_json(request: Request, limits: BodyLimits) -> Any:
    """The body as JSON within ``limits`` (413, 408, or 422 for invalid or too deeply nested JSON).

    A body not typed ``application/json`` is a 415, unread, untyped too: a page the admin visits can
    post a form or plain text cross-site (``<form enctype="text/plain">`` makes a JSON-shaped body), or
    an untyped Blob with ``fetch(..., {mode: "no-cors"})``, and an ``auth`` that trusts a cookie or a
    client certificate would admit it (:mod:`.forgery` refuses them before ``auth``; this is the
    same rule for any other caller).
    """
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json" and has_body(request):
        shown = f"is {media_type}" if media_type else "has no Content-Type"
        raise UnsupportedMediaType(f"the body {shown}: send JSON as application/json")
    raw = await read_body(request, limits)
    if len(raw) > _PARSED_INLINE:  # ~140 ms of the event loop a MB: every connection of the worker waits
        return await asyncio.to_thread(_parsed, raw, limits)
    return _parsed(raw, limits)


_PARSED_INLINE = 64 * 1024
"""Bodies up to this size are read on the event loop; larger ones in a thread."""


def _parsed(raw: bytes, limits: BodyLimits) -> Any:
    """``raw`` as JSON within ``limits``: :func:`read_json`'s checks after the body is read."""
    try:
        value = json.loads(raw, object_pairs_hook=unique_names, parse_constant=no_constant) if raw else None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise Invalid("the body is not valid JSON", [f"(body): {exc}"]) from None
    except AmbiguousJson as exc:
        raise Invalid("the body is not valid JSON", [f"(body): {exc}"]) from None
    except ValueError:  # Python reads no integer of more than 4,300 digits: a 500 and a traceback before
        raise Invalid("the body is not valid JSON", ["(body): an integer too long to read"]) from None
    except RecursionError:  # nested deeper than Python parses: certainly deeper than the limit
        raise Invalid(
            "the body is nested too deeply", [f"(body): nested deeper than {limits.max_depth} levels"]
        ) from None
    if _depth(value, limits.max_depth) > limits.max_depth:
        raise Invalid("the body is nested too deeply", [f"(body): nested deeper than {limits.max_depth} levels"])
    if problems := non_finite_numbers(value):  # 1e999: infinity to Python, Infinity or null once written
        raise Invalid("the body holds a number JSON cannot carry", problems)
    if b"\\u" in raw and (field := _lone_surrogate(value)) is not None:
        # JSON's \ud800 escape decodes to a string UTF-8 cannot encode: every string an admin sends
        # is later encoded (a message's text, a close reason, a header value, the state file).
        shown = field.encode("utf-8", "backslashreplace").decode()  # a name may hold the surrogate itself
        raise Invalid("the body is not valid Unicode", [f"{shown}: a lone surrogate is not valid Unicode"])
    return value


def _lone_surrogate(value: Any) -> str | None:
    """The field path (``reason``, ``apis[0].path``) of the first string or name UTF-8 cannot encode."""
    pending: list[tuple[Any, str]] = [(value, "")]
    while pending:
        node, path = pending.pop()
        if isinstance(node, str):
            if not node.isascii():
                try:
                    node.encode()
                except UnicodeEncodeError:
                    return path or "(body)"
        elif isinstance(node, dict):
            for name, child in node.items():
                field = f"{path}.{name}" if path else name
                pending.extend(((name, field), (child, field)))
        elif isinstance(node, list):
            pending.extend((child, f"{path}[{i}]") for i, child in enumerate(node))
    return None


def _depth(value: Any, stop: int) -> int:
    """How deeply ``value`` nests (counting stops a level past ``stop``); iterative, no recursion."""
    deepest, pending = 0, [(value, 0)]
    while pending:
        node, level = pending.pop()
        if isinstance(node, dict | list):
            level += 1
            deepest = max(deepest, level)
            if deepest > stop:
                return deepest
            pending.extend((child, level) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


__all__ = ["BodyLimits", "read_body", "read_json"]
