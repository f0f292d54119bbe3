"""The JSON Schema of a configuration file: the configuration's models with every registered policy type."""

from __future__ import annotations

from typing import Any

from .config.fields import mark_policies
from .config.gateway import GatewayConfig
from .policies.policy_schemas import message_policies_json_schema, policies_json_schema


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a configuration file (generated from the models and the policy registries)."""
    schema: dict[str, Any] = mark_policies(GatewayConfig.model_json_schema())
    schema.setdefault("$defs", {}).update(policies_json_schema())
    schema["$defs"].update(message_policies_json_schema())
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "asgi-ws-gateway configuration"
    return schema


__all__ = ["json_schema"]
