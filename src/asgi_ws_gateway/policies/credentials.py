"""``credential-expiry``: close a connection when its JWT expires, unless the client refreshes it in-band.

A connection admitted by ``validate-jwt`` carries the token's ``exp``. This policy closes the client
with 1008 ``token expired`` (and the upstream with 1001) once ``exp + grace`` has passed. Before
that, the client may send a refresh message, a JSON text message such as::

    {"type": "auth.refresh", "token": "<a new JWT>"}

The new token is validated by the same ``validate-jwt`` policy that admitted the connection (keys,
algorithms, issuer, audience, claim checks) and must name the same subject (``sub``); the deadline
moves to its ``exp`` and ``{jwt.*}`` take its claims. The refresh message is never forwarded
upstream. The client is answered ``{"type": "auth.refresh.ok", "expires_at": <exp>}``, or with an
error reply when the token is refused (the connection stays open until the old deadline).

A connection with no expiring credential (no ``validate-jwt``, or a token without ``exp``) is not
affected; refresh messages on it go upstream like any other message.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any

import orjson
from pydantic import Field

from ..errors import DropMessage, HandshakeDenied
from ..handshake.context import CredentialVerifier
from ..json_names import AmbiguousJson
from ..messages.context import ConnectionContext, Direction, MessageHandler, WsMessage
from .base import PolicyEnv, PolicySettings
from .message_base import register_message_policy


class CredentialExpirySettings(PolicySettings):
    """``credential-expiry``: close with 1008 when the JWT expires; refresh in-band to stay open."""

    grace: float = Field(default=0.0, ge=0, description="Seconds after the token's exp before the close.")
    refresh_type: str | None = Field(
        default="auth.refresh", min_length=1, description="Value of type_field marking a refresh message (null: none)."
    )
    type_field: str = Field(default="type", min_length=1, description="The JSON field holding the message type.")
    token_field: str = Field(default="token", min_length=1, description="The JSON field holding the new token.")
    ack: bool = Field(default=True, description="Answer a refresh with {type: <refresh_type>.ok, expires_at: exp}.")
    same_subject: bool = Field(default=True, description="The new token must have the same sub claim.")


class _Deadline:
    __slots__ = ("at",)

    def __init__(self, at: float) -> None:
        self.at = at


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
            while (left := deadline.at - time.time()) > 0:  # noqa: ASYNC110 - a refresh may move the deadline
                await asyncio.sleep(min(left, 3600.0))
            connection.count(self.name, "close", "inbound", "token_expired")
            await connection.close(1008, "token expired", upstream_reason="client token expired")

        connection.start(watch)
        marker, verifier = self.marker, handshake.credential_verifier
        if marker is None or verifier is None:
            return None

        def check(message: WsMessage) -> Awaitable[None] | None:
            data = message.data
            if not isinstance(data, str) or marker not in data:
                return None  # cheap: most messages are not refresh messages
            try:
                value = message.json()
            except AmbiguousJson:  # perhaps a refresh, read as another by the upstream: the pipeline
                raise  # drops it as ambiguous_json
            except ValueError:
                return None
            if not isinstance(value, dict) or value.get(s.type_field) != s.refresh_type:
                return None
            return self._refresh(connection, deadline, value, verifier)

        return check

    async def _refresh(
        self, connection: ConnectionContext, deadline: _Deadline, value: dict[str, Any], verifier: CredentialVerifier
    ) -> None:
        s = self.settings
        token = value.get(s.token_field)
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
        if s.same_subject and claims.get("sub") != old.get("sub"):
            raise DropMessage("refresh_other_subject", "the new token is for another subject")
        exp = claims.get("exp")
        expires = float(exp) if isinstance(exp, int | float) else None
        handshake.claims, handshake.credential_expires_at = claims, expires
        deadline.at = expires + s.grace if expires is not None else float("inf")
        if s.ack:
            ack = {s.type_field: f"{s.refresh_type}.ok", "expires_at": exp}
            await connection.send_to_client(orjson.dumps(ack).decode())
        raise DropMessage("token_refreshed", reply=False, action="refresh")  # consumed: never forwarded


__all__ = ["CredentialExpiry"]
