"""What the management API shows of a configuration: everything but secrets.

An admin-token holder may read and change routing and policies, but is not the operator: the
store's password and shared secrets are the operator's. Documents the API returns (``GET /apis``,
``GET /apis/{name}``, ``GET /config`` and so ``export``, ``GET /products``) therefore carry ``REDACTED`` in place of

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
  (``set: {api_key: ...}``, ``{auth: {token: ...}}``, ``{auth.token: ...}``: :func:`set_credentials`);
* every setting of a policy that its registered ``Settings`` model types as a secret (``SecretStr``,
  ``SecretBytes``, ``Secret[...]``; in a nested model, a list or a mapping too);
* in a plugin's policy (a type registered outside this package), every string under a name the log
  redaction takes for a credential, or inside an object or a list so named
  (:func:`~asgi_ws_gateway.redact.is_credential_header`: ``client_secret``, ``api_key``, ``password``,
  ``private_key``, an ``Authorization`` or ``X-Api-Key`` entry of a header mapping, ``api_keys: {tenant:
  ...}``), at any depth, save a name that says where a value is rather than the value (``token_url``,
  ``secret_env``, ``key_file``: :data:`REFERENCE_SUFFIXES`). The built-in policies' settings so named
  (``key``, ``token``, ``public_keys``) are not secrets; the one that is, ``validate-jwt``'s ``secret``,
  is typed ``SecretStr``;
* every ``key_sha256`` (a subscription's: an unsalted SHA-256 of a key an operator may have chosen,
  which a holder could test guesses against offline).

A document sent back unchanged keeps working where the secret came from ``secret_env`` (``secret`` is
``null`` then) and is refused wherever it holds ``REDACTED`` in a place ``GET`` would have hidden
(:func:`redacted_values`: a 422 naming the field), so a round trip can never install a known secret
or silently replace one with ``REDACTED``. The places are found by the rules above themselves, not by
a list of their own: the document is made public with ``REDACTED`` read as any value, and each place
it then hides is one. The rules live in :mod:`asgi_ws_gateway.redact.documents`, below the configuration
layer, which loading a configuration file asks too: a file ``export`` wrote is refused wherever it holds
``REDACTED`` in such a place (:func:`asgi_ws_gateway.config.files.placeholder_problems`). This module
gives them the registries of policy types.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..policies import MESSAGE_REGISTRY, REGISTRY
from ..redact import credential_setting as secret_setting
from ..redact import documents
from ..redact.documents import REFERENCE_SUFFIXES, SECRET_KEYS, url_credential

_KINDS = (REGISTRY, MESSAGE_REGISTRY)


def set_credentials(fields: Any, prefix: str = "") -> Iterator[str]:
    """The fields a ``transform-message`` ``set`` writes whose name says credential (``api_key``,
    ``auth.token``: a dotted name or an object's field), each as its path; an object is looked into."""
    return documents.set_credentials(fields, prefix)


def public_document(value: Any) -> Any:
    """``value`` (JSON-like) with secrets replaced by ``REDACTED``; a new object, the input is unchanged."""
    return documents.public_document(value, _KINDS)


def redacted_values(value: Any, path: str = "") -> list[str]:
    """Field paths where a document sent to the API holds ``REDACTED`` in a place :func:`public_document`
    hides: what ``GET`` showed, sent back unchanged (``policies[1].set-header.value``,
    ``policies[0].tenant-auth.client_secret``, ``upstreams[0]`` with ``?access_token=REDACTED``)."""
    return documents.redacted_values(value, _KINDS, path)


__all__ = [
    "REFERENCE_SUFFIXES",
    "SECRET_KEYS",
    "public_document",
    "redacted_values",
    "secret_setting",
    "set_credentials",
    "url_credential",
]
