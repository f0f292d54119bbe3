"""Where a configuration document holds a secret, and the document with each one ``REDACTED``.

The rules are those :mod:`asgi_ws_gateway.management.disclosure` describes (the management API's
documents and ``export`` write them); they live here, below the configuration layer, so that loading a
configuration file can refuse the placeholders an export wrote (:func:`redacted_values`) by the same
rules, not a list of its own. A policy entry (``{type: settings}``) is known by the registries of policy
types passed in (:data:`PolicyTypes`): the layer that holds them passes them, or installs them once
(:func:`install_policy_types`) for the loaders below it.

Imported by name (``from ..redact.documents import ...``), not through :mod:`asgi_ws_gateway.redact`:
it needs pydantic, which the management commands do not import.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Iterator, Mapping, Sequence
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, Secret, SecretBytes, SecretStr

from .credential_names import CREDENTIAL_VALUES, REDACTED, credential_setting, is_credential_header, is_credential_name
from .url_credentials import redact_url_credentials

PolicyTypes = Sequence[Mapping[str, Any]]
"""Registries of policy types: each maps a type's name to its class (with a ``Settings`` model)."""

#: Setting names whose value is a secret wherever they appear in a document.
SECRET_KEYS = frozenset({"secret", "key_sha256"})
#: The policy whose ``set`` writes message fields, some of them the operator's secrets.
_SETS_FIELDS = "transform-message"
REFERENCE_SUFFIXES = ("_url", "_uri", "_env", "_file", "_files", "_path")
"""A plugin's setting named as a credential but ending so says where one is, not what (``token_url``,
``secret_env``, ``private_key_file``): shown (a URL's own credentials are hidden as every URL's)."""
_SECRET_TYPES = (SecretStr, SecretBytes, Secret)
_BUILT_IN = __name__.split(".")[0] + "."
_PROBE = "x"  # what REDACTED is read as when looking for the places a document hides

_installed: list[Mapping[str, Any]] = []


def install_policy_types(*registries: Mapping[str, Any]) -> None:
    """Make ``registries`` (kept by reference: types registered later are seen) those of
    :func:`installed_policy_types`, for the loaders below the layer that holds them."""
    for registry in registries:
        if not any(registry is known for known in _installed):
            _installed.append(registry)


def installed_policy_types() -> PolicyTypes:
    """The registries :func:`install_policy_types` was given (none: no policy entry is known as one)."""
    return tuple(_installed)


def _secret_keys(value: dict[str, Any]) -> frozenset[str]:
    """The keys of ``value`` whose values are secrets."""
    return SECRET_KEYS if credential_setting(value) is None else SECRET_KEYS | CREDENTIAL_VALUES


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


def public_document(value: Any, kinds: PolicyTypes) -> Any:
    """``value`` (JSON-like) with secrets replaced by ``REDACTED``; a new object, the input is unchanged."""
    if isinstance(value, dict):
        entry = _policy_entry(value, kinds)
        if entry is not None:
            return {entry: _public_policy(entry, value[entry], kinds)}
        secret = _secret_keys(value)
        public: dict[str, Any] = {}
        for key, item in value.items():
            if key in secret and item is not None:
                public[key] = REDACTED
            else:
                public[key] = _public_fields(item, kinds) if key == _SETS_FIELDS else public_document(item, kinds)
        return public
    if isinstance(value, list):
        return [public_document(item, kinds) for item in value]
    if isinstance(value, str) and _url_like(value):
        return redact_url_credentials(value)
    return value


def _policy_entry(value: dict[str, Any], kinds: PolicyTypes) -> str | None:
    """The type of a policy entry (``{type: settings}``, the type registered), else None."""
    if len(value) != 1:
        return None
    name = next(iter(value))
    return name if isinstance(value[name], dict) and any(name in registry for registry in kinds) else None


def _registered(name: str, kinds: PolicyTypes) -> list[Any]:
    return [registry[name] for registry in kinds if registry.get(name) is not None]


