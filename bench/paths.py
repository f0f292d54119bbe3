"""What the bench measures: each path from the load generator to the one echo upstream.

A :class:`PathSpec` knows whether it can run here, how to start its proxy (pinned to the proxy
CPUs, or to all CPUs for the scaling scenario) and which URL the generator opens. Scripts that
measure a variant of the gateway build one with :func:`uvicorn_path` and any app factory.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from . import nginx
from .apps import ECHO_PATH, LOG_DIR_ENV, UPSTREAM_ENV
from .credentials import PUBLIC_KEY_ENV, PUBLIC_KEY_PEM, TOKEN
from .procs import HOST, Service, free_port
from .system import pinned, raise_fd_limit


@dataclass(frozen=True)
class StartContext:
    """Where a path's proxy runs: the upstream it proxies to, a directory for its files, its CPUs."""

    upstream_port: int
    run_dir: Path
    cpus: str
    workers: int = 1


Starter = Callable[[StartContext], Service]


@dataclass(frozen=True)
class PathSpec:
    """One way from the generator to the upstream.

    Attributes:
        name: the name results use (``"gateway"``, ``"nginx"``, ...).
        start: starts the proxy and returns its running :class:`Service`; None for ``direct``.
        requires: Python modules (or ``"nginx"``) it needs; missing ones make it unavailable.
        headers: request headers the generator must send (e.g. a bearer token for policies).
        note: shown next to its results.
        scenarios: the round scenarios it runs (None: every one); cuts what no figure needs.
        idle_max: the highest idle level it is ramped to: 5,000 (the issue's level) unless it says
            otherwise (None: every level of the run, 9,000 in a full run).
        idle_rounds: at most this many idle ramps (None: the run's number).
        open_rate: idle connections it opens per second here; only for the run-time estimate.
        payload: what the generator's messages carry: ``bytes`` (binary) or ``json`` (a JSON chat
            message, as text, of the scenario's size: what message policies with a schema accept).
    """

    name: str
    start: Starter | None
    requires: tuple[str, ...] = ()
    headers: Mapping[str, str] = field(default_factory=dict)
    note: str = ""
    scenarios: tuple[str, ...] | None = None
    idle_max: int | None = 5000
    idle_rounds: int | None = None
    open_rate: float = 800.0
    payload: str = "bytes"

    def unavailable(self) -> str | None:
        """Why this path cannot run here, or None if it can."""
        for need in self.requires:
            if need == "nginx":
                if nginx.nginx_binary() is None:
                    return "nginx is not installed (scripts/install-nginx.sh)"
            elif importlib.util.find_spec(need) is None:
                return f"Python package {need!r} is not installed (pip install -e '.[bench]')"
        return None

    @property
    def is_proxy(self) -> bool:
        return self.start is not None


def url(port: int) -> str:
    return f"ws://{HOST}:{port}{ECHO_PATH}"


def uvicorn_path(
    name: str,
    factory: str,
    *,
    requires: tuple[str, ...] = (),
    note: str = "",
    env: Mapping[str, str] | None = None,
    ws: str = "websockets-sansio",
) -> PathSpec:
    """A path served by uvicorn (uvloop, httptools, websockets-sansio) from an app factory.

    Args:
        factory: ``module:function`` returning the ASGI app; it finds the upstream's base URL in
            ``BENCH_UPSTREAM`` and must serve :data:`~bench.apps.ECHO_PATH`.
        env: extra environment for the server (e.g. ``PYTHONPATH`` of another source tree).
        ws: uvicorn's ``--ws`` (an implementation name or a protocol class's import string).
    """

    extra_env = dict(env or {})

    def start(ctx: StartContext) -> Service:
        port = free_port()
        argv = [
            sys.executable, "-m", "uvicorn", "--factory", factory, "--host", HOST, "--port", str(port),
            "--loop", "uvloop", "--http", "httptools", "--ws", ws, "--backlog", "4096",
            "--log-level", "warning", "--no-access-log", "--timeout-graceful-shutdown", "2",
        ]  # fmt: skip
        if ctx.workers > 1:
            argv += ["--workers", str(ctx.workers)]
        env = {UPSTREAM_ENV: f"ws://{HOST}:{ctx.upstream_port}", LOG_DIR_ENV: str(ctx.run_dir), **(extra_env or {})}
        log = ctx.run_dir / f"{name.replace('+', '_')}.log"
        return Service(name, pinned(ctx.cpus, argv), port=port, log=log, env=env).start()

    return PathSpec(name, start, requires=("uvicorn", "uvloop", "httptools", *requires), note=note)


MESSAGE_POLICIES = {
    "inbound": [
        {"limit-message-size": {"max": 65536}},
        {"rate-limit-messages": {"messages": 10_000_000, "bytes": 10_000_000_000, "window": 1}},
        {"validate-message": {"schema": {
            "type": "object",
            "required": ["type", "room", "text"],
            "properties": {
                "type": {"enum": ["chat", "typing"]},
                "room": {"type": "string", "maxLength": 64},
                "text": {"type": "string", "maxLength": 65536},
                "seq": {"type": "integer", "minimum": 0},
            },
            "additionalProperties": False,
        }}},
    ],
    "outbound": [{"limit-message-size": {"max": 65536}}],
}  # fmt: skip
"""``gateway-run+messages``: bench/message_policies.py's set (size, in-memory rate limit never reached,
JSON Schema), its limits raised so that the 16 KiB scenario's message passes too."""


