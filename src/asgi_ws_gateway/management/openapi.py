"""The OpenAPI 3.1 document of the management API (``GET /openapi.json``)."""

from __future__ import annotations

import functools
from typing import Any

from ..config.apis import ApiConfig
from .live_connections import DEFAULT_LISTED, MAX_LISTED
from .openapi_schemas import (
    CONNECTION_SCHEMA,
    LIVE_SCHEMAS,
    MESSAGE_SCHEMA,
    SUBSCRIPTION_KEY_SCHEMA,
    WARNED_SCHEMA,
    WARNINGS_SCHEMA,
    WORKERS_SCHEMA,
    extend_schema,
)
from .subscriptions import Product, SubscriptionRequest, SubscriptionResource

_REF = "#/components/schemas/{model}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_PROBLEM = {
    "description": "see the problem detail",
    "content": {"application/problem+json": {"schema": _ref("Problem")}},
}
_UNAVAILABLE = {
    "description": "Redis (the shared mode's store or bus) failed: nothing was changed; retry after Retry-After",
    "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    "content": {"application/problem+json": {"schema": _ref("Problem")}},
}
_LOCKED = {
    "description": "too many refused admin credentials from this address: retry after Retry-After seconds",
    "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    "content": {"application/problem+json": {"schema": _ref("Problem")}},
}
_ERRORS = {
    "401": _PROBLEM, "404": _PROBLEM, "409": _PROBLEM, "412": _PROBLEM, "422": _PROBLEM, "429": _LOCKED,
    "503": _UNAVAILABLE,
}  # fmt: skip
_NAME = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
_ID = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]


def _flag(name: str, description: str) -> dict[str, Any]:
    """A boolean query parameter (``?drain=true``)."""
    return {"name": name, "in": "query", "schema": {"type": "boolean"}, "description": description}


_DRAIN = _flag(
    "drain", "also close the open connections of the changed API on every worker (gracefully, drain_close_code)"
)
_REVOKE = _flag(
    "drain",
    "also close, on every worker, the open connections it admitted (gracefully, drain_close_code); "
    "default: they stay open, the revocation applies to the next handshakes",
)
_FORCE = _flag(
    "force",
    "make the change even if it lets clients without a subscription key into an API that needed one (else 409, "
    "naming the APIs)",
)
_FORMAT = {
    "name": "format",
    "in": "query",
    "schema": {"type": "string", "enum": ["json", "yaml"], "default": "json"},
    "description": "json or yaml (anything else, or the parameter given twice: 422)",
}
_IF_MATCH = {
    "name": "If-Match",
    "in": "header",
    "schema": {"type": "string"},
    "description": "the ETag read earlier: refuse with 412 if the API changed since",
}


def _op(
    summary: str,
    responses: dict[str, Any],
    *,
    body: dict[str, Any] | None = None,
    params: list[dict[str, Any]] | None = None,
    public: bool = False,
) -> dict[str, Any]:
    errors = {} if public else {status: answer for status, answer in _ERRORS.items() if status not in responses}
    operation: dict[str, Any] = {"summary": summary, "responses": {**responses, **errors}}
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if params:
        operation["parameters"] = params
    if public:
        operation["security"] = []
    return operation


_API_FILTER = {"name": "api", "in": "query", "schema": {"type": "string"}, "description": "only this API's"}
_SINCE = {
    "name": "since",
    "in": "query",
    "schema": {"type": "number"},
    "description": "only the samples after this Unix time (the last time a previous answer had)",
}
_LIMIT = {
    "name": "limit",
    "in": "query",
    "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
    "description": "how many refusals at most",
}
_LISTED = {
    "name": "limit",
    "in": "query",
    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LISTED, "default": DEFAULT_LISTED},
    "description": "how many connections at most, the oldest first",
}
_NO_CONTENT = {"204": {"description": "done"}}
_DELETED = {
    **_NO_CONTENT,
    "200": _json(
        {**WARNED_SCHEMA, "required": ["warnings"]},
        "done, and the deletion left configuration warnings (about the APIs)",
    ),
}
_DONE = {"200": _json({"type": "object", "description": "worker: the one holding the connection; served_by: this one"})}
_CLOSED = {
    "200": _json(
        {"type": "object", "description": "closed: true; worker: the one holding the connection; served_by: this one"},
        "this call began the connection's close: its client and upstream are sent this code",
    ),
    "409": {
        "description": "the connection is already closing (its client's or upstream's close, a drain, a policy, a "
        "shutdown, an earlier close): nothing was sent; problems name the worker holding it",
        "content": {"application/problem+json": {"schema": _ref("Problem")}},
    },
}
_KEYED = _ref("SubscriptionWithKey")


