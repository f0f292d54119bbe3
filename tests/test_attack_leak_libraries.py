"""The lines of the libraries the gateway drives, under plain ``uvicorn app:app``.

``asgi-ws-gateway run`` puts a redacting filter on every handler; an application served by plain
uvicorn has its own logging, which the gateway's filters on uvicorn's and websockets' loggers did not
reach: httpx (``httpx2``) logged the JWKS URL with its password and ``?api_key=`` at INFO, and an OTLP
exporter's "Transient error" lines (a child logger of ``opentelemetry``, made when the exporter's
module is imported) went to Python's last-resort handler with the collector's ``?api_key=``.
Each server runs as a subprocess; all it writes is searched.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import yaml

from support.clients import connect
from support.jwts import JwksServer, signing_key, token
from support.log_configs import DEBUG_TO_STDERR
from support.processes import ServerProcess, ready_server
from support.servers import free_port
from support.upstream import UpstreamServer

SECRET = "SEKRIT-LIB-61"
LOGGING_APP = """
import logging
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
from starlette.applications import Starlette
from asgi_ws_gateway import WebSocketGateway

app = Starlette()
app.add_middleware(WebSocketGateway, config="gateway.yaml")
"""
EXPORTING_APP = f"""
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from starlette.applications import Starlette
from asgi_ws_gateway import WebSocketGateway

provider = TracerProvider()
exporter = OTLPSpanExporter(endpoint="http://127.0.0.1:{{port}}/v1/traces?api_key={SECRET}", timeout=10)
provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=50))
app = Starlette()
app.add_middleware(WebSocketGateway, config="gateway.yaml", tracer_provider=provider)
"""


def _uvicorn(tmp: Path, app: str, config: dict[str, Any]) -> ServerProcess:
    (tmp / "app.py").write_text(app)
    (tmp / "gateway.yaml").write_text(yaml.safe_dump(config))
    return ready_server(lambda port: ["-m", "uvicorn", "app:app", "--port", str(port)], cwd=tmp)


async def _attempt(url: str, **kw: Any) -> None:
    with contextlib.suppress(Exception):
        async with await connect(url, **kw) as ws:
            await ws.send("hi")
            await ws.recv()


async def test_httpx_lines_show_no_jwks_url_credential(tmp_path: Path, upstream_server: UpstreamServer) -> None:
    """``HTTP Request: GET http://u:REDACTED@.../jwks?api_key=REDACTED``: the JWKS URL's password and
    query credential, in the line httpx writes for each fetch at INFO, redacted."""
    key = signing_key("ES256")
    with JwksServer(key) as jwks:
        port = jwks.url.split(":")[2].split("/")[0]
        urls = {"userinfo": f"http://u:{SECRET}@127.0.0.1:{port}/jwks", "query": f"{jwks.url}?api_key={SECRET}"}
        apis = [
            {"name": name, "path": f"/ws/{name}", "upstreams": [upstream_server.url("/echo")],
             "policies": [{"validate-jwt": {"algorithms": ["ES256"], "issuer": "https://issuer.test",
                                            "audience": "chat", "jwks_url": url}}]}
            for name, url in urls.items()
        ]  # fmt: skip
        with _uvicorn(tmp_path, LOGGING_APP, {"apis": apis}) as server:
            headers = {"Authorization": f"Bearer {token(key)}"}
            for name in urls:
                await _attempt(f"ws://127.0.0.1:{server.port}/ws/{name}", additional_headers=headers)
            server.stop()
            output = server.output()
    assert output.count("HTTP Request: GET") >= 2, f"no httpx line: the test would prove nothing\n{output}"
    assert SECRET not in output, output


async def test_httpx_lines_under_run_with_a_users_log_config_show_no_jwks_url_credential(
    tmp_path: Path, upstream_server: UpstreamServer
) -> None:
    """``run --log-config`` (the operator's handlers, root at DEBUG, no filter of the gateway's on them):
    httpx's and httpcore's lines about the JWKS fetch are redacted as they are made."""
    key = signing_key("ES256")
    (tmp_path / "logging.yaml").write_text(yaml.safe_dump(DEBUG_TO_STDERR))
    with JwksServer(key) as jwks:
        port = jwks.url.split(":")[2].split("/")[0]
        url = f"http://u:{SECRET}@127.0.0.1:{port}/jwks?api_key={SECRET}"
        policy = {"validate-jwt": {"algorithms": ["ES256"], "issuer": "https://issuer.test", "audience": "chat",
                                   "jwks_url": url}}  # fmt: skip
        api = {"name": "jq", "path": "/ws/jq", "upstreams": [upstream_server.url("/echo")], "policies": [policy]}
        (tmp_path / "gateway.yaml").write_text(yaml.safe_dump({"apis": [api]}))
        command = [
            "-m",
            "asgi_ws_gateway",
            "run",
            "gateway.yaml",
            "--log-config",
            "logging.yaml",
            "--log-level",
            "debug",
        ]
        with ready_server(lambda p: [*command, "--port", str(p)], cwd=tmp_path) as server:
            await _attempt(
                f"ws://127.0.0.1:{server.port}/ws/jq", additional_headers={"Authorization": f"Bearer {token(key)}"}
            )
            server.stop()
            output = server.output()
    assert "httpx2 INFO HTTP Request: GET" in output, f"no httpx line: the test would prove nothing\n{output}"
    assert SECRET not in output, output


async def test_exporter_lines_of_a_users_provider_show_no_endpoint_credential(
    tmp_path: Path, upstream_server: UpstreamServer
) -> None:
    """An application's own OTLP exporter (an endpoint with ``?api_key=``, a dead collector): its
    warnings reach stderr through Python's last-resort handler, redacted as they are made."""
    app = EXPORTING_APP.replace("{port}", str(free_port()))
    config = {"apis": [{"name": "chat", "path": "/ws/chat", "upstreams": [upstream_server.url("/echo")]}]}
    with _uvicorn(tmp_path, app, config) as server:
        await _attempt(f"ws://127.0.0.1:{server.port}/ws/chat")
        deadline = time.monotonic() + 20
        while "Transient error" not in server.output():
            assert time.monotonic() < deadline, server.output()
            await asyncio.sleep(0.05)
        server.stop()
        output = server.output()
    assert SECRET not in output, output
