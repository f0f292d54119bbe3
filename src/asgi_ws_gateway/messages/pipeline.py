"""Message policies at run time: the message, the connection's context, the per-direction pipeline.

A :class:`MessagePolicy` is built once from the configuration. For each connection whose API has
message policies, every policy is *attached* once per direction it is declared in and returns a
handler (or None when it has nothing to do for this connection); the handlers of one direction form
a :class:`MessagePipeline`. The relay awaits ``MessagePipeline.process`` for each message before it sends the
message on and before it receives the next one, so a policy that waits (a rate limit that delays)
slows the sender down exactly as a slow receiver would: backpressure, nothing queued.

A handler returns (the message goes on, possibly changed through :class:`WsMessage`), raises
:class:`~asgi_ws_gateway.errors.DropMessage` (it goes no further; its sender may get an error
reply) or :class:`~asgi_ws_gateway.errors.CloseConnection`. A handler may be a plain function (no
coroutine is made for a check that never waits) or return an awaitable.

"""

from __future__ import annotations

import logging

from .._types import Data
from ..errors import CloseConnection, DropMessage
from .context import ConnectionContext, Direction, ErrorReply, MessageHandler, MessagePolicy, WsMessage

logger = logging.getLogger(__name__)


class MessagePipeline:
    """The handlers one direction of one connection runs, in order."""

    __slots__ = ("connection", "direction", "handlers", "reply")

    def __init__(
        self,
        handlers: list[tuple[str, MessageHandler]],
        direction: Direction,
        connection: ConnectionContext,
        reply: ErrorReply,
    ) -> None:
        self.handlers = handlers
        self.direction = direction
        self.connection = connection
        self.reply = reply

    async def process(self, data: Data, size: int) -> Data | None:
        """The message to send on, or None when a policy dropped it (after answering its sender).

        Raises:
            CloseConnection: a policy closes the connection (counted; the caller closes).
        """
        message = WsMessage(data, size, self.direction, self.connection)
        for name, handler in self.handlers:
            try:
                pending = handler(message)
                if pending is not None:
                    await pending
            except DropMessage as drop:
                self.connection.count(name, drop.action, self.direction, drop.reason)
                if drop.reply:
                    await self._answer(drop, name)
                return None
            except CloseConnection as close:
                self.connection.count(name, "close", self.direction, close.reason)
                logger.info("API %s: message policy %s closes the connection: %s", self.connection.api, name,
                            close.reason)  # fmt: skip
                raise
            except Exception:
                logger.exception("API %s: message policy %s failed", self.connection.api, name)
                self.connection.count(name, "close", self.direction, "policy_error")
                raise CloseConnection(1011, "policy_error", "a message policy failed") from None
        return message.data

    async def _answer(self, drop: DropMessage, policy: str) -> None:
        text = self.reply.render(self.connection, drop, policy, self.direction)
        if self.direction == "inbound":
            await self.connection.send_to_client(text)
        else:
            await self.connection.send_to_upstream(text)


class MessagePolicySet:
    """The message policies of one API (for one product), and how errors are answered."""

    def __init__(
        self, inbound: list[MessagePolicy], outbound: list[MessagePolicy], reply: ErrorReply | None = None
    ) -> None:
        self.inbound = inbound
        self.outbound = outbound
        self.reply = reply or ErrorReply()

    def __bool__(self) -> bool:
        return bool(self.inbound or self.outbound)

    def attach(self, connection: ConnectionContext) -> tuple[MessagePipeline | None, MessagePipeline | None]:
        """The connection's inbound and outbound pipelines (None: no handler in that direction)."""
        inbound = self._pipeline(self.inbound, "inbound", connection)
        return inbound, self._pipeline(self.outbound, "outbound", connection)

    def _pipeline(
        self, policies: list[MessagePolicy], direction: Direction, connection: ConnectionContext
    ) -> MessagePipeline | None:
        handlers = []
        for policy in policies:
            handler = policy.attach(connection, direction)
            if handler is not None:
                handlers.append((policy.name, handler))
        return MessagePipeline(handlers, direction, connection, self.reply) if handlers else None


__all__ = ["MessagePipeline", "MessagePolicySet"]
