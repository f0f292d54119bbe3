"""What the bench measures: each path from the load generator to the one echo upstream.

A :class:`PathSpec` knows whether it can run here, how to start its proxy (pinned to the proxy
CPUs, or to all CPUs for the scaling scenario) and which URL the generator opens. Scripts that
measure a variant of the gateway build one with :func:`uvicorn_path` and any app factory.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import socket
import sys
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from . import nginx
from .apps import ECHO_PATH, LOG_DIR_ENV, UPSTREAM_ENV, policy_set
from .credentials import PUBLIC_KEY_ENV, PUBLIC_KEY_PEM, TOKEN
from .message_policies import message_policies
from .procs import HOST, Service, free_port
from .system import LOAD_CPUS, pinned, raise_fd_limit

REDIS_URL = "redis://127.0.0.1:6379/0"


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
        bearer: in the handshake scenario, the generator mints the bench's tokens itself
            (:mod:`bench.credentials`): ``"pool"``, one per concurrent opener, reused on every
            reconnect; ``"fresh"``, a new one per handshake (validate-jwt's cache always misses).
        note: shown next to its results.
        scenarios: the round scenarios it runs (None: every one); cuts what no figure needs.
        idle_max: the highest idle level it is ramped to: 5,000 (the issue's level) unless it says
            otherwise (None: every level of the run, 9,000 in a full run).
        idle_rounds: at most this many idle ramps (None: the run's number).
        open_rate: idle connections it opens per second here; only for the run-time estimate.
        probe: checks a service the path needs (e.g. Redis): why it cannot run, or None.
        payload: what the generator's messages carry: ``bytes`` (binary) or ``json`` (a JSON chat
            message, as text, of the scenario's size: what message policies with a schema accept).
    """

    name: str
    start: Starter | None
    requires: tuple[str, ...] = ()
    headers: Mapping[str, str] = field(default_factory=dict)
    bearer: str | None = None
    note: str = ""
    scenarios: tuple[str, ...] | None = None
    idle_max: int | None = 5000
    idle_rounds: int | None = None
    open_rate: float = 800.0
    probe: Callable[[], str | None] | None = None
    payload: str = "bytes"

    def unavailable(self) -> str | None:
        """Why this path cannot run here, or None if it can."""
        for need in self.requires:
            if need == "nginx":
                if nginx.nginx_binary() is None:
                    return "nginx is not installed (scripts/install-nginx.sh)"
            elif importlib.util.find_spec(need) is None:
                return f"Python package {need!r} is not installed (pip install -e '.[bench]')"
        return self.probe() if self.probe is not None else None

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


