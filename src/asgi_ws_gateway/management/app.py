"""The management REST API: a Starlette app over a :class:`~.service.Manager`.

JSON in and out; errors are ``application/problem+json`` (RFC 9457) with a ``problems`` list of
``field.path: message`` lines for 422. Every endpoint but health, the OpenAPI document and the
console's static files needs the admin token (``Authorization: Bearer ...``) or whatever the
user-supplied ``auth`` callable accepts.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import wraps
from typing import Any

import yaml
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..config.limits import MIB
from ..config.problems import shorten
from ..json_names import AmbiguousJson, no_constant, unique_names
from ..redact import printable
from ..strict_numbers import non_finite_numbers
from . import console
from .disclosure import public_document
from .errors import Invalid, ManagementError, PayloadTooLarge, RequestTimeout, UnsupportedMediaType, problem
from .forgery import HostCheck, check_not_forged
from .head import check_head, content_length, has_body
from .live_connections import DEFAULT_LISTED, MAX_LISTED
from .lockout import Lockout
from .openapi import openapi_document
from .overlay import api_document, merge_document
from .service import Manager

logger = logging.getLogger(__name__)

Auth = Callable[[Request], Awaitable[bool]]
"""Decides whether a request may use the management API (True) or gets 401 (False)."""
Endpoint = Callable[[Request], Awaitable[Response]]


SHORT_TOKEN = 16
"""An admin token shorter than this is warned about: a list of likely words finds it despite the lockout."""
EXAMPLE_ADMIN_TOKEN = "dev-admin-token-for-the-example"
"""The example application's token when none is set: printed by it and in the README, so public."""


MAKE_TOKEN = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"


def weak_token_problem(token: str) -> str | None:
    """Why ``token`` is guessable, if it is: short (the lockout counts per address and per worker, so a
    guesser with a few dozen addresses tries a thousand a minute), or published."""
    if token == EXAMPLE_ADMIN_TOKEN:
        return "the admin token is the example's, which is public"
    if len(token) < SHORT_TOKEN:
        return f"the admin token is {len(token)} characters: guessable"
    return None


def admin_token_problem(token: str) -> str | None:
    """Why ``token`` cannot work as an admin token, if it cannot: a header carries visible ASCII only,
    so a space, a control or a non-ASCII character made a token no client could ever send."""
    if not token:
        return "the admin token is empty"
    if not all("!" <= character <= "~" for character in token):
        return "the admin token must be visible ASCII characters (no space): no client could send this one"
    return None


def token_auth(token: str) -> Auth:
    """Accept ``Authorization: Bearer <token>`` (compared in constant time).

    Raises:
        ValueError: the token is one no client could send (:func:`admin_token_problem`).
    """
    if (problem := admin_token_problem(token)) is not None:
        raise ValueError(problem)
    if (weak := weak_token_problem(token)) is not None:
        logger.warning("%s; use %d or more random characters (%s)", weak, SHORT_TOKEN, MAKE_TOKEN)
    return _BearerToken(token.encode())


class _BearerToken:
    """:func:`token_auth`'s check; the lockout counts only the requests that present a token to it."""

    def __init__(self, expected: bytes) -> None:
        self._expected = expected

    async def __call__(self, request: Request) -> bool:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self._expected)


def _guessed(auth: Auth, request: Request) -> bool:
    """Whether a refused request counts as a guess: it presented a token, or ``auth`` is one whose
    credentials the gateway cannot see (a cookie, a certificate). A request without any
    ``Authorization`` guesses nothing, and any page can make a browser send one."""
    return not isinstance(auth, _BearerToken) or "authorization" in request.headers


@dataclass(frozen=True, kw_only=True)
class BodyLimits:
    """What one management request body may be.

    Args:
        max_bytes: the largest body, in bytes (default 1 MiB); more is a 413, whether announced by
            Content-Length or found while reading a chunked body (never read further).
        timeout: seconds the whole body may take to arrive (default 10); slower is a 408.
        max_depth: how deeply JSON arrays and objects may nest (default 32); deeper is a 422.
    """

    max_bytes: int = MIB
    timeout: float = 10.0
    max_depth: int = 32