def _public_policy(name: str, settings: dict[str, Any], kinds: PolicyTypes) -> Any:
    """A policy's settings made public: the rules of every document, then what its model types as a
    secret and, for a plugin's, what its names say is one."""
    public = _public_fields(settings, kinds) if name == _SETS_FIELDS else public_document(settings, kinds)
    registered = _registered(name, kinds)
    for kind in registered:
        public = _model_secrets(kind.Settings, settings, public)
    if any(_plugin(kind) for kind in registered):
        public = _named_secrets(settings, public, kinds)
    return public


@functools.cache
def _plugin(kind: type) -> bool:
    """Whether a policy type is a plugin's (its settings' names were chosen by no one here)."""
    return not kind.__module__.startswith(_BUILT_IN)


def _typed_secrets(annotation: Any, value: Any, public: Any) -> Any:
    """``public`` (``value`` made public) with what ``annotation`` types as a secret ``REDACTED``: a secret
    type, or one inside a model, a list, a tuple, a mapping, an ``Annotated`` or a union of them."""
    if value is None or public == REDACTED:
        return public
    if _secret_type(annotation):
        return REDACTED
    origin, arguments = get_origin(annotation), get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _model_secrets(annotation, value, public)
    if origin is Annotated:
        return _typed_secrets(arguments[0], value, public)
    if origin is Union or origin is types.UnionType:
        for member in arguments:
            public = _typed_secrets(member, value, public)
        return public
    if isinstance(value, list) and isinstance(public, list) and len(value) == len(public) and arguments:
        items = arguments if origin is tuple and Ellipsis not in arguments else (arguments[0],) * len(value)
        return [_typed_secrets(item, v, p) for item, v, p in zip(items, value, public, strict=False)]
    if isinstance(value, dict) and isinstance(public, dict) and len(arguments) == 2:
        return {key: _typed_secrets(arguments[1], value[key], public[key]) for key in value}
    return public


def _secret_type(annotation: Any) -> bool:
    kind = get_origin(annotation) or annotation
    return isinstance(kind, type) and issubclass(kind, _SECRET_TYPES)


def _model_secrets(model: type[BaseModel], value: Any, public: Any) -> Any:
    """A model's document made public field by field (a field by its name or its alias)."""
    fields = _secret_fields(model)
    if not fields or not (isinstance(value, dict) and isinstance(public, dict)):
        return public
    return {
        key: _typed_secrets(fields[key], item, public[key]) if key in fields else public[key]
        for key, item in value.items()
    }


@functools.cache
def _secret_fields(model: type[BaseModel]) -> dict[str, Any]:
    """The annotations of ``model``'s fields that may hold a secret, by name and by alias: most models have
    none, and a document of 1,000 APIs is not walked for them (computed once per model)."""
    found: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        if _may_hold_secret(field.annotation, frozenset({model})):
            found.update({key: field.annotation for key in (name, field.alias) if key})
    return found


def _may_hold_secret(annotation: Any, seen: frozenset[type]) -> bool:
    if _secret_type(annotation):
        return True
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation not in seen and any(
            _may_hold_secret(f.annotation, seen | {annotation}) for f in annotation.model_fields.values()
        )
    return any(_may_hold_secret(argument, seen) for argument in get_args(annotation))


def _named_secrets(value: Any, public: Any, kinds: PolicyTypes, named: bool = False) -> Any:
    """A plugin's settings made public: each string under a credential's name (:func:`_credential_name`)
    ``REDACTED``, and each inside an object or a list so named (``api_keys: {tenant-a: ...}``), at any
    depth but that of a nested policy (its own rules). A number, a flag or ``null`` is shown: no secret."""
    if named and isinstance(value, str) and value:
        return REDACTED
    if isinstance(value, list) and isinstance(public, list) and len(value) == len(public):
        return [_named_secrets(v, p, kinds, named) for v, p in zip(value, public, strict=True)]
    if not (isinstance(value, dict) and isinstance(public, dict)) or _policy_entry(value, kinds) is not None:
        return public
    return {
        key: _named_secrets(item, public[key], kinds, named or _credential_name(key)) for key, item in value.items()
    }


