"""The registered policy types in a configuration file's JSON Schema: ``$defs`` for ``Policy`` and
``MessagePolicy``, one member per type (the built-in types are registered when the package is imported:
its ``__init__`` imports :mod:`.build`, which imports them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..config.fields import mark_policies
from .base import REGISTRY, PolicyType
from .message_base import MESSAGE_REGISTRY


def policies_json_schema() -> dict[str, Any]:
    """``$defs`` for configuration files' JSON Schema: ``Policy`` is one of the registered types."""
    return _json_schema(REGISTRY, "Policy", "One handshake policy: {type-name: settings}.")


def message_policies_json_schema() -> dict[str, Any]:
    """``$defs`` for configuration files' JSON Schema: ``MessagePolicy`` is one of the registered types."""
    return _json_schema(MESSAGE_REGISTRY, "MessagePolicy", "One message policy: {type-name: settings}.")


def _json_schema(registry: Mapping[str, PolicyType], name: str, description: str) -> dict[str, Any]:
    defs: dict[str, Any] = {}
    choices = []
    for type_name in sorted(registry):
        settings = registry[type_name].Settings.model_json_schema(ref_template="#/$defs/{model}")
        settings = mark_policies(settings)
        defs.update(settings.pop("$defs", {}))
        title = type_name.title().replace("-", "") + "Policy"
        defs[title + "Settings"] = settings
        choices.append(
            {
                "type": "object",
                "properties": {type_name: {"$ref": f"#/$defs/{title}Settings"}},
                "required": [type_name],
                "additionalProperties": False,
            }
        )
    defs[name] = {"description": description, "oneOf": choices}
    return defs


__all__ = ["message_policies_json_schema", "policies_json_schema"]
