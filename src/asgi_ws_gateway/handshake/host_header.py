"""The ``Host`` header of an upgrade request: exactly one, and a host with an optional port.

RFC 9112 §3.2 asks a server to answer 400 to a request without ``Host``, with more than one, or
with one that is not ``uri-host [":" port]``. The servers under the gateway do not all check it,
and the gateway passes ``Host`` on (``X-Forwarded-Host``, ``{request.host}`` in templates, the
span's ``server.address``): with two values, a proxy in front and an upstream behind could each
believe another one, which is how host-confusion attacks (cache poisoning, tenant routing) start.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ..errors import HandshakeDenied

# uri-host (an IP literal, or a reg-name of unreserved, sub-delims and percent-encoded characters)
# and an optional port (RFC 3986 §3.2.2-3.2.3).
_HOST = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]*)(?::[0-9]{0,5})?")


def check_host(headers: Iterable[tuple[bytes, bytes]]) -> None:
    """Raise :class:`HandshakeDenied` (400, ``bad_request``) unless ``headers`` carry one valid ``Host``."""
    hosts = [value for name, value in headers if name.lower() == b"host"]
    if len(hosts) != 1:
        detail = "the request has no Host header" if not hosts else f"the request has {len(hosts)} Host headers"
        raise HandshakeDenied(400, f"{detail}; exactly one is required", reason="bad_request")
    if _HOST.fullmatch(hosts[0].strip(b" \t")) is None:
        raise HandshakeDenied(400, "the Host header is not a host with an optional port", reason="bad_request")


__all__ = ["check_host"]
