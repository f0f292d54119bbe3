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

* the ``value``, ``values`` and ``pattern`` of a policy whose ``header`` or ``parameter`` names a
  credential (``set-header`` of ``X-Internal-Auth`` sending the upstream its key, ``check-header`` of
  ``X-Api-Key`` holding the accepted keys or a pattern of them), and the operands (``equals``,
  ``not_equals``, ``in``, ``matches``, ``contains``) of a condition whose ``ref`` or ``claim`` names one
  (``{ref: header.x-api-key, in: [...]}``, ``{ref: query.api_key, equals: ...}``, ``{claim: api_key,
  ...}``): a header of :data:`~asgi_ws_gateway.redact.SENSITIVE_HEADERS`, or whose name says auth,
  token, key, secret, password, session, cookie or credential
  (:func:`~asgi_ws_gateway.redact.credential_setting`);
* the value of each field a ``transform-message`` ``set`` writes under a name that says credential
  (``set: {api_key: ...}``, ``{auth: {token: ...}}``, ``{auth.token: ...}``: :func:`set_credentials`).

A document sent back unchanged keeps working where the secret came from ``secret_env`` and is
refused where it came from an inline ``secret`` (``REDACTED`` is shorter than any HMAC secret the
gateway accepts), a header value, a pattern, a condition's operand, a message field or a URL's
credential (:func:`redacted_values`: a 422 naming the field), so a round trip can never install a
known secret or silently replace one with ``REDACTED``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from ..redact import CREDENTIAL_VALUES, REDACTED, is_credential_name, redact_url_credentials
from ..redact import credential_setting as secret_setting

#: Setting names whose value is a secret wherever they appear in a document.
SECRET_KEYS = frozenset({"secret"})
#: The policy whose ``set`` writes message fields, some of them the operator's secrets.
_SETS_FIELDS = "transform-message"


def _secret_keys(value: dict[str, Any]) -> frozenset[str]:
    """The keys of ``value`` whose values are secrets."""
    return SECRET_KEYS if secret_setting(value) is None else SECRET_KEYS | CREDENTIAL_VALUES


def _credential_field(key: object, value: Any) -> bool:
    """Whether a ``transform-message`` ``set`` field holds a secret: named as a credential, and set."""
    return is_credential_name(str(key)) and value not in (None, "")


def set_credentials(fields: Any, prefix: str = "") -> Iterator[str]:
    """The fields a ``transform-message`` ``set`` writes whose name says credential (``api_key``,
    ``auth.token``: a dotted name or an object's field), each as its path; an object is looked into."""
    if not isinstance(fields, Mapping):
        return
    for key, value in fields.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from set_credentials(value, f"{path}.")
        elif _credential_field(key, value):
            yield path


def public_document(value: Any) -> Any:
    """``value`` (JSON-like) with secrets replaced by ``REDACTED``; a new object, the input is unchanged."""
    if isinstance(value, dict):
        secret = _secret_keys(value)
        public: dict[str, Any] = {}
        for key, item in value.items():
            if key in secret and item is not None:
                public[key] = REDACTED
            else:
                public[key] = _public_fields(item) if key == _SETS_FIELDS else public_document(item)
        return public
    if isinstance(value, list):
        return [public_document(item) for item in value]
    if isinstance(value, str) and _url_like(value):
        return redact_url_credentials(value)
    return value


def _public_fields(settings: Any) -> Any:
    """A ``transform-message``'s settings made public, its ``set`` fields of :func:`set_credentials` ``REDACTED``."""
    public = public_document(settings)
    if isinstance(settings, dict) and isinstance(settings.get("set"), dict):
        public["set"] = _public_set(settings["set"])
    return public


def _public_set(fields: dict[str, Any]) -> dict[str, Any]:
    public: dict[str, Any] = {}
    for key, value in fields.items():
        if isinstance(value, dict) and value:
            public[key] = _public_set(value)
        else:
            public[key] = REDACTED if _credential_field(key, value) else public_document(value)
    return public


def url_credential(text: str) -> bool:
    """Whether ``text`` is a URL (or a path with a query) carrying a credential ``GET`` shows redacted."""
    return _url_like(text) and redact_url_credentials(text) != text


def _url_like(text: str) -> bool:
    """A URL, or a path with a query or fragment (``rewrite-uri``'s ``/x?access_token=...``)."""
    return "://" in text or (text.startswith("/") and ("?" in text or "#" in text))


def redacted_values(value: Any, path: str = "") -> list[str]:
    """Field paths where a document sent to the API holds ``REDACTED`` in place of a header's secret
    value, a pattern, a condition's operand, a message field or a URL's credential: what ``GET`` shows,
    sent back unchanged (``policies[1].set-header.value``, ``policies[0].choose.when[0].if.in``,
    ``message_policies.inbound[0].transform-message.set.api_key``, ``upstreams[0]`` with
    ``?access_token=REDACTED``)."""
    found: list[str] = []
    if isinstance(value, str):
        if REDACTED in value and _url_like(value):
            probe = value.replace(REDACTED, "x")  # REDACTED where the URL's credentials go: they change
            if redact_url_credentials(probe) != probe:
                found.append(path or "(body)")
    elif isinstance(value, dict):
        secret = _secret_keys(value) & CREDENTIAL_VALUES
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if key in secret and _redacted(item):
                found.append(where)
            elif key == _SETS_FIELDS and isinstance(item, dict) and isinstance(item.get("set"), dict):
                found += redacted_values({k: v for k, v in item.items() if k != "set"}, where)
                found += _redacted_fields(item["set"], f"{where}.set")
            else:
                found += redacted_values(item, where)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += redacted_values(item, f"{path}[{index}]")
    return found


def _redacted(value: Any) -> bool:
    return value == REDACTED or (isinstance(value, list) and REDACTED in value)


def _redacted_fields(fields: dict[str, Any], path: str) -> list[str]:
    """Paths of the ``set`` fields :func:`set_credentials` names that hold ``REDACTED``, and of URLs' credentials."""
    found: list[str] = []
    for key, item in fields.items():
        where = f"{path}.{key}"
        if isinstance(item, dict) and item:
            found += _redacted_fields(item, where)
        elif _credential_field(key, item) and _redacted(item):
            found.append(where)
        else:
            found += redacted_values(item, where)
    return found


__all__ = ["SECRET_KEYS", "public_document", "redacted_values", "secret_setting", "set_credentials"]
