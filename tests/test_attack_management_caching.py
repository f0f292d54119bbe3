"""The management API's answers are never stored by a cache: they are the gateway's live state, for the admin.

An attack pass read each answer's headers (real uvicorn, the API mounted at ``/_gateway``): only
creating a subscription and regenerating its key said ``Cache-Control: no-store``. ``connections``
(client addresses, token subjects), ``refusals``, ``export`` (the whole configuration),
``subscriptions`` and every refusal said nothing, so a browser's disk cache kept what the console
had fetched (its heuristic freshness too, where an answer allowed it), and a cache in front of a
gateway whose ``auth`` trusts the network (no token asked) served one admin's view to whoever asked
next. Every management answer now says ``no-store`` unless it sets its own (the console's pages:
``no-cache``, they hold no data).
"""

from __future__ import annotations

import httpx
from starlette.applications import Starlette

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.management import GatewayManagement
from support.servers import UvicornFactory, UvicornServer
from support.upstream import UpstreamServer

ADMIN = "management-caching-admin-token"
ANSWERS = ["apis", "apis/echo", "connections", "refusals", "export", "products", "subscriptions", "metrics/series"]


def _server(uvicorn_server: UvicornFactory, upstream: UpstreamServer) -> UvicornServer:
    app = Starlette()
    app.add_middleware(
        WebSocketGateway, config={"apis": [{"name": "echo", "path": "/ws/echo", "upstreams": [upstream.url("/echo")]}]}
    )
    app.add_middleware(GatewayManagement, path="/_gateway", admin_token=ADMIN)
    return uvicorn_server(app, lifespan="on")


def test_every_management_answer_says_no_store(uvicorn_server: UvicornFactory, upstream: UpstreamServer) -> None:
    """The data answers, the refusals (401, 404) included; a header the answer sets itself is kept."""
    server = _server(uvicorn_server, upstream)
    admin = {"Authorization": f"Bearer {ADMIN}"}
    with httpx.Client(base_url=server.url("/_gateway/", scheme="http"), trust_env=False) as http:
        answers = {path: http.get(path, headers=admin) for path in ANSWERS}
        answers["refused"] = http.get("connections")
        answers["missing"] = http.get("apis/nothing-here", headers=admin)
        console = http.get("console")
    assert answers["apis"].status_code == 200 and answers["refused"].status_code == 401
    assert answers["missing"].status_code == 404
    for name, answer in answers.items():
        assert answer.headers.get_list("cache-control") == ["no-store"], (name, answer.status_code, answer.headers)
    assert console.headers.get_list("cache-control") == ["no-cache"]
