"""Where a request carries a bearer token: ``validate-jwt``'s ``token:`` places, RFC 6750's own, every copy.

Sans-I/O: reads a handshake's request view; the query and subprotocol copies found are taken out of
the upstream request.
"""

from __future__ import annotations

import re

from pydantic import ConfigDict, Field, model_validator

from ..config.fields import CookieName, HeaderName, QueryName
from ..handshake.context import HandshakeContext
from ..param_names import fold_name
from ..strict_numbers import StrictNumbers

_BLANKS = re.compile(r"[ \t]+")
"""What ends an ``Authorization``-style value's scheme (RFC 9110: spaces; tabs as lenient parsers read them)."""


class TokenSource(StrictNumbers):
    """Where to look for the token; set exactly one of ``header``, ``query``, ``cookie``, ``subprotocol``."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    header: HeaderName | None = Field(default=None, description="A request header, e.g. Authorization.")
    scheme: str | None = Field(
        default=None, description="Scheme before the token in the header (default: Bearer for Authorization)."
    )
    query: QueryName | None = Field(default=None, description="A query parameter (removed from the upstream URL).")
    cookie: CookieName | None = Field(default=None, description="A cookie.")
    subprotocol: str | None = Field(
        default=None,
        description="A prefix: the offered subprotocol '<prefix><token>' carries the token (not offered upstream).",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> TokenSource:
        if sum(x is not None for x in (self.header, self.query, self.cookie, self.subprotocol)) != 1:
            raise ValueError("set exactly one of header, query, cookie, subprotocol")
        if self.scheme is not None and self.header is None:
            raise ValueError("scheme applies to header only")
        return self


TokenReading = tuple[TokenSource, str, str]
"""A token source with its header's name and scheme in lower case (the scheme "" when the value is the
token alone; both "" for other sources): worked out once, when the policy is built."""


def token_readings(sources: list[TokenSource]) -> list[TokenReading]:
    readings: list[TokenReading] = []
    for source in sources:
        header = source.header.lower() if source.header is not None else ""
        scheme = source.scheme if source.scheme is not None else ("Bearer" if header == "authorization" else "")
        readings.append((source, header, scheme.lower()))
    return readings


def rfc6750_sources_not_in(sources: list[TokenSource]) -> list[TokenSource]:
    """RFC 6750's places for a bearer token (§2.1 ``Authorization: Bearer``, §2.3 ``access_token``
    in the query) that ``sources`` do not name: upstreams read a token there whatever the policy reads."""
    implicit: list[TokenSource] = []
    if not any(s.header is not None and s.header.lower() == "authorization" for s in sources):
        implicit.append(TokenSource(header="Authorization"))
    if not any(s.query is not None and fold_name(s.query) == "access_token" for s in sources):
        implicit.append(TokenSource(query="access_token"))
    return implicit


def token_copies(sources: list[TokenReading], context: HandshakeContext) -> tuple[list[str], int]:
    """The token copies ``sources`` find (query and subprotocol ones taken out of the upstream
    request), and how many values of a token header carry a credential in another scheme."""
    request = context.request
    found: list[str] = []
    foreign = 0  # values of a token header in another scheme: credentials the upstream may read
    for source, header, scheme in sources:
        if header:
            for value in request.header_values(header):
                if scheme:
                    # The scheme ends at a space or a tab: a tab-separated token is read (and checked)
                    # as a lenient upstream reads it; "Bearer:x" or "Basic x" is another credential.
                    value = value.strip(" \t")
                    if "\t" in value:
                        given, *rest = _BLANKS.split(value, maxsplit=1)
                        value = rest[0] if rest else ""
                    else:  # the usual value: split in C, the blanks after the first left to strip() below
                        given, _, value = value.partition(" ")
                    if given.lower() != scheme:
                        foreign += 1
                        continue
                found.append(value.strip())
        elif source.query is not None:  # every spelling of the name (names.fold_name), as for a cookie
            values = request.query_copies(source.query)
            if values:
                context.upstream.remove_query(source.query)
                found += values
        elif source.cookie is not None:
            found += request.cookie_copies(source.cookie)
        elif source.subprotocol is not None:
            # Any case of the prefix: an upstream reading "Bearer.<token>" beside the checked
            # "bearer.<token>" took an unchecked token (subprotocols compare exactly, its reader may not).
            prefix = source.subprotocol.lower()
            for offered in request.subprotocols:
                if len(offered) > len(prefix) and offered[: len(prefix)].lower() == prefix:
                    context.upstream.remove_subprotocol(offered)
                    found.append(offered[len(prefix) :])
    return found, foreign


__all__ = ["TokenReading", "TokenSource", "rfc6750_sources_not_in", "token_copies", "token_readings"]