async def read_body(request: Request, limits: BodyLimits) -> bytes:
    """The request body, refused (413) as soon as it exceeds ``limits.max_bytes``, or (408) too slow."""
    declared = content_length(request)
    if declared is not None and declared > limits.max_bytes:
        raise PayloadTooLarge(f"the body is larger than {limits.max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(limits.timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limits.max_bytes:
                    raise PayloadTooLarge(f"the body is larger than {limits.max_bytes} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeout(f"the body did not arrive within {limits.timeout:g} s") from None
    return b"".join(chunks)


async def read_json(request: Request, limits: BodyLimits) -> Any:
    """The body as JSON within ``limits`` (413, 408, or 422 for invalid or too deeply nested JSON).

    A body not typed ``application/json`` is a 415, unread, untyped too: a page the admin visits can
    post a form or plain text cross-site (``<form enctype="text/plain">`` makes a JSON-shaped body), or
    an untyped Blob with ``fetch(..., {mode: "no-cors"})``, and an ``auth`` that trusts a cookie or a
    client certificate would admit it (:mod:`.forgery` refuses them before ``auth``; this is the
    same rule for any other caller).
    """
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json" and has_body(request):
        shown = f"is {media_type}" if media_type else "has no Content-Type"
        raise UnsupportedMediaType(f"the body {shown}: send JSON as application/json")
    raw = await read_body(request, limits)
    try:
        value = json.loads(raw, object_pairs_hook=unique_names, parse_constant=no_constant) if raw else None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise Invalid("the body is not valid JSON", [f"(body): {exc}"]) from None
    except AmbiguousJson as exc:
        raise Invalid("the body is not valid JSON", [f"(body): {exc}"]) from None
    except ValueError:  # Python reads no integer of more than 4,300 digits: a 500 and a traceback before
        raise Invalid("the body is not valid JSON", ["(body): an integer too long to read"]) from None
    except RecursionError:  # nested deeper than Python parses: certainly deeper than the limit
        raise Invalid(
            "the body is nested too deeply", [f"(body): nested deeper than {limits.max_depth} levels"]
        ) from None
    if _depth(value, limits.max_depth) > limits.max_depth:
        raise Invalid("the body is nested too deeply", [f"(body): nested deeper than {limits.max_depth} levels"])
    if problems := non_finite_numbers(value):  # 1e999: infinity to Python, Infinity or null once written
        raise Invalid("the body holds a number JSON cannot carry", problems)
    if b"\\u" in raw and (field := _lone_surrogate(value)) is not None:
        # JSON's \ud800 escape decodes to a string UTF-8 cannot encode: every string an admin sends
        # is later encoded (a message's text, a close reason, a header value, the state file).
        shown = field.encode("utf-8", "backslashreplace").decode()  # a name may hold the surrogate itself
        raise Invalid("the body is not valid Unicode", [f"{shown}: a lone surrogate is not valid Unicode"])
    return value


def _lone_surrogate(value: Any) -> str | None:
    """The field path (``reason``, ``apis[0].path``) of the first string or name UTF-8 cannot encode."""
    pending: list[tuple[Any, str]] = [(value, "")]
    while pending:
        node, path = pending.pop()
        if isinstance(node, str):
            if not node.isascii():
                try:
                    node.encode()
                except UnicodeEncodeError:
                    return path or "(body)"
        elif isinstance(node, dict):
            for name, child in node.items():
                field = f"{path}.{name}" if path else name
                pending.extend(((name, field), (child, field)))
        elif isinstance(node, list):
            pending.extend((child, f"{path}[{i}]") for i, child in enumerate(node))
    return None


def _depth(value: Any, stop: int) -> int:
    """How deeply ``value`` nests (counting stops a level past ``stop``); iterative, no recursion."""
    deepest, pending = 0, [(value, 0)]
    while pending:
        node, level = pending.pop()
        if isinstance(node, dict | list):
            level += 1
            deepest = max(deepest, level)
            if deepest > stop:
                return deepest
            pending.extend((child, level) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def create_management_app(
    manager: Manager,
    *,
    auth: Auth,
    limits: BodyLimits = BodyLimits(),
    lockout: Lockout | None = None,
    allowed_hosts: Sequence[str] = (),
) -> Starlette:
    """The management API for ``manager``; mount it anywhere (it uses relative routes only).

    ``lockout``: how refused credentials slow a client down (default: 30 a minute, then 429); the
    client is the address the gateway decides (the TCP peer, or what ``trusted_proxies`` report).
    ``allowed_hosts``: host names the API answers to besides IP addresses and ``localhost``
    (with the configuration file's ``management.allowed_hosts``; see :class:`~.forgery.HostCheck`).
    """
    lockout = lockout or Lockout()

    async def json_body(request: Request) -> Any:
        return await read_json(request, limits)

    def protected(endpoint: Endpoint) -> Endpoint:
        @wraps(endpoint)
        async def run(request: Request) -> Response:
            try:
                check_head(request)  # the numbers forgery's check and the body's reading parse
                check_not_forged(request)  # first: a forged request must not count against the lockout
            except ManagementError as exc:
                logger.info(
                    "management %s %s refused: %d %s",
                    request.method, printable(request.scope["path"]), exc.status, printable(exc.detail),
                )  # fmt: skip
                return problem(exc.status, exc.title, exc.detail)
            address = manager.gateway.client_ip(request.scope)  # behind trusted_proxies: the client, not the proxy
            wait = lockout.wait(address)
            if wait:
                return problem(
                    429, "Too Many Requests", "too many refused admin credentials from this address",
                    headers={"Retry-After": str(math.ceil(wait))},
                )  # fmt: skip
            if not await auth(request):
                if _guessed(auth, request):
                    lockout.refused(address)
                return problem(
                    401,
                    "Unauthorized",
                    "a valid admin token is required",
                    headers={"WWW-Authenticate": 'Bearer realm="asgi-ws-gateway"'},
                )
            try:
                await manager.ensure_started()
                return await endpoint(request)
            except ManagementError as exc:
                # The path and the detail carry names the client chose (%0a in an id): escaped, one line.
                path = printable(request.scope["path"])  # request.url.path drops a CR or LF silently
                if exc.status >= 500:  # the cause (Redis's own message) is for the operator, not the response
                    cause = printable(str(exc.__cause__ or exc.detail))
                    logger.warning("management %s %s failed: %d %s", request.method, path, exc.status, cause)
                else:
                    detail = printable(exc.detail)
                    logger.info("management %s %s refused: %d %s", request.method, path, exc.status, detail)
                return problem(exc.status, exc.title, exc.detail, exc.problems, headers=exc.headers)

        return run

    def api_response(name: str, status: int = 200, warnings: Sequence[str] = ()) -> Response:
        document = api_document(manager.api(name))
        headers = {"ETag": manager.etag(document)}  # of the full document: a change of secret is a change
        if status == 201:
            headers["Location"] = f"apis/{name}"
        return JSONResponse(_warned(public_document(document), warnings), status, headers=headers)

    async def refresh(request: Request) -> None:
        await manager.sync()  # another worker may have changed something since this one last looked

    # -- APIs --
    async def list_apis(request: Request) -> Response:
        await refresh(request)
        apis = manager.apis()
        return JSONResponse(
            {
                "apis": [public_document(api_document(a)) for a in apis],
                "origins": {a.name: manager.origin(a.name) for a in apis},
                "revision": manager.overlay.revision,
            }
        )

    async def create_api(request: Request) -> Response:
        api, warnings = await manager.create_api(await json_body(request))
        return api_response(api.name, 201, warnings)

    async def get_api(request: Request) -> Response:
        await refresh(request)
        return api_response(request.path_params["name"])

    async def replace_api(request: Request) -> Response:
        name = request.path_params["name"]
        _, warnings = await manager.replace_api(
            name, await json_body(request), if_match=request.headers.get("if-match"), drain=_flag(request, "drain")
        )
        return api_response(name, warnings=warnings)

    async def delete_api(request: Request) -> Response:
        warnings = await manager.delete_api(
            request.path_params["name"], if_match=request.headers.get("if-match"), drain=_flag(request, "drain")
        )
        return _deleted(warnings)

    async def export(request: Request) -> Response:
        await refresh(request)
        document = merge_document(manager.base, manager.overlay)
        document["apis"] = [api_document(api, compact=True) for api in manager.apis()]
        document = public_document(json.loads(json.dumps(document, default=str)))
        if request.query_params.get("format") == "yaml":
            return Response(yaml.safe_dump(document, sort_keys=False), media_type="application/yaml")
        return JSONResponse(document)

    # -- products and subscriptions --
    async def list_products(request: Request) -> Response:
        await refresh(request)
        return JSONResponse({"products": [public_document(p.model_dump(mode="json")) for p in manager.products()]})

    async def create_product(request: Request) -> Response:
        product, warnings = await manager.create_product(await json_body(request), force=_flag(request, "force"))
        return JSONResponse(
            _warned(public_document(product.model_dump(mode="json")), warnings),
            201,
            headers={"Location": f"products/{product.name}"},
        )

    async def get_product(request: Request) -> Response:
        await refresh(request)
        return JSONResponse(public_document(manager.product(request.path_params["name"]).model_dump(mode="json")))

    async def delete_product(request: Request) -> Response:
        warnings = await manager.delete_product(
            request.path_params["name"], force=_flag(request, "force"), drain=_flag(request, "drain")
        )
        return _deleted(warnings)

    async def list_subscriptions(request: Request) -> Response:
        await refresh(request)
        found = manager.subscriptions(request.query_params.get("product"))
        return JSONResponse({"subscriptions": [s.public() for s in found]})

    async def create_subscription(request: Request) -> Response:
        subscription, key = await manager.create_subscription(await json_body(request))
        headers = {"Location": f"subscriptions/{subscription.id}", "Cache-Control": "no-store"}
        return JSONResponse({**subscription.public(), "key": key}, 201, headers=headers)

    async def get_subscription(request: Request) -> Response:
        await refresh(request)
        return JSONResponse(manager.subscription(request.path_params["id"]).public())

    async def delete_subscription(request: Request) -> Response:
        await manager.delete_subscription(request.path_params["id"], drain=_flag(request, "drain"))
        return Response(status_code=204)

    def set_state(state: str) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            # Only a suspension revokes: ?drain=true on activate has nothing to close.
            drain = state == "suspended" and _flag(request, "drain")
            return JSONResponse(
                (await manager.set_subscription_state(request.path_params["id"], state, drain=drain)).public()
            )

        return endpoint

    async def regenerate_key(request: Request) -> Response:
        subscription, key = await manager.regenerate_key(request.path_params["id"], drain=_flag(request, "drain"))
        return JSONResponse({**subscription.public(), "key": key}, headers={"Cache-Control": "no-store"})

    # -- connections --
    async def list_connections(request: Request) -> Response:
        limit = _number(request, "limit")
        if limit is not None and (limit != int(limit) or not 1 <= limit <= MAX_LISTED):
            raise Invalid("invalid query", [f"limit: an integer from 1 to {MAX_LISTED}"])
        listed = await manager.connections(
            request.query_params.get("api"), DEFAULT_LISTED if limit is None else int(limit)
        )
        workers = {"answered": listed.answered, "expected": listed.expected}
        return JSONResponse(
            {"connections": listed.found, "total": listed.total, "workers": workers, "served_by": manager.bus.worker}
        )

    async def send_message(request: Request) -> Response:
        holder = await manager.send(request.path_params["id"], _message(await json_body(request)))
        return JSONResponse({"sent": True, "worker": holder, "served_by": manager.bus.worker})

    async def close_connection(request: Request) -> Response:
        body = await json_body(request) or {}
        if not isinstance(body, dict):
            raise Invalid("the body must be a JSON object", ["(top level): expected a JSON object"])
        code, reason = body.get("code", 1000), body.get("reason", "")
        if not isinstance(code, int) or isinstance(code, bool) or not isinstance(reason, str):
            raise Invalid("invalid close request", ["code: an integer, reason: a string"])
        holder = await manager.kick(request.path_params["id"], code, reason)
        return JSONResponse({"closed": True, "worker": holder, "served_by": manager.bus.worker})

    # -- what the console watches --
    async def metric_series(request: Request) -> Response:
        since = _number(request, "since")
        return JSONResponse(await manager.watch.series(request.query_params.get("api"), since))

    async def list_refusals(request: Request) -> Response:
        limit = _number(request, "limit")
        if limit is not None and (limit != int(limit) or not 1 <= limit <= 1000):
            raise Invalid("invalid query", ["limit: an integer from 1 to 1000"])
        found, answered, expected = await manager.watch.refusals(
            request.query_params.get("api"), 100 if limit is None else int(limit)
        )
        workers = {"answered": answered, "expected": expected}
        return JSONResponse({"refusals": found, "workers": workers, "served_by": manager.bus.worker})

    # -- unauthenticated --
    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if manager.gateway.draining:
            return JSONResponse({"status": "draining"}, 503)
        if manager.gateway.full:
            return JSONResponse({"status": "full"}, 503)
        if not manager.started:
            return JSONResponse({"status": "starting"}, 503)
        return JSONResponse({"status": "ready", "revision": manager.overlay.revision})

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document())

    routes = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/openapi.json", openapi),
        *console.routes(),
        Route("/apis", protected(list_apis)),
        Route("/apis", protected(create_api), methods=["POST"]),
        Route("/apis/{name}", protected(get_api)),
        Route("/apis/{name}", protected(replace_api), methods=["PUT"]),
        Route("/apis/{name}", protected(delete_api), methods=["DELETE"]),
        Route("/config", protected(export)),
        Route("/products", protected(list_products)),
        Route("/products", protected(create_product), methods=["POST"]),
        Route("/products/{name}", protected(get_product)),
        Route("/products/{name}", protected(delete_product), methods=["DELETE"]),
        Route("/subscriptions", protected(list_subscriptions)),
        Route("/subscriptions", protected(create_subscription), methods=["POST"]),
        Route("/subscriptions/{id}", protected(get_subscription)),
        Route("/subscriptions/{id}", protected(delete_subscription), methods=["DELETE"]),
        Route("/subscriptions/{id}/suspend", protected(set_state("suspended")), methods=["POST"]),
        Route("/subscriptions/{id}/activate", protected(set_state("active")), methods=["POST"]),
        Route("/subscriptions/{id}/regenerate-key", protected(regenerate_key), methods=["POST"]),
        Route("/connections", protected(list_connections)),
        Route("/connections/{id}/messages", protected(send_message), methods=["POST"]),
        Route("/connections/{id}/close", protected(close_connection), methods=["POST"]),
        Route("/metrics/series", protected(metric_series)),
        Route("/refusals", protected(list_refusals)),
    ]
    hosts = [*allowed_hosts, *manager.base.management.allowed_hosts]
    return Starlette(routes=routes, middleware=[Middleware(HostCheck, allowed=hosts)])


def _warned(document: Any, warnings: Sequence[str]) -> Any:
    """The answer to a change: the resource, with the configuration ``warnings`` that concern the change
    (valid, probably not meant: the log has them too) when there are any."""
    return {**document, "warnings": list(warnings)} if warnings else document


def _deleted(warnings: Sequence[str]) -> Response:
    """The answer to a deletion: 204, or 200 with the ``warnings`` it brought (a product deleted took
    the ``check-origin`` its APIs ran)."""
    return JSONResponse({"warnings": list(warnings)}) if warnings else Response(status_code=204)


def _flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "").lower() in ("1", "true", "yes")


def _number(request: Request, name: str) -> float | None:
    """A finite number from the query string (422 when it is not one), or None when absent."""
    text = request.query_params.get(name)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise Invalid("invalid query", [f"{name}: not a number: {shorten(text, 40)}"])
    return value


def _message(body: Any) -> str | bytes:
    """``{"text": "..."}``, ``{"json": <any>}`` (sent as text) or ``{"binary": "<base64>"}``."""
    if isinstance(body, dict) and len(body) == 1:
        if isinstance(body.get("text"), str):
            return str(body["text"])
        if "json" in body:
            return json.dumps(body["json"])
        if isinstance(body.get("binary"), str):
            try:
                return base64.b64decode(body["binary"], validate=True)
            except binascii.Error:
                raise Invalid("invalid message", ["binary: not valid base64"]) from None
    raise Invalid("invalid message", ["(top level): expected exactly one of text, json or binary"])


__all__ = ["Auth", "BodyLimits", "create_management_app", "read_body", "read_json", "token_auth"]