def _status_document(statuses: list[str], **more: dict[str, str]) -> dict[str, object]:
    """``/healthz``'s and ``/readyz``'s answers: ``{"status": ...}`` and ``more``, nothing else."""
    properties = {"status": {"type": "string", "enum": statuses}, **more}
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


@functools.cache
def openapi_document() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    # The documented names: a subscription as the API returns it is a "Subscription".
    for name, model in (("ApiConfig", ApiConfig), ("Product", Product), ("Subscription", SubscriptionResource),
                        ("SubscriptionRequest", SubscriptionRequest)):  # fmt: skip
        schema = model.model_json_schema(ref_template=_REF, mode="serialization")
        schemas.update(schema.pop("$defs", {}))
        schemas[name] = schema
    schemas["Subscription"]["properties"].pop("key_sha256", None)
    schemas["Subscription"]["required"] = [r for r in schemas["Subscription"]["required"] if r != "key_sha256"]
    # The answers to changes: the resource and what comes with it (the body of a create or replace may
    # have ``warnings``, ignored, so that an answer can be sent back as it is).
    extend_schema(schemas, "ApiConfig", "ApiConfigWithWarnings", {"warnings": WARNINGS_SCHEMA}, required=False)
    extend_schema(schemas, "Product", "ProductWithWarnings", {"warnings": WARNINGS_SCHEMA}, required=False)
    extend_schema(schemas, "Subscription", "SubscriptionWithKey", {"key": SUBSCRIPTION_KEY_SCHEMA}, required=True)
    schemas["Connection"] = CONNECTION_SCHEMA
    schemas["Problem"] = {
        "type": "object",
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "problems": {"type": "array", "items": {"type": "string"}, "description": "field.path: message (422)"},
        },
    }
    api, warned_api, warned_product = _ref("ApiConfig"), _ref("ApiConfigWithWarnings"), _ref("ProductWithWarnings")
    paths = {
        "/healthz": {"get": _op("Liveness", {"200": _json(_status_document(["ok"]))}, public=True)},
        "/readyz": {
            "get": _op(
                "Readiness: 503 while starting, draining or full (at max_connections)",
                {
                    "200": _json(
                        _status_document(
                            ["ready"],
                            revision={"type": "integer", "description": "the revision of the API changes served"},
                        )
                    ),
                    "503": _json(_status_document(["draining", "full", "starting"]), "not ready"),
                },
                public=True,
            )
        },
        "/apis": {
            "get": _op(
                "List WebSocket APIs",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "apis": {"type": "array", "items": api},
                                "origins": {"type": "object"},
                                "revision": {"type": "integer"},
                            },
                        }
                    )
                },
            ),
            "post": _op("Create a WebSocket API", {"201": _json(warned_api, "created")}, body=warned_api),
        },
        "/apis/{name}": {
            "get": _op("Get a WebSocket API (ETag header)", {"200": _json(api)}, params=_NAME),
            "put": _op(
                "Replace a WebSocket API",
                {"200": _json(warned_api)},
                body=warned_api,
                params=[*_NAME, _DRAIN, _IF_MATCH],
            ),
            "delete": _op("Delete a WebSocket API", _DELETED, params=[*_NAME, _DRAIN, _IF_MATCH]),
        },
        "/config": {
            "get": _op(
                "The merged configuration (file + changes), as JSON or ?format=yaml",
                {"200": _json({"type": "object"})},
                params=[_FORMAT],
            )
        },
        "/products": {
            "get": _op("List products", {"200": _json({"type": "object"})}),
            "post": _op(
                "Create a product",
                {"201": _json(warned_product)},
                body=warned_product,
                params=[_FORCE],
            ),
        },
        "/products/{name}": {
            "get": _op("Get a product", {"200": _json(_ref("Product"))}, params=_NAME),
            "delete": _op(
                "Delete a product (none of its subscriptions may remain); ?drain=true closes the connections of "
                "its APIs admitted with a subscription that no longer grants them",
                _DELETED,
                params=[*_NAME, _FORCE, _REVOKE],
            ),
        },
        "/subscriptions": {
            "get": _op("List subscriptions (?product=)", {"200": _json({"type": "object"})}),
            "post": _op(
                "Create a subscription; its key is in this response only",
                {"201": _json(_KEYED)},
                body=_ref("SubscriptionRequest"),
            ),
        },
        "/subscriptions/{id}": {
            "get": _op("Get a subscription", {"200": _json(_ref("Subscription"))}, params=_ID),
            "delete": _op("Delete a subscription", _NO_CONTENT, params=[*_ID, _REVOKE]),
        },
        "/subscriptions/{id}/suspend": {
            "post": _op("Suspend", {"200": _json(_ref("Subscription"))}, params=[*_ID, _REVOKE])
        },
        "/subscriptions/{id}/activate": {"post": _op("Activate", {"200": _json(_ref("Subscription"))}, params=_ID)},
        "/subscriptions/{id}/regenerate-key": {
            "post": _op(
                "Replace the key; the new one is in this response only",
                {"200": _json(_KEYED)},
                params=[*_ID, _REVOKE],
            )
        },
        "/connections": {
            "get": _op(
                "The oldest open connections on every worker (?api=, ?limit=), and how many are open",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "connections": {"type": "array", "items": _ref("Connection")},
                                "total": {"type": "integer", "description": "open connections in all"},
                                "workers": {"type": "object"},
                            },
                        }
                    )
                },
                params=[_API_FILTER, _LISTED],
            )
        },
        "/connections/{id}/messages": {
            "post": _op("Send a message to the connection's client", _DONE, body=MESSAGE_SCHEMA, params=_ID)
        },
        "/connections/{id}/close": {
            "post": _op(
                "Close the connection, both sides (409 when it is already closing)",
                _CLOSED,
                params=_ID,
                body={
                    "type": "object",
                    "properties": {
                        "code": {"type": "integer", "default": 1000},
                        "reason": {
                            "type": "string",
                            "maxLength": 123,
                            "description": "At most 123 bytes as UTF-8; one line of text (no control, "
                            "line-breaking or bidi character).",
                        },
                    },
                },
            )
        },
        "/metrics/series": {
            "get": _op(
                "Time series of the gateway's counters, added up over every worker (see docs/management.md)",
                {"200": _json(_ref("MetricSeries"))},
                params=[_API_FILTER, _SINCE],
            )
        },
        "/refusals": {
            "get": _op(
                "The last refused handshakes on every worker, newest first (details redacted)",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "refusals": {"type": "array", "items": _ref("Refusal")},
                                "workers": WORKERS_SCHEMA,
                                "served_by": {"type": "string"},
                            },
                        }
                    )
                },
                params=[_API_FILTER, _LIMIT],
            )
        },
    }
    schemas.update(LIVE_SCHEMAS)
    _add_request_refusals(paths)
    return {
        "openapi": "3.1.0",
        "info": {"title": "asgi-ws-gateway management API", "version": "1"},
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {"admin": {"type": "http", "scheme": "bearer"}}},
        "security": [{"admin": []}],
    }


