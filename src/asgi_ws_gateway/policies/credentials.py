"""``credential-expiry``: close a connection when its JWT expires, unless the client refreshes it in-band.

A connection admitted by ``validate-jwt`` carries the token's ``exp``. This policy closes the client
with 1008 ``token expired`` (and the upstream with 1001) once ``exp + grace`` has passed. Before
that, the client may send a refresh message, a JSON text message such as::

    {"type": "auth.refresh", "token": "<a new JWT>"}

The new token is validated by the same ``validate-jwt`` policy that admitted the connection (keys,
algorithms, issuer, audience, claim checks) and must name the same subject (the same ``iss`` and
``sub``, or for a token without ``sub`` the same ``azp``, ``client_id`` or ``appid``); the deadline
moves to its ``exp`` and ``{jwt.*}`` take its claims. The refresh message is never forwarded
upstream. The client is answered ``{"type": "auth.refresh.ok", "expires_at": <exp>}``, or with an
error reply when the token is refused (the connection stays open until the old deadline).

A connection with no expiring credential (no ``validate-jwt``, or a token without ``exp``) is not
affected; refresh messages on it go upstream like any other message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable
from typing import Any

import orjson
from pydantic import Field

from ..errors import DropMessage, HandshakeDenied
from ..handshake.context import CredentialVerifier
from ..json_names import AmbiguousJson, binary_json_text, first_json_value, json_to_some_reader, strict_json
from ..messages.context import ConnectionContext, Direction, MessageHandler, WsMessage
from .base import PolicyEnv, PolicySettings
from .jwt_subject import SUBJECT_CLAIMS, token_subject
from .message_base import register_message_policy


class CredentialExpirySettings(PolicySettings):
    """``credential-expiry``: close with 1008 when the JWT expires; refresh in-band to stay open."""

    grace: float = Field(
        default=0.0, ge=0, le=300, description="Seconds after the token's exp before the close (at most 300, as "
        "validate-jwt's clock_skew: more keeps an expired credential's connection open)."
    )  # fmt: skip
    refresh_type: str | None = Field(
        default="auth.refresh", min_length=1, description="Value of type_field marking a refresh message (null: none)."
    )
    type_field: str = Field(default="type", min_length=1, description="The JSON field holding the message type.")
    token_field: str = Field(default="token", min_length=1, description="The JSON field holding the new token.")
    ack: bool = Field(default=True, description="Answer a refresh with {type: <refresh_type>.ok, expires_at: exp}.")
    same_subject: bool = Field(
        default=True,
        description="The new token must name the same subject: the same iss, and the same sub (else azp, "
        "client_id or appid, the first present); a token naming none cannot refresh.",
    )
    refresh_limit: int = Field(
        default=5,
        ge=1,
        le=10_000,
        description="Refresh messages a connection may send per refresh_window (1 to 10000); more are dropped "
        "unchecked (refresh_rate_limited).",
    )
    refresh_window: float = Field(
        default=60.0, ge=1, le=86_400, description="Seconds of the refresh_limit's fixed windows (1 to 86400)."
    )


_OBJECT = frozenset("{")


class _Deadline:
    """A connection's deadline, and its refreshes in the current window (each costs a signature check)."""

    __slots__ = ("at", "moved", "refreshes", "window_ends")

    def __init__(self, at: float) -> None:
        self.at = at
        self.moved = asyncio.Event()
        """Set when a refresh moves :attr:`at`: the watch, asleep until the old deadline, reads it again."""
        self.refreshes = 0
        self.window_ends = 0.0

    def move(self, at: float) -> None:
        self.at = at
        self.moved.set()

    async def passed(self) -> None:
        """Return once :attr:`at` has passed, wherever refreshes moved it meanwhile (sooner too: the watch
        slept until the deadline it had read, and a refresh to a token expiring sooner kept the
        connection open to the old token's expiry)."""
        while (left := self.at - time.time()) > 0:
            self.moved.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, 3600.0)):
                    await self.moved.wait()


