"""Every value an operator gives is bounded and strictly typed: a walk of the whole configuration.

The published JSON Schema (``asgi-ws-gateway schema``: the models and every built-in policy type) is
walked from its root through every ``$ref``: each number must state a minimum and a maximum, each
string a ``maxLength`` (or be one of an ``enum``), each list a ``maxItems`` and each free-form mapping a
``maxProperties``. The pydantic models are walked as well: each takes a boolean as ``true`` or
``false`` alone, never ``1``, ``"yes"`` or ``"off"``. A field that must not be bounded is in
:data:`ALLOWED`, with its reason; a gap a later pass must close (in a file this pass did not own) is
in :data:`KNOWN_GAPS`, each a strict xfail that starts failing once it is closed.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from typing import Annotated, Any, Union, get_args, get_origin

import pytest
from pydantic import BaseModel

from asgi_ws_gateway.config.gateway import GatewayConfig
from asgi_ws_gateway.policies.base import REGISTRY
from asgi_ws_gateway.policies.message_base import MESSAGE_REGISTRY
from asgi_ws_gateway.schema import json_schema
from asgi_ws_gateway.strict_numbers import StrictNumbers, _loose_boolean

SCHEMA = json_schema()
DEFS: dict[str, Any] = SCHEMA["$defs"]
# The package's own policy types: other modules' tests register plugins' types in the same process
# (pytest imports every module of a worker before it runs one), and their settings are the tests' own.
_KINDS = {**REGISTRY, **MESSAGE_REGISTRY}
BUILT_IN = [name for name, kind in _KINDS.items() if kind.__module__.startswith("asgi_ws_gateway.")]
BUILT_IN_SETTINGS = [_KINDS[name].Settings for name in BUILT_IN]
FOREIGN = {name.title().replace("-", "") + "PolicySettings" for name in _KINDS if name not in BUILT_IN}
"""The schema's definitions of plugins' policy settings: not walked."""

ALLOWED = {
    "ApiConfig.max_message_size": "bounded by a validator (1 GiB, config.apis._held_in_memory), the published schema "
    "kept as generated (tests/test_attack_operator_api_paths.py pins that)",
    "SubscriptionConfig.expires_at": "a date-time: pydantic's parser reads an ISO 8601 instant (or a number), keeps no "
    "text, and refuses what is no instant",
}
"""Leaves with no bound in the schema, and why each needs none there."""

KNOWN_GAPS: dict[str, str] = {}
"""Definitions with an unbounded leaf in a file this pass does not own: each listed in the pass's report."""


def _unbounded(node: Any, where: str) -> Iterator[str]:
    """The leaves under ``node`` (one definition's schema, not following ``$ref``) that state no bound."""
    if not isinstance(node, dict):
        return
    for key in ("anyOf", "oneOf", "allOf"):
        for member in node.get(key, []):
            yield from _unbounded(member, where)
    kind = node.get("type")
    kinds = set(kind) if isinstance(kind, list) else {kind}
    listed = "enum" in node or "const" in node
    if kinds & {"integer", "number"} and not listed:
        low = "minimum" in node or "exclusiveMinimum" in node
        high = "maximum" in node or "exclusiveMaximum" in node
        if not (low and high):
            yield f"{where} (a number without a {'maximum' if low else 'minimum'})"
    if "string" in kinds and not listed and "maxLength" not in node:
        yield f"{where} (a string without maxLength)"
    if "array" in kinds:
        if "maxItems" not in node:
            yield f"{where} (a list without maxItems)"
        yield from _unbounded(node.get("items"), f"{where}[]")
        for index, item in enumerate(node.get("prefixItems", [])):
            yield from _unbounded(item, f"{where}[{index}]")
    if "object" in kinds or "properties" in node:
        for name, field in node.get("properties", {}).items():
            yield from _unbounded(field, f"{where}.{name}")
        extra = node.get("additionalProperties")
        if "object" in kinds and extra is not False and not node.get("properties") and "maxProperties" not in node:
            yield f"{where} (a mapping without maxProperties)"
        if isinstance(extra, dict):
            yield from _unbounded(extra, f"{where}.*")