_BAD_HEAD = {**_PROBLEM, "description": "a Content-Length or Host port that is not plain ASCII digits"}
_FORGED = {**_PROBLEM, "description": "Sec-Fetch-Site or Origin says another site sent it (a forged request)"}
_UNTYPED = {
    **_PROBLEM,
    "description": "a change not typed application/json (with a body or not; a DELETE with one)",
}
_TOO_LARGE = {**_PROBLEM, "description": "the body is larger than the API takes (max_body_size)"}
_TOO_SLOW = {**_PROBLEM, "description": "the body took longer than body_timeout to arrive"}


def _add_request_refusals(paths: dict[str, Any]) -> None:
    """What any request to a protected operation may get before it is read (400), and a change before
    auth (403, 415) or while its body arrives (408, 413): answered before the operation runs, so on
    every such path alike. The public ones (``/healthz``, ``/readyz``) read no head: none of these."""
    for operations in paths.values():
        for method, operation in operations.items():
            if operation.get("security") == []:
                continue
            refusals = {"400": _BAD_HEAD}
            if method != "get":
                refusals |= {"403": _FORGED, "415": _UNTYPED, "408": _TOO_SLOW, "413": _TOO_LARGE}
            operation["responses"] = {**refusals, **operation["responses"]}


__all__ = ["openapi_document"]