@register_message_policy("credential-expiry")
class CredentialExpiry:
    Settings = CredentialExpirySettings
    directions = ("inbound",)

    def __init__(self, settings: CredentialExpirySettings, env: PolicyEnv) -> None:
        self.name = "credential-expiry"
        self.settings = settings
        self.marker = f'"{settings.refresh_type}"' if settings.refresh_type is not None else None

    def attach(self, connection: ConnectionContext, direction: Direction) -> MessageHandler | None:
        handshake = connection.handshake
        expires = handshake.credential_expires_at
        if expires is None:
            return None
        s = self.settings
        deadline = _Deadline(expires + s.grace)

        async def watch() -> None:
            await deadline.passed()
            connection.count(self.name, "close", "inbound", "token_expired")
            await connection.close(1008, "token expired", upstream_reason="client token expired")

        connection.start(watch)
        marker, verifier = self.marker, handshake.credential_verifier
        if marker is None or verifier is None:
            return None

        def check(message: WsMessage) -> Awaitable[None] | None:
            value = self._refresh_message(message)
            if value is None:
                return None
            # A refresh is consumed here, before a rate-limit-messages after this policy counts it, and
            # costs a signature check: 200 forged ones a second on one connection were each verified.
            now = time.monotonic()
            if now >= deadline.window_ends:
                deadline.refreshes, deadline.window_ends = 0, now + s.refresh_window
            deadline.refreshes += 1
            if deadline.refreshes > s.refresh_limit:
                raise DropMessage("refresh_rate_limited", f"more than {s.refresh_limit} refresh messages "
                                  f"per {s.refresh_window:g} s")  # fmt: skip
            return self._refresh(connection, deadline, value, verifier)

        return check

    def _refresh_message(self, message: WsMessage) -> dict[str, Any] | None:
        """The refresh message's JSON object, or None when ``message`` is no refresh message to any reader.

        A refresh is never forwarded: the upstream must not read one the gateway did not check. Readers
        take one where a substring test of the text would not: escaped (``"auth\\u002erefresh"``),
        under a name of another case (``"TYPE"``: Go and ASP.NET Core read it as ``type``), in a binary
        message (Node's ``JSON.parse(data)``, Python's ``json.loads(data)``), or in JSON that only laxer
        readers take (NaN, a lone surrogate, a control character, anything after the object: Go's
        ``json.Decoder`` and Jackson read the first value): the last is dropped as ``invalid_json``.

        Raises:
            AmbiguousJson: a name twice in one object (the pipeline drops it as ``ambiguous_json``).
            DropMessage: a refresh message to some readers that is not strict JSON.
        """
        marker, data = self.marker, message.data
        assert marker is not None
        if isinstance(data, bytes):
            decoded = binary_json_text(data, starts=_OBJECT)  # None: an image, protobuf, ...: no JSON object
            if decoded is None:
                return None
            text = decoded
        else:
            text = data
        if marker not in text and "\\u" not in text:
            return None  # cheap: most messages are not refresh messages
        try:
            value = message.json() if isinstance(data, str) else strict_json(text)
        except AmbiguousJson:  # perhaps a refresh, read as another by the upstream: the pipeline
            raise  # drops it as ambiguous_json
        except ValueError:
            if not json_to_some_reader(data) or not self._refresh_to_some_reader(_lax(text)):
                return None
            raise DropMessage("invalid_json", "a refresh message must be JSON every reader reads alike") from None
        return value if self._is_refresh(value) else None

    def _is_refresh(self, value: Any) -> bool:
        if not isinstance(value, dict):
            return False
        return _field(value, self.settings.type_field) == self.settings.refresh_type

    def _refresh_to_some_reader(self, value: Any) -> bool:
        """Whether an object read as its pairs is a refresh to a reader keeping a name's first value,
        its last, or matching it ignoring case."""
        if not isinstance(value, _Pairs):
            return False
        type_field, refresh_type = self.settings.type_field.casefold(), self.settings.refresh_type
        return any(name.casefold() == type_field and item == refresh_type for name, item in value)

    async def _refresh(
        self, connection: ConnectionContext, deadline: _Deadline, value: dict[str, Any], verifier: CredentialVerifier
    ) -> None:
        s = self.settings
        token = _field(value, s.token_field)
        if not isinstance(token, str) or not token:
            raise DropMessage("refresh_without_token", f"the refresh message has no '{s.token_field}'")
        try:
            claims = await verifier.verify_token(token)
        except HandshakeDenied as denial:
            # A 5xx detail (JWKS or store trouble) is internal, as in a handshake's response body.
            detail = denial.detail if denial.status < 500 else "the token cannot be checked right now"
            raise DropMessage(f"refresh_{denial.reason}", detail) from None
        handshake = connection.handshake
        old = handshake.claims or {}
        if s.same_subject:
            _check_same_subject(old, claims)
        exp = claims.get("exp")
        expires = float(exp) if isinstance(exp, int | float) else None
        handshake.claims, handshake.credential_expires_at = claims, expires
        deadline.move(expires + s.grace if expires is not None else float("inf"))
        if s.ack:
            ack = {s.type_field: f"{s.refresh_type}.ok", "expires_at": exp}
            await connection.send_to_client(orjson.dumps(ack).decode())
        raise DropMessage("token_refreshed", reply=False, action="refresh")  # consumed: never forwarded


def _check_same_subject(old: dict[str, Any], new: dict[str, Any]) -> None:
    """Refuse a refresh whose token is not for the connection's principal (``jwt_subject``).

    Comparing ``sub`` alone let a connection admitted with a client-credentials token (no ``sub``)
    take any other sub-less token of the issuer: another client's rights and expiry. A token naming
    no principal at all cannot be told apart from another's, so such a refresh is refused.

    Raises:
        DropMessage: ``refresh_without_subject`` or ``refresh_other_subject``.
    """
    subject, new_subject = token_subject(old), token_subject(new)
    if subject is None or new_subject is None:
        whose = "the connection's token" if subject is None else "the new token"
        raise DropMessage("refresh_without_subject", f"{whose} names no subject ({', '.join(SUBJECT_CLAIMS)}): "
                          "it cannot be told to be the same principal's")  # fmt: skip
    # A subject is an issuer's: "alice" of one tenant's issuer is not "alice" of another's.
    if (old.get("iss"), subject) != (new.get("iss"), new_subject):
        raise DropMessage("refresh_other_subject", f"the new token is for another subject (iss and {subject[0]})")


def _field(value: dict[str, Any], name: str) -> object:
    """``value[name]``, the name matched ignoring case as Go and ASP.NET Core match it (a message holding
    two such names is refused before: ``json_names.check_unique_names``)."""
    if name in value:
        return value[name]
    folded = name.casefold()
    return next((v for k, v in value.items() if k.casefold() == folded), None)


class _Pairs(list[tuple[str, Any]]):
    """A JSON object as its names and values, in order: every reader's reading of it."""


_LAX = json.JSONDecoder(object_pairs_hook=_Pairs, parse_int=str, parse_float=str, parse_constant=str, strict=False)


def _lax(text: str) -> Any:
    """The first value of ``text`` as lenient readers read it (NaN, lone surrogates, control characters,
    anything after it, numbers of any length), objects as :class:`_Pairs`; None when none is read."""
    try:
        return first_json_value(text, _LAX)[0]
    except (ValueError, RecursionError):
        return None


__all__ = ["CredentialExpiry"]