def _reachable() -> list[str]:
    """The definitions the root reaches, through every ``$ref`` (the policies' included)."""
    found: list[str] = []
    pending: list[Any] = [{k: v for k, v in SCHEMA.items() if k != "$defs"}]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                name = ref.removeprefix("#/$defs/")
                if name not in found and name not in FOREIGN:
                    found.append(name)
                    pending.append(DEFS[name])
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return sorted(found)


def _problems(name: str) -> list[str]:
    node = SCHEMA if name == "GatewayConfig" else DEFS[name]
    return [found for found in _unbounded(node, name) if found.split(" ", 1)[0] not in ALLOWED]


def _case(name: str) -> Any:
    if name in KNOWN_GAPS:
        return pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=KNOWN_GAPS[name]))
    return name


@pytest.mark.parametrize("name", [_case(name) for name in ["GatewayConfig", *_reachable()]])
def test_every_leaf_of_the_definition_states_its_bounds(name: str) -> None:
    """Each number has a minimum and a maximum, each string, list and mapping a most."""
    assert _problems(name) == []


def test_the_walk_reaches_every_section_and_every_built_in_policy() -> None:
    """The walk is not vacuous: the sections and each built-in policy's settings are among what it reaches."""
    reached = set(_reachable())
    sections = {"ApiConfig", "UpstreamConfig", "ProductConfig", "SubscriptionConfig", "SubscriptionKeyConfig",
                "StoreConfig", "TelemetryConfig", "HandshakeLimitsConfig", "ManagementConfig",
                "MessagePoliciesConfig", "ErrorReplyConfig"}  # fmt: skip
    assert sections <= reached
    settings = {kind.title().replace("-", "") + "PolicySettings" for kind in BUILT_IN}
    assert settings <= reached


def test_each_allowed_leaf_is_still_there_and_still_unbounded() -> None:
    """The allow-list holds no stale entry: each names a leaf the walk would report."""
    everything = {found.split(" ", 1)[0] for name in ["GatewayConfig", *_reachable()]
                  for found in _unbounded(SCHEMA if name == "GatewayConfig" else DEFS[name], name)}  # fmt: skip
    assert set(ALLOWED) <= everything


def _models() -> list[type[BaseModel]]:
    """Every pydantic model of a configuration: the root's, and each registered policy type's settings."""
    seen: list[type[BaseModel]] = []
    pending: list[Any] = [GatewayConfig, *BUILT_IN_SETTINGS]
    while pending:
        annotation = pending.pop()
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation not in seen:
                seen.append(annotation)
                pending.extend(field.annotation for field in annotation.model_fields.values())
        elif get_origin(annotation) in (Union, types.UnionType, Annotated, list, dict, tuple) or get_args(annotation):
            pending.extend(get_args(annotation))
    return seen


def _boolean_fields() -> list[tuple[str, Any]]:
    return [
        (f"{model.__name__}.{name}", field.annotation)
        for model in _models()
        for name, field in model.model_fields.items()
        if bool in {get_args(a)[0] if get_origin(a) is Annotated else a for a in (get_args(field.annotation) or
                                                                                 (field.annotation,))}
    ]  # fmt: skip


def test_every_model_of_a_configuration_refuses_loose_numbers_and_booleans() -> None:
    """Each model validates through StrictNumbers: no boolean for a number, no number or text for a boolean."""
    assert [model.__name__ for model in _models() if not issubclass(model, StrictNumbers)] == []


@pytest.mark.parametrize(("field", "annotation"), _boolean_fields(), ids=[f for f, _ in _boolean_fields()])
@pytest.mark.parametrize("value", [1, 0, 1.0, "yes", "no", "on", "off", "true", "0", "t", "n"])
def test_every_boolean_field_refuses_what_lax_mode_reads_as_a_boolean(field: str, annotation: Any, value: Any) -> None:
    """verify_tls, forward_query, passthrough, a policy's ignore_case...: true or false, unquoted."""
    assert _loose_boolean(annotation, value) is not None


def test_the_walk_finds_the_boolean_fields() -> None:
    """The boolean walk is not vacuous either."""
    fields = {field for field, _ in _boolean_fields()}
    assert {"UpstreamConfig.verify_tls", "ApiConfig.forward_query", "ApiConfig.passthrough",
            "TelemetryConfig.enabled", "CheckOriginSettings.allow_missing"} <= fields  # fmt: skip
