"""Handshake policies: the built-in types and the extension point for your own.

Built-in types (by configuration name): ``validate-jwt``, ``check-header`` (``auth``);
``ip-filter``, ``check-origin`` (``network``); ``rate-limit-by-key``, ``quota-by-key``,
``limit-concurrency`` (``limits``); ``set-header``, ``remove-header``, ``set-query-parameter``,
``rewrite-uri``, ``set-backend-service`` (``transform``); ``choose`` (``control``). Products and
subscriptions are in ``products``. See docs/policies.md.
"""

from __future__ import annotations

from .base import REGISTRY, PolicyEnv, PolicyProblem, PolicySettings, deny, register_policy
from .build import GatewayPolicies
from .products import hash_key

__all__ = [
    "REGISTRY",
    "GatewayPolicies",
    "PolicyEnv",
    "PolicyProblem",
    "PolicySettings",
    "deny",
    "hash_key",
    "register_policy",
]
