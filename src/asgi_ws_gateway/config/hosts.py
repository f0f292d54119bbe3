"""Host patterns (``chat.internal:9000``, ``*.internal``, ``*``): parsing, matching, and the field type
the management settings list them in.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from .limits import MAX_URL
from .problems import shorten

_HOST_PATTERN = re.compile(r"\*|(\*\.)?[a-z0-9_-]+(\.[a-z0-9_-]+)*|[0-9a-f:.]*:[0-9a-f:.]*")
Host = tuple[str, int | None]
"""A host pattern as (lower-case host, port or None for any): ``*`` and ``*.domain`` match many."""


def parse_host(entry: str) -> Host:
    """``chat.internal``, ``chat.internal:9000``, ``[::1]:9000``, ``*.internal`` or ``*`` as a :data:`Host`."""
    try:
        parts = urlsplit("//" + entry)
        port = parts.port
    except ValueError:
        raise ValueError(f"{shorten(entry)} is not host[:port]") from None
    host = parts.hostname
    if not host or parts.path or parts.query or parts.fragment or parts.username is not None:
        raise ValueError(f"{shorten(entry)} is not host[:port]")
    if "*" in host and host != "*" and not (host.startswith("*.") and "*" not in host[2:]):
        raise ValueError(f"{shorten(entry)}: a wildcard is '*' or a leading '*.' (*.internal)")
    if not _HOST_PATTERN.fullmatch(host):
        raise ValueError(f"{shorten(entry)} is not host[:port]")
    return host, port


def host_matches(patterns: Iterable[Host], name: str, port: int | None) -> bool:
    """Whether host ``name`` (lower case) at ``port`` is one of ``patterns`` (:func:`parse_host`'s)."""
    for allowed_name, allowed_port in patterns:
        if allowed_port is not None and allowed_port != port:
            continue
        if allowed_name in ("*", name) or (allowed_name.startswith("*.") and name.endswith(allowed_name[1:])):
            return True
    return False


def _host_pattern(value: str) -> str:
    try:
        parse_host(value)
    except ValueError as exc:
        raise PydanticCustomError("host_pattern", str(exc)) from None
    return value


HostPattern = Annotated[str, Field(max_length=MAX_URL), AfterValidator(_host_pattern)]
"""``host``, ``host:port``, ``*.domain`` or ``*`` (:func:`parse_host`)."""


__all__ = [
    "Host",
    "HostPattern",
    "host_matches",
    "parse_host",
]