def _start_run(ctx: StartContext, name: str = "gateway-run", message_policies: object = None) -> Service:
    """``asgi-ws-gateway run`` with its defaults: the gateway's protocols, log level info, access log on."""
    port = free_port()
    config = ctx.run_dir / f"{name.replace('+', '_')}.json"
    api: dict[str, object] = {"name": "echo", "path": ECHO_PATH,
                              "upstreams": [f"ws://{HOST}:{ctx.upstream_port}{ECHO_PATH}"]}  # fmt: skip
    if message_policies is not None:
        api["message_policies"] = message_policies
    config.write_text(json.dumps({"apis": [api]}))
    argv = [sys.executable, "-m", "asgi_ws_gateway", "run", str(config), "--host", HOST, "--port", str(port)]
    if ctx.workers > 1:
        argv += ["--workers", str(ctx.workers)]
    # Every log line (uvicorn's and the access log) goes to the service's log file, as to a collector.
    log = ctx.run_dir / f"{name.replace('+', '_')}.log"
    return Service(name, pinned(ctx.cpus, argv), port=port, log=log).start()


def _start_run_messages(ctx: StartContext) -> Service:
    return _start_run(ctx, "gateway-run+messages", MESSAGE_POLICIES)


def _start_nginx(ctx: StartContext) -> Service:
    port = free_port()
    prefix = ctx.run_dir / "nginx"
    config = nginx.write_config(prefix, port=port, upstream_port=ctx.upstream_port, nofile=raise_fd_limit())
    return Service(
        "nginx", pinned(ctx.cpus, nginx.nginx_argv(prefix, config)), port=port, log=prefix / "out.log"
    ).start()


DIRECT = PathSpec("direct", None, note="no proxy: the latency ceiling", scenarios=("latency",))
NGINX = PathSpec("nginx", _start_nginx, requires=("nginx",), note="1 worker, 64 KiB proxy buffers", idle_max=None)
ASGIPROXY = uvicorn_path("asgiproxy", "bench.apps:asgiproxy_app", requires=("asgiproxy", "aiohttp"))
# fastapi-proxy-lib opens about 50 idle connections a second here: a single ramp.
FASTAPI_PROXY_LIB = dataclasses.replace(
    uvicorn_path("fastapi-proxy-lib", "bench.apps:fastapi_proxy_lib_app", requires=("fastapi_proxy_lib", "httpx_ws")),
    idle_rounds=1,
    open_rate=55.0,
)
MINIMAL_RELAY = uvicorn_path(
    "minimal-relay", "bench.apps:minimal_relay_factory", note="uvicorn + websockets client, two pumps: the yardstick"
)
GATEWAY = uvicorn_path("gateway", "bench.apps:gateway_app")
GATEWAY_PICOWS = uvicorn_path(
    "gateway-picows",
    "bench.apps:gateway_picows_app",
    requires=("picows",),
    note="evaluation only: the gateway with a picows upstream leg (no deflate; bench/picows_upstream.py)",
)
GATEWAY_PASSTHROUGH = uvicorn_path(
    "gateway-passthrough",
    "bench.apps:gateway_passthrough_app",
    ws="asgi_ws_gateway.server:GatewayWebSocketProtocol",
    note="the gateway's protocol, settings at their defaults: after the handshake the TCP streams are spliced",
)
GATEWAY_RUN = PathSpec(
    "gateway-run",
    _start_run,
    requires=("uvicorn", "uvloop", "httptools"),
    note="asgi-ws-gateway run, defaults: spliced (passthrough: auto), log level info, access log on (to a file)",
    idle_max=None,  # the default path (and nginx beside it) is ramped to 9,000 too
)
GATEWAY_RUN_MESSAGES = PathSpec(
    "gateway-run+messages",
    _start_run_messages,
    requires=("uvicorn", "uvloop", "httptools"),
    note="asgi-ws-gateway run, defaults, + limit-message-size, rate-limit-messages, validate-message (JSON "
    "Schema): the frame relay; the generator sends JSON text",
    payload="json",
)
GATEWAY_POLICIES = dataclasses.replace(
    uvicorn_path(
        "gateway+policies",
        "bench.apps:gateway_policies_app",
        env={PUBLIC_KEY_ENV: PUBLIC_KEY_PEM},
        note="validate-jwt (ES256, key in process) + rate-limit-by-key + set-header, telemetry on (exported nowhere)",
    ),
    headers={"Authorization": f"Bearer {TOKEN}"},
)

PATHS: tuple[PathSpec, ...] = (
    DIRECT, NGINX, ASGIPROXY, FASTAPI_PROXY_LIB, MINIMAL_RELAY, GATEWAY, GATEWAY_POLICIES, GATEWAY_PICOWS,
    GATEWAY_PASSTHROUGH, GATEWAY_RUN, GATEWAY_RUN_MESSAGES,
)  # fmt: skip
PYTHON_PEERS: tuple[str, ...] = ("asgiproxy", "fastapi-proxy-lib")
OPT_IN: frozenset[str] = frozenset({"gateway-picows", "gateway+policies"})
"""Paths measured only when named with ``--paths``: no target of the run reads them (the picows
leg is an evaluation; the relay with handshake policies gave way to ``gateway-run+policies``)."""


def by_name(names: list[str] | None) -> list[PathSpec]:
    """The named paths, or every path but the :data:`OPT_IN` ones."""
    if not names:
        return [p for p in PATHS if p.name not in OPT_IN]
    known = {p.name: p for p in PATHS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown path(s): {', '.join(unknown)}; known: {', '.join(known)}")
    return [known[n] for n in names]


__all__ = [
    "OPT_IN",
    "PATHS",
    "PYTHON_PEERS",
    "PathSpec",
    "StartContext",
    "by_name",
    "url",
    "uvicorn_path",
]