class _WithSink(Service):
    """A gateway process and the OTLP receiver it exports to: started before it, stopped after it.

    Only the gateway is measured (its CPU and memory); the receiver runs on the load CPUs.
    """

    def __init__(self, *args: object, sink: Service, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.sink = sink

    def start(self, timeout: float = 20.0) -> Service:
        self.sink.start(timeout)
        try:
            return super().start(timeout)
        except BaseException:
            self.sink.stop()
            raise

    def stop(self, timeout: float = 10.0) -> None:
        try:
            super().stop(timeout)
        finally:
            self.sink.stop(timeout)


MESSAGE_POLICIES = message_policies(limit=65536, text_limit=65536)
"""``gateway-run+messages``: bench/message_policies.py's set (size, in-memory rate limit never reached,
JSON Schema), its limits raised so that the 16 KiB scenario's message passes too."""


def run_path(
    name: str,
    *,
    policies: bool = False,
    telemetry: bool = False,
    message_policies: object = None,
    env: Mapping[str, str] | None = None,
    note: str = "",
) -> PathSpec:
    """``asgi-ws-gateway run`` with its defaults: the gateway's protocols, log level info, access log on.

    Args:
        policies: add :func:`~bench.apps.policy_set` with rate-limit-by-key on Redis (127.0.0.1:6379,
            a key prefix per start) and telemetry exporting over OTLP/gRPC to :mod:`bench.otlp_sink`;
            the generator sends the bench's tokens, one per opener (``bearer="pool"``).
        telemetry: telemetry exported as with ``policies`` (every handshake traced, metrics every
            10 s), without the policies.
        message_policies: the API's ``message_policies`` (the generator then sends JSON text).
        env: extra environment for the gateway (e.g. ``PYTHONPATH`` of another source tree).
    """
    extra_env = dict(env or {})

    def start(ctx: StartContext) -> Service:
        port = free_port()
        stem = name.replace("+", "_")
        upstream = f"ws://{HOST}:{ctx.upstream_port}{ECHO_PATH}"
        api: dict[str, object] = {"name": "echo", "path": ECHO_PATH, "upstreams": [upstream]}
        if message_policies is not None:
            api["message_policies"] = message_policies
        document: dict[str, object] = {"apis": [api]}
        gateway_env = dict(extra_env)
        sink: Service | None = None
        if policies:
            api.update(policy_set(PUBLIC_KEY_PEM))
            document["store"] = {"type": "redis", "url": REDIS_URL, "prefix": f"bench-{uuid.uuid4().hex[:12]}"}
        if policies or telemetry:
            sink_port = free_port()
            sink_argv = [sys.executable, "-m", "bench.otlp_sink", "--port", str(sink_port)]
            sink = Service(f"{name} OTLP sink", pinned(LOAD_CPUS, sink_argv), port=sink_port,
                           log=ctx.run_dir / f"{stem}-otlp.log")  # fmt: skip
            gateway_env |= {
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{HOST}:{sink_port}",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_METRIC_EXPORT_INTERVAL": "10000",  # as gateway+policies reads its metrics
            }
        config = ctx.run_dir / f"{stem}.json"
        config.write_text(json.dumps(document))
        argv = [sys.executable, "-m", "asgi_ws_gateway", "run", str(config), "--host", HOST, "--port", str(port)]
        if ctx.workers > 1:
            argv += ["--workers", str(ctx.workers)]
        # Every log line (uvicorn's and the access log) goes to the service's log file, as to a collector.
        log = ctx.run_dir / f"{stem}.log"
        if sink is None:
            return Service(name, pinned(ctx.cpus, argv), port=port, log=log, env=gateway_env).start()
        return _WithSink(name, pinned(ctx.cpus, argv), port=port, log=log, env=gateway_env, sink=sink).start()

    requires = ("uvicorn", "uvloop", "httptools", *(("grpc", "redis") if policies else ("grpc",) if telemetry else ()))
    return PathSpec(
        name,
        start,
        requires=requires,
        headers={"Authorization": f"Bearer {TOKEN}"} if policies else {},
        bearer="pool" if policies else None,
        note=note,
        probe=_redis_answers if policies else None,
        payload="json" if message_policies is not None else "bytes",
    )


def _redis_answers() -> str | None:
    """None if Redis answers PING on 127.0.0.1:6379; otherwise why the path cannot run."""
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            answer = sock.recv(64)
    except OSError as exc:
        return f"needs Redis at {REDIS_URL} (rate-limit-by-key's store), which does not answer: {exc}"
    if not answer.startswith(b"+PONG"):
        return f"needs Redis at {REDIS_URL}, which answered PING with {answer[:40]!r}"
    return None


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
GATEWAY_RUN = dataclasses.replace(
    run_path(
        "gateway-run",
        note="asgi-ws-gateway run, defaults: spliced (passthrough: auto), log level info, access log on (to a file)",
    ),
    idle_max=None,  # the default path (and nginx beside it) is ramped to 9,000 too
)
# Its messages are spliced as gateway-run's (handshake policies cost nothing per message): the
# handshake is the figure its target reads. Each of the 16 openers reconnects with its own token
# (validate-jwt's token cache hits after each one's first handshake); -fresh is the worst case.
GATEWAY_RUN_POLICIES = dataclasses.replace(
    run_path(
        "gateway-run+policies",
        policies=True,
        note="gateway-run + validate-jwt (ES256, key in process) + rate-limit-by-key on Redis + set-header, "
        "telemetry on (OTLP/gRPC to a discarding receiver); a token per opener, reused on reconnect",
    ),
    scenarios=("handshake",),
)
GATEWAY_RUN_POLICIES_FRESH = dataclasses.replace(
    GATEWAY_RUN_POLICIES,
    name="gateway-run+policies-fresh",
    note="gateway-run+policies with a new token per handshake: validate-jwt's token cache always misses",
    bearer="fresh",
)
# Issue 14's cost on the default path: the handshake with every one traced and metrics on, beside gateway-run.
GATEWAY_RUN_TELEMETRY = dataclasses.replace(
    run_path(
        "gateway-run+telemetry",
        telemetry=True,
        note="gateway-run with telemetry on: every handshake traced (three spans), metrics every 10 s, exported "
        "over OTLP/gRPC to a discarding receiver",
    ),
    scenarios=("handshake",),
)
GATEWAY_RUN_MESSAGES = run_path(
    "gateway-run+messages",
    message_policies=MESSAGE_POLICIES,
    note="asgi-ws-gateway run, defaults, + limit-message-size, rate-limit-messages, validate-message (JSON "
    "Schema): the frame relay; the generator sends JSON text",
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
    GATEWAY_PASSTHROUGH, GATEWAY_RUN, GATEWAY_RUN_MESSAGES, GATEWAY_RUN_POLICIES, GATEWAY_RUN_POLICIES_FRESH,
    GATEWAY_RUN_TELEMETRY,
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
    "run_path",
    "url",
    "uvicorn_path",
]
