"""The rule of a management API path (``GatewayManagement(path=...)``, ``run --management``).

The mount compares the request's decoded path with it, and then the path as sent with it byte for
byte (``mount._spelled_as_configured``: a proxy in front that matches raw paths must see it there), so
only a path whose characters a client sends as they are can ever be reached: ``/_gateway?x=1``,
``/gw#x``, ``/ gw``, ``/_g%61teway``, ``/\uff47\uff57`` (fullwidth) or ``/gw/{x}`` served nothing, and ``/_gw/../x``
nothing a browser or a proxy sends (they resolve the dot segment). Each started without a word.
"""

from __future__ import annotations

import re

# RFC 3986 pchar without percent-encodings: unreserved and sub-delims, ':' and '@'.
_SENT_AS_WRITTEN = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=:@-]+")


MAX_MANAGEMENT_PATH = 256
"""Characters of the management API's path (``--management``, ``$ASGI_WS_GATEWAY_MANAGEMENT_PATH``)."""


def management_path_problem(path: str) -> str | None:
    """Why ``path`` cannot be the management API's (``None`` when it can), leading and trailing ``/`` aside."""
    segments = path.strip("/").split("/")
    if segments == [""]:
        return "a path of its own, e.g. /_gateway (or a port)"
    for segment in segments:
        if segment in ("", ".", ".."):
            return "an empty or dot segment ('//', '.', '..'), which clients and proxies do not send as written"
        if not _SENT_AS_WRITTEN.fullmatch(segment):
            return (
                "letters, digits and -._~!$&'()*+,;=:@ only, between '/': a client sends any other character "
                "percent-encoded, and the API is reached only by the path as written"
            )
    return None


__all__ = ["MAX_MANAGEMENT_PATH", "management_path_problem"]
