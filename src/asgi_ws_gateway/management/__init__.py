"""Managing a running gateway: REST API, persistence, cross-worker commands, console and SDK.

Serve it in front of a gateway with :class:`GatewayManagement`; talk to it with
:class:`ManagementClient` (or ``asgi-ws-gateway apis|subscriptions|connections ...``).
Names are imported on first use, so the command line starts without loading the server side.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import Auth, create_management_app, token_auth
    from .bus import LocalBus, RedisBus
    from .client import ManagementAPIError, ManagementClient
    from .errors import Conflict, Invalid, ManagementError, NotFound, PreconditionFailed
    from .mount import GatewayManagement
    from .overlay import Overlay
    from .redis_store import RedisStore
    from .service import Manager
    from .store import FileStore, MemoryStore, StateStore

_HOMES = {
    "app": ["Auth", "create_management_app", "token_auth"],
    "bus": ["LocalBus", "RedisBus"],
    "client": ["ManagementAPIError", "ManagementClient"],
    "errors": ["Conflict", "Invalid", "ManagementError", "NotFound", "PreconditionFailed"],
    "mount": ["GatewayManagement"],
    "overlay": ["Overlay"],
    "redis_store": ["RedisStore"],
    "service": ["Manager"],
    "store": ["FileStore", "MemoryStore", "StateStore"],
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)


__all__ = [
    "Auth",
    "Conflict",
    "FileStore",
    "GatewayManagement",
    "Invalid",
    "LocalBus",
    "ManagementAPIError",
    "ManagementClient",
    "ManagementError",
    "Manager",
    "MemoryStore",
    "NotFound",
    "Overlay",
    "PreconditionFailed",
    "RedisBus",
    "RedisStore",
    "StateStore",
    "create_management_app",
    "token_auth",
]
