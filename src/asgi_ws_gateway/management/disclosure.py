"""What the management API shows of a configuration: everything but secrets.

An admin-token holder may read and change routing and policies, but is not the operator: the
store's password and shared secrets are the operator's. Documents the API returns (``GET /apis``,
``GET /apis/{name}``, ``GET /config``) therefore carry ``REDACTED`` in place of

* the value of every ``secret`` setting (``validate-jwt``'s HMAC secret, say);
* the password of every URL's userinfo (``store.url: redis://:password@host``).

A document sent back unchanged keeps working where the secret came from ``secret_env`` and is
refused where it came from an inline ``secret`` (``REDACTED`` is shorter than any HMAC secret the
gateway accepts), so a round trip can never install a known secret.
"""

from __future__ import annotations

from typing import Any

from ..redact import REDACTED, redact_text

#: Setting names whose value is a secret wherever they appear in a document.
SECRET_KEYS = frozenset({"secret"})


def public_document(value: Any) -> Any:
    """``value`` (JSON-like) with secrets replaced by ``REDACTED``; a new object, the input is unchanged."""
    if isinstance(value, dict):
        return {
            k: REDACTED if k in SECRET_KEYS and value[k] is not None else public_document(v) for k, v in value.items()
        }
    if isinstance(value, list):
        return [public_document(item) for item in value]
    if isinstance(value, str) and "://" in value and "@" in value:
        return redact_text(value)
    return value


__all__ = ["SECRET_KEYS", "public_document"]
