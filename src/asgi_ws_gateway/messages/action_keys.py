"""What a message policy's action is counted under: a key of ``RelayStats.policy_actions`` with bounded parts.

The ``ws_gateway.policy.actions`` metric makes one series per key, so every part must come from a fixed set.
The policy names come from the configuration; the reason, the action and the direction are the policy's
words, and a policy of the user's may put the client's in them (``DropMessage(message.data)``: one series
per message, each quoting what the client sent, until the SDK's 2,000 series per instrument folded every
other API's actions into ``otel.metric.overflow``). So a reason is kept only when it reads as a code and is
one of the first :data:`MAX_REASONS` of its policy; an action only when it is one the docs name; anything
else is counted as :data:`OTHER`. Counts are never lost, only folded.
"""

from __future__ import annotations

import re

__all__ = ["ACTIONS", "MAX_POLICIES", "MAX_REASONS", "OTHER", "action_key", "kept_reason"]

OTHER = "_OTHER"
"""A part outside its set (OpenTelemetry's spelling, as the metrics' other folded values)."""
ACTIONS = frozenset({"drop", "close", "delay", "refresh"})
"""The actions docs/message-policies.md names."""
DIRECTIONS = {"inbound": "inbound", "outbound": "outbound",
              "client_to_upstream": "inbound", "upstream_to_client": "outbound"}  # fmt: skip
"""The pipeline's words, and the metric's (docs/telemetry.md's example for policy authors uses those)."""
MAX_REASONS = 64
"""Distinct reasons kept per policy name, per process; later ones are counted as :data:`OTHER`."""
MAX_POLICIES = 1024
"""Distinct policy names kept per process (a policy of the user's may name itself when it counts)."""
_CODE = re.compile(r"(?:[a-z][a-z0-9_.-]{0,63})?").fullmatch
"""What a reason looks like (``rate_limited``, ``refresh_token_expired``, or none): no blank, capital or quote."""

_reasons: dict[str, set[str]] = {}
"""Each policy's reasons counted so far (bounded: :data:`MAX_POLICIES` times :data:`MAX_REASONS`)."""


def kept_reason(owner: str, reason: str) -> str:
    """``reason`` as a metric may carry it: itself when it reads as a code and is one of ``owner``'s first
    :data:`MAX_REASONS`, else :data:`OTHER` (``owner``: a policy's name; past :data:`MAX_POLICIES` owners,
    new ones share :data:`OTHER`'s reasons)."""
    reasons = _reasons.get(owner)
    if reasons is None:
        reasons = _reasons.setdefault(owner if len(_reasons) < MAX_POLICIES else OTHER, set())
    if reason in reasons:
        return reason
    if len(reasons) < MAX_REASONS and _CODE(reason) is not None:
        reasons.add(reason)
        return reason
    return OTHER


def action_key(policy: str, action: str, direction: str, reason: str) -> tuple[str, str, str, str]:
    """The ``(policy, action, direction, reason)`` an action is counted under, each part from a bounded set."""
    if policy not in _reasons and len(_reasons) >= MAX_POLICIES:
        policy = OTHER
    reason = kept_reason(policy, reason)
    return policy, action if action in ACTIONS else OTHER, DIRECTIONS.get(direction, OTHER), reason
