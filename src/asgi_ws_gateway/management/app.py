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
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable, Sequence
from functools import wraps
from typing import Any

import yaml
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..config.problems import shorten
from ..redact import printable
from . import console
from .admin_auth import Auth, guessed
from .answer_headers import AnswerHeaders
from .disclosure import public_document
from .errors import Invalid, ManagementError, problem
from .forgery import HostCheck, check_not_forged
from .head import check_head
from .live_connections import DEFAULT_LISTED, MAX_LISTED
from .local_user import loopback_user
from .lockout import Lockout
from .openapi import openapi_document
from .overlay import api_document, merge_document
from .request_body import BodyLimits, read_json
from .service import Manager
from .transport_peer import peer_scope

logger = logging.getLogger(__name__)

Endpoint = Callable[[Request], Awaitable[Response]]


def create_management_app(
    manager: Manager,
    *,
    auth: Auth,
    limits: BodyLimits = BodyLimits(),  # noqa: B008 - frozen (request_body.py), so one shared default is safe
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
    rewritten: list[bool] = []  # warned once that the server rewrote scope["client"]

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
            # The transport's peer, not one the server rewrote from X-Forwarded-For (uvicorn's default for
            # 127.0.0.1): a guesser chose its own key, or the administrator's. Then trusted_proxies decide.
            scope = peer_scope(request.scope, request.receive)
            address = manager.gateway.client_ip(scope)  # behind trusted_proxies: the client, not the proxy
            if scope is not request.scope and not rewritten and address != manager.gateway.client_ip(request.scope):
                rewritten.append(True)  # once: uvicorn and trusted_proxies disagree (they may agree: no word then)
                logger.warning(
                    "management API: the server rewrote the client address from a forwarding header that "
                    "trusted_proxies does not vouch for (uvicorn's --proxy-headers, on by default); the lockout "
                    "counts the connection's own peer: list a proxy in front in trusted_proxies, or run uvicorn "
                    "with --no-proxy-headers"
                )
            user = loopback_user(scope, address)  # on loopback: which local user, not the shared address
            wait = lockout.wait(address, user)
            if wait:
                return problem(
                    429, "Too Many Requests", "too many refused admin credentials from this address",
                    headers={"Retry-After": str(math.ceil(wait))},
                )  # fmt: skip
            if not await auth(request):
                if guessed(auth, request):
                    lockout.refused(address, user)
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

    async def api_response(name: str, status: int = 200, warnings: Sequence[str] = ()) -> Response:
        api = manager.api(name)

        def answer() -> Response:
            document = api_document(api)
            headers = {"ETag": manager.etag(document)}  # of the full document: a change of secret is a change
            if status == 201:
                headers["Location"] = f"apis/{name}"
            return JSONResponse(_warned(public_document(document), warnings), status, headers=headers)

        return await rendered(answer)  # an API of 8,192 conditions: a second of model_dump and JSON

    async def refresh(request: Request) -> None:
        await manager.sync()  # another worker may have changed something since this one last looked

    # -- APIs --
    async def list_apis(request: Request) -> Response:
        await refresh(request)
        apis, revision = manager.apis(), manager.overlay.revision
        origins = {a.name: manager.origin(a.name) for a in apis}
        return await rendered(
            lambda: JSONResponse(
                {"apis": [public_document(api_document(a)) for a in apis], "origins": origins, "revision": revision}
            )
        )

    async def create_api(request: Request) -> Response:
        api, warnings = await manager.create_api(await json_body(request))
        return await api_response(api.name, 201, warnings)

    async def get_api(request: Request) -> Response:
        await refresh(request)
        return await api_response(request.path_params["name"])

    async def replace_api(request: Request) -> Response:
        name = request.path_params["name"]
        _, warnings = await manager.replace_api(
            name, await json_body(request), if_match=request.headers.get("if-match"), drain=_flag(request, "drain")
        )
        return await api_response(name, warnings=warnings)

    async def delete_api(request: Request) -> Response:
        warnings = await manager.delete_api(
            request.path_params["name"], if_match=request.headers.get("if-match"), drain=_flag(request, "drain")
        )
        return _deleted(warnings)

    async def export(request: Request) -> Response:
        await refresh(request)
        base, overlay, apis = manager.base, manager.overlay, manager.apis()
        as_yaml = _choice(request, "format", ("json", "yaml")) == "yaml"

        def answer() -> Response:
            document = merge_document(base, overlay)
            document["apis"] = [api_document(api, compact=True) for api in apis]
            document = public_document(json.loads(json.dumps(document, default=str)))
            if as_yaml:
                return Response(yaml.safe_dump(document, sort_keys=False), media_type="application/yaml")
            return JSONResponse(document)

        return await rendered(answer)

    # -- products and subscriptions --
    async def list_products(request: Request) -> Response:
        await refresh(request)
        products = manager.products()
        return await rendered(
            lambda: JSONResponse({"products": [public_document(p.model_dump(mode="json")) for p in products]})
        )

    async def create_product(request: Request) -> Response:
        product, warnings = await manager.create_product(await json_body(request), force=_flag(request, "force"))
        return await rendered(
            lambda: JSONResponse(
                _warned(public_document(product.model_dump(mode="json")), warnings),
                201,
                headers={"Location": f"products/{product.name}"},
            )
        )

    async def get_product(request: Request) -> Response:
        await refresh(request)
        product = manager.product(request.path_params["name"])
        return await rendered(lambda: JSONResponse(public_document(product.model_dump(mode="json"))))

    async def delete_product(request: Request) -> Response:
        warnings = await manager.delete_product(
            request.path_params["name"], force=_flag(request, "force"), drain=_flag(request, "drain")
        )
        return _deleted(warnings)

    async def list_subscriptions(request: Request) -> Response:
        await refresh(request)
        found = manager.subscriptions(_query_value(request, "product"))
        return await rendered(lambda: JSONResponse({"subscriptions": [s.public() for s in found]}))

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
            _query_value(request, "api"), DEFAULT_LISTED if limit is None else int(limit)
        )
        workers: dict[str, Any] = {"answered": listed.answered, "expected": listed.expected}
        if listed.missing:  # on the bus's roster, no answer (off the bus, or late): their connections are not here
            workers["missing"] = list(listed.missing)
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
        return JSONResponse(await manager.watch.series(_query_value(request, "api"), since))

    async def list_refusals(request: Request) -> Response:
        limit = _number(request, "limit")
        if limit is not None and (limit != int(limit) or not 1 <= limit <= 1000):
            raise Invalid("invalid query", ["limit: an integer from 1 to 1000"])
        found, answered, expected = await manager.watch.refusals(
            _query_value(request, "api"), 100 if limit is None else int(limit)
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
    return Starlette(routes=routes, middleware=[Middleware(AnswerHeaders), Middleware(HostCheck, allowed=hosts)])


async def rendered(answer: Callable[[], Response]) -> Response:
    """``answer()`` in a thread: writing a document as JSON takes time in proportion to its size (up to the
    16 MB of stored changes), which the event loop must not wait for."""
    return await asyncio.to_thread(answer)


def _warned(document: Any, warnings: Sequence[str]) -> Any:
    """The answer to a change: the resource, with the configuration ``warnings`` that concern the change
    (valid, probably not meant: the log has them too) when there are any."""
    return {**document, "warnings": list(warnings)} if warnings else document


def _deleted(warnings: Sequence[str]) -> Response:
    """The answer to a deletion: 204, or 200 with the ``warnings`` it brought (a product deleted took
    the ``check-origin`` its APIs ran)."""
    return JSONResponse({"warnings": list(warnings)}) if warnings else Response(status_code=204)


_FLAGS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
# What the API's numbers are written as (a limit, Unix seconds): float() also took ' 5', '+5', '5_0',
# '1e3' and Arabic-Indic '١٢', which no other reader of the query takes for those numbers.
_DECIMAL = re.compile(r"-?[0-9]{1,20}(?:\.[0-9]{1,9})?")


def _query_value(request: Request, name: str) -> str | None:
    """The one value of query parameter ``name`` (None when absent); given twice, a 422: the two readings differ."""
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise Invalid("invalid query", [f"{name}: given {len(values)} times"])
    return values[0] if values else None


def _flag(request: Request, name: str) -> bool:
    """``?drain=true``: true, false or absent; anything else is a 422 (``drain=on`` was false without a
    word: a deletion that was meant to close its connections left them open)."""
    text = _query_value(request, name)
    if text is None:
        return False
    flag = _FLAGS.get(text.lower())
    if flag is None:
        raise Invalid("invalid query", [f"{name}: true or false, not {shorten(text, 40)}"])
    return flag


def _choice(request: Request, name: str, allowed: tuple[str, ...]) -> str:
    """One of ``allowed`` (the first when absent); anything else, or the parameter given twice, a 422
    (``GET /config?format=xml`` was answered as JSON, as if the parameter had been read)."""
    text = _query_value(request, name)
    if text is None:
        return allowed[0]
    if text not in allowed:
        raise Invalid("invalid query", [f"{name}: {' or '.join(allowed)}, not {shorten(text, 40)}"])
    return text


def _number(request: Request, name: str) -> float | None:
    """A decimal number from the query string (422 when it is not one), or None when absent."""
    text = _query_value(request, name)
    if text is None:
        return None
    if not _DECIMAL.fullmatch(text):
        raise Invalid("invalid query", [f"{name}: not a number: {shorten(text, 40)}"])
    return float(text)


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


__all__ = ["create_management_app"]
