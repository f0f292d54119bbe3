"""Policies: the built-in types, the builder, and the extension API for your own.

**The extension API** — everything a custom handshake or message policy needs — is importable from
here, and only the names in ``__all__`` are promised (a test pins them)::

    from asgi_ws_gateway.policies import HandshakeContext, PolicySettings, deny, register_policy

Built-in handshake types (by configuration name): ``validate-jwt``, ``check-header`` (``auth``);
``ip-filter``, ``check-origin`` (``network``); ``rate-limit-by-key``, ``quota-by-key``,
``limit-concurrency`` (``limits``); ``set-header``, ``remove-header``, ``set-query-parameter``,
``rewrite-uri``, ``set-backend-service`` (``transform``); ``choose`` (``control``). Message types:
``limit-message-size``, ``validate-message``, ``transform-message`` (``message_checks``),
``rate-limit-messages`` (``message_rates``), ``credential-expiry`` (``credentials``). Products and
subscriptions are in ``products``; ``build`` turns a configuration into pipelines. See
docs/policies.md and docs/message-policies.md.
"""

from __future__ import annotations

from .._context import current_connection, current_handshake
from ..errors import CloseConnection, DropMessage, HandshakeDenied
from ..handshake.context import HandshakeContext, Subscription
from ..handshake.pipeline import Policy
from ..handshake.request_view import ClientAddress, RequestView
from ..messages.context import ConnectionContext, Direction, MessageHandler, MessagePolicy, WsMessage
from ..state.base import Decision, Store, StoreUnavailable
from .base import (
    REGISTRY,
    MatchSettings,
    PolicyEnv,
    PolicyProblem,
    PolicySettings,
    StoreErrorSettings,
    deny,
    register_policy,
    template,
)
from .build import GatewayPolicies
from .message_base import MESSAGE_REGISTRY, register_message_policy
from .products import hash_key

__all__ = [
    "MESSAGE_REGISTRY",
    "REGISTRY",
    "ClientAddress",
    "CloseConnection",
    "ConnectionContext",
    "Decision",
    "Direction",
    "DropMessage",
    "GatewayPolicies",
    "HandshakeContext",
    "HandshakeDenied",
    "MatchSettings",
    "MessageHandler",
    "MessagePolicy",
    "Policy",
    "PolicyEnv",
    "PolicyProblem",
    "PolicySettings",
    "RequestView",
    "Store",
    "StoreErrorSettings",
    "StoreUnavailable",
    "Subscription",
    "WsMessage",
    "current_connection",
    "current_handshake",
    "deny",
    "hash_key",
    "register_message_policy",
    "register_policy",
    "template",
]
