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

* the ``value`` and ``values`` of a policy whose ``header`` names a credential (``set-header`` of
  ``X-Internal-Auth`` sending the upstream its key, ``check-header`` of ``X-Api-Key`` holding the
  accepted keys): a header of :data:`~asgi_ws_gateway.redact.SENSITIVE_HEADERS`, or whose name says
  auth, token, key, secret, password, session, cookie or credential.

A document sent back unchanged keeps working where the secret came from ``secret_env`` and is
refused where it came from an inline ``secret`` (``REDACTED`` is shorter than any HMAC secret the
gateway accepts), a header value or a URL's credential (:func:`redacted_values`: a 422 naming the
field), so a round trip can never install a known secret or silently replace one with ``REDACTED``.
"""

from __future__ import annotations

from typing import Any

from ..redact import REDACTED, redact_url_credentials
from ..redact import credential_setting as secret_setting

#: Setting names whose value is a secret wherever they appear in a document.
SECRET_KEYS = frozenset({"secret"})
#: Settings that hold a header's value beside its ``header`` name (``set-header``, ``check-header``).
_HEADER_VALUE_KEYS = frozenset({"value", "values"})


def _secret_keys(value: dict[str, Any]) -> frozenset[str]:
    """The keys of ``value`` whose values are secrets."""
    return SECRET_KEYS if secret_setting(value) is None else SECRET_KEYS | _HEADER_VALUE_KEYS


def public_document(value: Any) -> Any:
    """``value`` (JSON-like) with secrets replaced by ``REDACTED``; a new object, the input is unchanged."""
    if isinstance(value, dict):
        secret = _secret_keys(value)
        return {k: REDACTED if k in secret and v is not None else public_document(v) for k, v in value.items()}
    if isinstance(value, list):
        return [public_document(item) for item in value]
    if isinstance(value, str) and _url_like(value):
        return redact_url_credentials(value)
    return value


def url_credential(text: str) -> bool:
    """Whether ``text`` is a URL (or a path with a query) carrying a credential ``GET`` shows redacted."""
    return _url_like(text) and redact_url_credentials(text) != text


def _url_like(text: str) -> bool:
    """A URL, or a path with a query or fragment (``rewrite-uri``'s ``/x?access_token=...``)."""
    return "://" in text or (text.startswith("/") and ("?" in text or "#" in text))


def redacted_values(value: Any, path: str = "") -> list[str]:
    """Field paths where a document sent to the API holds ``REDACTED`` in place of a header's secret
    value or a URL's credential: what ``GET`` shows, sent back unchanged (``policies[1].set-header.value``,
    ``upstreams[0]`` with ``?access_token=REDACTED``)."""
    found: list[str] = []
    if isinstance(value, str):
        if REDACTED in value and _url_like(value):
            probe = value.replace(REDACTED, "x")  # REDACTED where the URL's credentials go: they change
            if redact_url_credentials(probe) != probe:
                found.append(path or "(body)")
    elif isinstance(value, dict):
        secret = _secret_keys(value) & _HEADER_VALUE_KEYS
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if key in secret and (item == REDACTED or (isinstance(item, list) and REDACTED in item)):
                found.append(where)
            else:
                found += redacted_values(item, where)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += redacted_values(item, f"{path}[{index}]")
    return found


__all__ = ["SECRET_KEYS", "public_document", "redacted_values", "secret_setting"]
