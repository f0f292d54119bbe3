"""What message policy types share: their registry, and the user-function policy.

A message policy type is registered like a handshake one: a class with a ``Settings`` pydantic model
and a constructor ``(settings, env)``, whose instances have a ``name`` and an ``attach`` method
(see :class:`~asgi_ws_gateway.messages.context.MessagePolicy`)::

    from asgi_ws_gateway.errors import DropMessage
    from asgi_ws_gateway.policies import PolicyEnv, PolicySettings
    from asgi_ws_gateway.policies.message_base import register_message_policy

    @register_message_policy("no-shouting")
    class NoShouting:
        class Settings(PolicySettings):
            max_capitals: int = 10

        def __init__(self, settings: Settings, env: PolicyEnv) -> None:
            self.limit = settings.max_capitals

        def attach(self, connection, direction):
            def check(message):
                if message.is_text and sum(c.isupper() for c in message.data) > self.limit:
                    raise DropMessage("shouting", "too many capitals")
            return check
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from .._types import Data
from ..messages.context import ConnectionContext, Direction, MessageHandler, WsMessage
from ..redact.documents import install_policy_types
from .base import C, PolicyType, register_in

MESSAGE_REGISTRY: dict[str, PolicyType] = {}
install_policy_types(MESSAGE_REGISTRY)

MessageFunction = Callable[[WsMessage], Awaitable[Any]]
"""``async def f(message) -> None | str | bytes | object``: a transform (see :class:`FunctionMessagePolicy`)."""


def register_message_policy(name: str) -> Callable[[C], C]:
    """Class decorator: make a message policy type available in configuration as ``{name: {...}}``."""
    return register_in(MESSAGE_REGISTRY, name)


def check_async(function: object) -> None:
    """Raise TypeError unless ``function`` is an async function (or an object with an async ``__call__``)."""
    if not inspect.iscoroutinefunction(function) and not inspect.iscoroutinefunction(
        getattr(function, "__call__", None)  # noqa: B004 - an async callable object
    ):
        raise TypeError(f"{function!r} is not an async function")


async def apply_function(function: MessageFunction, message: WsMessage) -> None:
    """Run a user transform: ``None`` keeps the message, ``str``/``bytes`` replace it, anything else is JSON."""
    result = await function(message)
    if result is None:
        return
    if isinstance(result, Data):
        message.replace(result)
    else:
        message.set_json(result)


class FunctionMessagePolicy:
    """A plain ``async def f(message)`` in a message policy list: a transform, named after the function.

    The function may change the message (``message.replace(...)``, ``message.set_json(...)``) or
    return the new one (``str``/``bytes``, or an object sent as JSON); ``None`` keeps it. It may raise
    :class:`~asgi_ws_gateway.errors.DropMessage` or :class:`~asgi_ws_gateway.errors.CloseConnection`.
    """

    def __init__(self, function: MessageFunction, name: str | None = None) -> None:
        check_async(function)
        self.function = function
        self.name: str = name or str(getattr(function, "__name__", type(function).__name__))

    def attach(self, connection: ConnectionContext, direction: Direction) -> MessageHandler:
        function = self.function

        def handle(message: WsMessage) -> Awaitable[None]:
            return apply_function(function, message)

        return handle


__all__ = [
    "MESSAGE_REGISTRY",
    "FunctionMessagePolicy",
    "MessageFunction",
    "apply_function",
    "check_async",
    "register_message_policy",
]
