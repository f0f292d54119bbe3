"""The management API's own schemas in its OpenAPI document, those no configuration or resource model
gives (the live views, a connection, a message sent to its client, warnings, a new subscription key):
data the operations refer to, kept apart from them."""

from __future__ import annotations

from typing import Any

WORKERS_SCHEMA = {
    "type": "object",
    "properties": {
        "answered": {"type": "integer"},
        "expected": {"type": "integer"},
        "missing": {
            "type": "array",
            "items": {"type": "string"},
            "description": "workers on the bus's roster that did not answer (off the bus, or late): only when any",
        },
    },
    "description": (
        "how many workers answered, of how many should have: those the request reached, or those that"
        " answered and the roster's others, whichever is more"
    ),
}
LIVE_SCHEMAS: dict[str, Any] = {
    "MetricSeries": {
        "type": "object",
        "properties": {
            "interval": {"type": "number", "description": "seconds between samples"},
            "window": {"type": "number", "description": "seconds of samples each worker keeps"},
            "times": {
                "type": "array",
                "items": {"type": "number"},
                "description": "every sampling slot (Unix seconds) from the first sampled to the last",
            },
            "series": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {
                            "enum": [
                                "active",
                                "handshakes",
                                "messages",
                                "bytes",
                                "refusals",
                                "upstream_failures",
                                "closes",
                            ]
                        },
                        "api": {"type": "string"},
                        "label": {
                            "type": "string",
                            "description": "handshakes: accepted or the refusal status; messages, bytes: in "
                            "(client to upstream) or out; refusals: the policy; upstream_failures: the "
                            "backend; closes: the code; active: empty",
                        },
                        "values": {
                            "type": "array",
                            "items": {"type": ["integer", "null"]},
                            "description": "running totals (active: open now), one per time; null where no "
                            "worker sampled (the gateway was down)",
                        },
                    },
                },
            },
            "workers": WORKERS_SCHEMA,
        },
    },
    "Refusal": {
        "type": "object",
        "properties": {
            "at": {"type": "number", "description": "Unix time in seconds"},
            "api": {"type": "string"},
            "status": {"type": "integer"},
            "reason": {"type": "string"},
            "policy": {"type": ["string", "null"]},
            "detail": {"type": "string", "description": "redacted, at most 200 characters"},
            "worker": {"type": "string"},
        },
    },
}
WARNINGS_SCHEMA = {
    "type": "array",
    "items": {"type": "string"},
    "description": "only when there are any: the configuration warnings that concern the change (valid, probably "
    "not meant: a token read from a cookie with no check-origin), redacted as the log writes them; not a field "
    "of the resource: a body that has it is taken without it (send the answer back as it is)",
    "readOnly": True,
}
WARNED_SCHEMA = {"type": "object", "properties": {"warnings": WARNINGS_SCHEMA}}


def extend_schema(schemas: dict[str, Any], name: str, title: str, extra: dict[str, Any], *, required: bool) -> None:
    """Add ``title``: the schema ``name`` with the ``extra`` properties. Not ``allOf``: the resources forbid
    additional properties, so no answer that had them was valid against ``allOf: [resource, extra]``."""
    schema = schemas[name]
    schemas[title] = {
        **schema,
        "title": title,
        "properties": {**schema["properties"], **extra},
        **({"required": [*schema.get("required", ()), *extra]} if required else {}),
    }


SUBSCRIPTION_KEY_SCHEMA = {
    "type": "string",
    "description": "the subscription key: shown this once, only its SHA-256 is kept",
}
MESSAGE_SCHEMA = {
    "oneOf": [
        {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
        {"type": "object", "properties": {"json": {}}, "required": ["json"]},
        {
            "type": "object",
            "properties": {"binary": {"type": "string", "contentEncoding": "base64"}},
            "required": ["binary"],
        },
    ]
}
CONNECTION_SCHEMA = {
    "type": "object",
    "properties": {
        **{k: {"type": "string"} for k in ("id", "api", "worker")},
        "client": {
            "type": "string",
            "description": "the client's address: what trusted proxies reported, else the TCP peer's",
        },
        "peer": {
            "type": "string",
            "description": "host:port of the TCP peer (a proxy's, behind trusted proxies), unix: a Unix socket's",
        },
        **{k: {"type": ["string", "null"]} for k in ("subject", "subscription", "backend")},
        "opened_at": {"type": "number", "description": "Unix time"},
        **{k: {"type": "integer"} for k in ("messages_in", "bytes_in", "messages_out", "bytes_out")},
    },
}


__all__ = [
    "CONNECTION_SCHEMA",
    "LIVE_SCHEMAS",
    "MESSAGE_SCHEMA",
    "SUBSCRIPTION_KEY_SCHEMA",
    "WARNED_SCHEMA",
    "WARNINGS_SCHEMA",
    "WORKERS_SCHEMA",
    "extend_schema",
]
