"""Managing a running gateway: REST API, persistence, cross-worker commands, console and SDK.

Serve it in front of a gateway with :class:`GatewayManagement`; talk to it with
:class:`ManagementClient` (or ``asgi-ws-gateway apis|subscriptions|connections ...``).
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .admin_auth import Auth, token_auth
    from .app import create_management_app
    from .bus import LocalBus, RedisBus
    from .client import ManagementAPIError, ManagementClient, UnexpectedAnswerError
    from .errors import Conflict, Invalid, ManagementError, NotFound, PreconditionFailed
    from .mount import GatewayManagement
    from .overlay import Overlay
    from .redis_store import RedisStore
    from .service import Manager
    from .store import FileStore, MemoryStore, StateStore

if not TYPE_CHECKING:  # type checkers read the imports above (an unknown name stays an error)
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            **dict.fromkeys(["Auth", "token_auth"], ".admin_auth"),
            "create_management_app": ".app",
            **dict.fromkeys(["LocalBus", "RedisBus"], ".bus"),
            **dict.fromkeys(["ManagementAPIError", "ManagementClient", "UnexpectedAnswerError"], ".client"),
            **dict.fromkeys(["Conflict", "Invalid", "ManagementError", "NotFound", "PreconditionFailed"], ".errors"),
            "GatewayManagement": ".mount",
            "Overlay": ".overlay",
            "RedisStore": ".redis_store",
            "Manager": ".service",
            **dict.fromkeys(["FileStore", "MemoryStore", "StateStore"], ".store"),
        },
    )

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
    "UnexpectedAnswerError",
    "create_management_app",
    "token_auth",
]
