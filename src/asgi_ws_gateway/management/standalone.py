"""The standalone gateway with its management API: what ``asgi-ws-gateway run --management`` serves.

uvicorn starts each worker from environment variables (the command line sets them), so every
worker builds the same app: the gateway for the config file, wrapped by :class:`GatewayManagement`
at a path or on its own port, with a state file (one host) or Redis (the shared mode).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from ..loading import MAX_PATH as MAX_STATE_PATH  # $ASGI_WS_GATEWAY_STATE, as run --state
from ..standalone import CONFIG_ENV
from ..standalone import create_app as create_gateway
from ..wire_numbers import parse_port
from .cli import REDIS_ENV, TOKEN_ENV
from .mount import GatewayManagement
from .store import FileStore

PATH_ENV = "ASGI_WS_GATEWAY_MANAGEMENT_PATH"
PORT_ENV = "ASGI_WS_GATEWAY_MANAGEMENT_PORT"
STATE_ENV = "ASGI_WS_GATEWAY_STATE"
PREFIX_ENV = "ASGI_WS_GATEWAY_REDIS_PREFIX"


def _port(raw: str | None) -> int | None:
    """``ASGI_WS_GATEWAY_MANAGEMENT_PORT`` (``run --management-port`` sets it): a port, or a clear error."""
    if not raw:
        return None
    port = parse_port(raw.strip())
    if port is None or port == 0:
        raise RuntimeError(f"{PORT_ENV}: expected a port from 1 to 65535, got {raw!r}")
    return port


def default_state_file(config: str | os.PathLike[str]) -> Path:
    """``gateway.yaml`` keeps its changes in ``gateway.state.json`` beside it."""
    path = Path(config)
    return path.with_name(path.stem + ".state.json")


def create_app() -> GatewayManagement:
    """The gateway for ``$ASGI_WS_GATEWAY_CONFIG`` with its management API (settings from the environment)."""
    token = os.environ.get(TOKEN_ENV)
    if not token:
        raise RuntimeError(f"the management API needs an admin token: set {TOKEN_ENV}")
    redis_url = os.environ.get(REDIS_ENV) or None
    port = _port(os.environ.get(PORT_ENV))
    store = None
    if redis_url is None:
        state = os.environ.get(STATE_ENV)
        if state is not None and len(state) > MAX_STATE_PATH:  # as run's --state; never quoted
            raise RuntimeError(f"{STATE_ENV}: {len(state):,} characters, at most {MAX_STATE_PATH} (PATH_MAX)")
        store = FileStore(state or default_state_file(os.environ[CONFIG_ENV]))
    return GatewayManagement(
        create_gateway(),
        admin_token=token,
        path=os.environ.get(PATH_ENV) or "/_gateway",
        port=port,
        store=store,
        redis_url=redis_url,
        redis_prefix=os.environ.get(PREFIX_ENV) or "asgi-ws-gw",
    )


def bind(host: str, port: int) -> socket.socket:
    """A listening socket for the management port, inheritable by uvicorn's worker processes."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


__all__ = ["PATH_ENV", "PORT_ENV", "PREFIX_ENV", "REDIS_ENV", "STATE_ENV", "bind", "create_app", "default_state_file"]
