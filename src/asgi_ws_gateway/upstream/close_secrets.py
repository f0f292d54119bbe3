"""An upstream's close reason without the credentials the gateway sent in its handshake.

A backend that closes with ``4001 "bad key <the X-Api-Key it got>"`` handed the client (the close
frame goes on) and the access log (its close reason) the operator's credential the gateway had added
(``set-header``, ``set-query-parameter``, a configured ``?token=``), as an error page did before
:mod:`.refusal_secrets` took them out of refusals. The same values (:func:`.refusal_secrets.sent_credentials`
of the connection's upstream request) are ``REDACTED`` in its close reason, on every carrier.

A reason holds 123 bytes, and a backend that quotes a long key quotes part of it: cut at the end
(``bad key sk_live_0123…``), from its middle on, or its middle alone; each run of 8 bytes or more of a
credential goes too (:func:`.refusal_secrets.without_pieces`). Its bytes are looked for as sent and as
a backend writes them back (:func:`.refusal_secrets.sent_credentials`): as UTF-8 (a backend echoes the
Latin-1 byte ``é`` of a header as the two bytes of its character), percent-, JSON- and HTML-escaped, a
``Basic`` one decoded. What a cut leaves of a character is dropped, never a piece of one shown.

Worked out once, and only when a close reason long enough to hold one arrives: a connection holds a
reference to its request until then, nothing is paid per frame, and one whose request carries no
credential holds an empty list.
"""

from __future__ import annotations

from .base import UpstreamRequest
from .refusal_secrets import sent_credentials, too_costly
from .secret_index import MIN_SCRUBBED, SecretIndex

_NOTHING = SecretIndex(())
"""No credential: shared (an empty index is never written to), not built for every connection."""


class SentCredentials:
    """The credentials the gateway sent one upstream (its handshake ``request``), for its close reason."""

    __slots__ = ("_found", "_request", "_too_costly")

    def __init__(self, request: UpstreamRequest) -> None:
        self._request: UpstreamRequest | None = request
        self._found = _NOTHING  # one per connection: indexed at the first reason that needs it
        self._too_costly = False

    def scrubbed(self, reason: str) -> str:
        """``reason`` with each credential sent ``REDACTED`` (itself when none is there), and each run of
        8 bytes or more of one: a reason is cut to 123 bytes, and a long key echoed arrives cut (an API
        key of 200 bytes arrived but for its last ~90), or begins before the reason does. Never longer
        than it was."""
        data = reason.encode(errors="surrogatepass")
        if len(data) < MIN_SCRUBBED:
            return reason
        if self._request is not None:  # the first reason long enough: worked out now, once
            request, self._request = self._request, None
            credentials = sent_credentials([request])
            self._too_costly = too_costly(credentials)
            self._found = _NOTHING if self._too_costly else SecretIndex(credentials)
        if self._too_costly:
            return ""  # more credentials than are worth indexing: the reason goes, as a refusal's body does
        scrubbed = self._found.scrubbed(data)
        # (A credential's bytes may end inside a character: what is left of it goes.)
        return reason if scrubbed == data else scrubbed.decode(errors="ignore")


__all__ = ["SentCredentials"]
