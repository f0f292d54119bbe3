"""The JSON Schema of a configuration file: the configuration's models with every registered policy type."""

from __future__ import annotations

from typing import Any

from .config.fields import mark_policies
from .config.gateway import GatewayConfig
from .config.limits import MAX_ITEMS, MAX_SETTING
from .policies.policy_schemas import message_policies_json_schema, policies_json_schema

_NOT_SCHEMAS = frozenset({"default", "examples", "const", "enum", "properties", "required", "$defs"})
"""Keys whose values are data or names, not schemas (``properties`` is walked by name below)."""


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a configuration file (generated from the models and the policy registries)."""
    schema: dict[str, Any] = mark_policies(GatewayConfig.model_json_schema())
    defs = schema.setdefault("$defs", {})
    policies = {**policies_json_schema(), **message_policies_json_schema()}
    # A policy's settings are held to config.limits.bounded whatever their own model says (a string
    # 16384 characters, a list or mapping 1024 entries): published, an editor flags what start-up refuses.
    defs.update({name: _settings_bounds(node) if name not in defs else node for name, node in policies.items()})
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "asgi-ws-gateway configuration"
    return schema


def _settings_bounds(node: Any) -> Any:
    """``node`` (a policy's settings schema) with ``bounded``'s limits where it states none tighter."""
    if isinstance(node, list):
        return [_settings_bounds(item) for item in node]
    if not isinstance(node, dict):
        return node
    bounded = {key: value if key in _NOT_SCHEMAS else _settings_bounds(value) for key, value in node.items()}
    if isinstance(node.get("properties"), dict):
        bounded["properties"] = {name: _settings_bounds(field) for name, field in node["properties"].items()}
    kind = node.get("type")
    kinds = set(kind) if isinstance(kind, list) else {kind}
    if "string" in kinds and not {"maxLength", "enum", "const"} & node.keys():
        bounded["maxLength"] = MAX_SETTING
    if "array" in kinds and "maxItems" not in node:
        bounded["maxItems"] = MAX_ITEMS
    if "object" in kinds and node.get("additionalProperties", True) is not False and "maxProperties" not in node:
        bounded["maxProperties"] = MAX_ITEMS
    return bounded


__all__ = ["json_schema"]
