"""What the management API shows of a configuration: everything but secrets.

An admin-token holder may read and change routing and policies, but is not the operator: the
store's password and shared secrets are the operator's. Documents the API returns (``GET /apis``,
``GET /apis/{name}``, ``GET /config``) therefore carry ``REDACTED`` in place of

* the value of every ``secret`` setting (``validate-jwt``'s HMAC secret, say);
* the user name and password of every URL's userinfo (``store.url: redis://:password@host``),
  however the password is written (a raw or percent-encoded ``@``, quotes, spaces);
* the value of every URL query (or fragment) parameter named as a credential
  (``redis://host/0?password=...``, ``?username=``, ``?access_token=``, ``?subscription-key=``...).

This applies to every string in the document that is a ``scheme://`` URL, whatever the field
(``store.url``, the management and bus Redis URLs, ``jwks_url``, upstream URLs): the URL is parsed
as clients parse it (:func:`~asgi_ws_gateway.redact.redact_url_credentials`), not searched with a
pattern.

A document sent back unchanged keeps working where the secret came from ``secret_env`` and is
refused where it came from an inline ``secret`` (``REDACTED`` is shorter than any HMAC secret the
gateway accepts), so a round trip can never install a known secret.
"""

from __future__ import annotations

from typing import Any

from ..redact import REDACTED, redact_url_credentials

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
    if isinstance(value, str) and "://" in value:
        return redact_url_credentials(value)
    return value


__all__ = ["SECRET_KEYS", "public_document"]
