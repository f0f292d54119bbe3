"""An upstream's close reason without the credentials the gateway sent in its handshake.

A backend that closes with ``4001 "bad key <the X-Api-Key it got>"`` handed the client (the close
frame goes on) and the access log (its close reason) the operator's credential the gateway had added
(``set-header``, ``set-query-parameter``, a configured ``?token=``), as an error page did before
:mod:`.refusal_secrets` took them out of refusals. The same values (:func:`.refusal_secrets.sent_credentials`
of the connection's upstream request) are ``REDACTED`` in its close reason, on every carrier.

Worked out once, and only when a close reason long enough to hold one arrives: a connection holds a
reference to its request until then, nothing is paid per frame, and one whose request carries no
credential holds an empty list.
"""

from __future__ import annotations

from ..redact import REDACTED
from .base import UpstreamRequest
from .refusal_secrets import MIN_SCRUBBED, scrubbed_bytes, sent_credentials


class SentCredentials:
    """The credentials the gateway sent one upstream (its handshake ``request``), for its close reason."""

    __slots__ = ("_found", "_request")

    def __init__(self, request: UpstreamRequest) -> None:
        self._request: UpstreamRequest | None = request
        self._found: list[bytes] = []

    def scrubbed(self, reason: str) -> str:
        """``reason`` with each credential sent ``REDACTED`` (itself when none is there); also its end
        when that is a credential's start: a reason is cut to 123 bytes, and a long key echoed near its
        end arrives cut (an API key of 200 bytes arrived but for its last ~90). Never longer than it was."""
        data = reason.encode()
        if len(data) < MIN_SCRUBBED:
            return reason
        if self._request is not None:  # the first reason long enough: worked out now, once
            request, self._request = self._request, None
            self._found = sent_credentials([request])
        scrubbed = _cut_end(scrubbed_bytes(data, self._found), self._found)
        # (A credential's bytes may end inside a character: what is left of it goes.)
        return reason if scrubbed == data else scrubbed.decode(errors="ignore")


def _cut_end(data: bytes, credentials: list[bytes]) -> bytes:
    """``data`` without an end of 8 bytes or more that begins one of ``credentials``."""
    for secret in credentials:
        for length in range(min(len(secret) - 1, len(data)), MIN_SCRUBBED - 1, -1):
            if data.endswith(secret[:length]):
                return data[:-length] + REDACTED.encode()
    return data


__all__ = ["SentCredentials"]