def _credential_name(key: str) -> bool:
    """A setting or a mapping's key the log redaction takes for a credential's, unless it names where one is."""
    return is_credential_header(key) and not key.lower().replace("-", "_").endswith(REFERENCE_SUFFIXES)


def _public_fields(settings: Any, kinds: PolicyTypes) -> Any:
    """A ``transform-message``'s settings made public, its ``set`` fields of :func:`set_credentials` ``REDACTED``."""
    public = public_document(settings, kinds)
    if isinstance(settings, dict) and isinstance(settings.get("set"), dict):
        public["set"] = _public_set(settings["set"], kinds)
    return public


def _public_set(fields: dict[str, Any], kinds: PolicyTypes) -> dict[str, Any]:
    public: dict[str, Any] = {}
    for key, value in fields.items():
        if isinstance(value, dict) and value:
            public[key] = _public_set(value, kinds)
        else:
            public[key] = REDACTED if _credential_field(key, value) else public_document(value, kinds)
    return public


def url_credential(text: str) -> bool:
    """Whether ``text`` is a URL (or a path with a query) carrying a credential ``GET`` shows redacted."""
    return _url_like(text) and redact_url_credentials(text) != text


def _url_like(text: str) -> bool:
    """A URL, or a path with a query or fragment (``rewrite-uri``'s ``/x?access_token=...``)."""
    return "://" in text or (text.startswith("/") and ("?" in text or "#" in text))


def redacted_values(value: Any, kinds: PolicyTypes, path: str = "") -> list[str]:
    """Field paths where a document holds ``REDACTED`` in a place :func:`public_document` hides: what
    ``GET`` or ``export`` showed, sent back or loaded unchanged (``policies[1].set-header.value``,
    ``policies[0].tenant-auth.client_secret``, ``message_policies.inbound[0].transform-message.set.api_key``,
    ``upstreams[0]`` with ``?access_token=REDACTED``).

    Each ``REDACTED`` is read as a value (:data:`_PROBE`) and the document made public: a place that is
    hidden then, and held ``REDACTED``, is one. The rules of :func:`public_document` are the only ones."""
    if not _holds_redacted(value, exact=False):
        return []
    probe = _probed(value)
    return list(_placeholders(value, probe, public_document(probe, kinds), path))


def _holds_redacted(value: Any, *, exact: bool) -> bool:
    """Whether ``value`` holds ``REDACTED`` (``exact``: as a whole string, else in one too)."""
    if isinstance(value, str):
        return value == REDACTED or (not exact and REDACTED in value)
    if isinstance(value, dict):
        return any(_holds_redacted(item, exact=exact) for item in value.values())
    if isinstance(value, list):
        return any(_holds_redacted(item, exact=exact) for item in value)
    return False


def _probed(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace(REDACTED, _PROBE)
    if isinstance(value, dict):
        return {key: _probed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_probed(item) for item in value]
    return value


def _placeholders(sent: Any, probe: Any, public: Any, path: str) -> Iterator[str]:
    """The paths where ``public`` hides what ``probe`` holds and ``sent`` held ``REDACTED`` there."""
    if public == probe:
        return
    if isinstance(probe, dict) and isinstance(public, dict):
        for key, item in probe.items():
            yield from _placeholders(sent[key], item, public[key], f"{path}.{key}" if path else str(key))
    elif isinstance(probe, list) and isinstance(public, list) and len(probe) == len(public):
        for index, item in enumerate(probe):
            yield from _placeholders(sent[index], item, public[index], f"{path}[{index}]")
    elif _holds_redacted(sent, exact=isinstance(public, str) and public == REDACTED):
        yield path or "(body)"  # hidden whole (a header's value), or in part (a URL's credentials)


__all__ = [
    "REFERENCE_SUFFIXES",
    "SECRET_KEYS",
    "PolicyTypes",
    "install_policy_types",
    "installed_policy_types",
    "public_document",
    "redacted_values",
    "set_credentials",
    "url_credential",
]
