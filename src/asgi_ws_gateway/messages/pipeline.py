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
coroutine is made for a check that never waits) or return an awaitable. When every handler of a
direction is a :class:`~asgi_ws_gateway.messages.context.MessageCheck` (the built-in checks are),
a message that passes every shortcut goes on as it came, without a :class:`WsMessage`; the first
shortcut that does not pass hands the message to its handler, and the pipeline goes on from there.

"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any

from .._types import Data
from ..cancellation import OwnCancellation, cancel_requested
from ..errors import CloseConnection, DropMessage
from ..json_names import AmbiguousJson
from .context import (
    ConnectionContext,
    Direction,
    ErrorReply,
    MessageCheck,
    MessageHandler,
    MessagePolicy,
    WsMessage,
)

logger = logging.getLogger(__name__)
_NO_LIMIT = 2**62  # max_size without a size limit


class MessagePipeline:
    """The handlers one direction of one connection runs, in order."""

    __slots__ = ("_check_at", "checks", "connection", "direction", "handlers", "max_message_size", "max_size", "reply")

    def __init__(
        self,
        handlers: list[tuple[str, MessageHandler]],
        direction: Direction,
        connection: ConnectionContext,
        reply: ErrorReply,
        max_message_size: int = _NO_LIMIT,
    ) -> None:
        # A check's own handler is called directly (not through MessageCheck.__call__).
        self.handlers = [(name, h.handle if isinstance(h, MessageCheck) else h) for name, h in handlers]
        self.checks: tuple[Callable[[Data, int], bool], ...] | None = None
        """The shortcuts, when every handler is a :class:`MessageCheck` (else None: no shortcut),
        but for size limits: ``max_size`` is the smallest of those, compared once for all."""
        self.max_size = _NO_LIMIT
        self._check_at: tuple[int, ...] = ()  # the handler each shortcut stands for
        checks = [h for _, h in handlers if isinstance(h, MessageCheck)]
        if len(checks) == len(handlers):
            self.max_size = min((c.max_size for c in checks if c.max_size is not None), default=_NO_LIMIT)
            others = [(index, c.passes) for index, c in enumerate(checks) if c.max_size is None]
            self.checks = tuple(passes for _, passes in others)
            self._check_at = (*(index for index, _ in others), len(handlers))
        self.direction = direction
        self.connection = connection
        self.reply = reply
        self.max_message_size = max_message_size
        """The API's: what the transport admitted may not grow past it when a policy writes it again."""

    async def process(self, data: Data, size: int) -> Data | None:
        """The message to send on, or None when a policy dropped it (after answering its sender).

        Raises:
            CloseConnection: a policy closes the connection (counted; the caller closes).
        """
        result = self.process_now(data, size)
        if result is None or isinstance(result, str | bytes):
            return result
        return await result

    def process_now(self, data: Data, size: int) -> Data | Coroutine[Any, Any, Data | None] | None:
        """:meth:`process` without a coroutine while no handler waits (the common case).

        Returns the message to send on, None when a policy dropped it, or -- once a handler returned
        an awaitable, or a drop is answered -- a coroutine the caller awaits for one of those two.

        Raises:
            CloseConnection: as :meth:`process` (from the coroutine too).
        """
        start = 0
        if self.checks is not None and size <= self.max_size:
            try:
                for passes in self.checks:
                    if not passes(data, size):
                        break
                    start += 1
                else:
                    return data  # every check passed it: what most messages do
            except Exception:
                pass  # the check's handler decides, from the same message
            start = self._check_at[start]  # the handlers before it passed the message (size limits too)
        message = WsMessage(data, size, self.direction, self.connection)
        handlers = self.handlers
        for index in range(start, len(handlers)):
            name, handler = handlers[index]
            try:
                pending = handler(message)
            except Exception as exc:
                return self._failed(name, exc)
            except asyncio.CancelledError:
                if cancel_requested():
                    raise
                return self._failed(name, OwnCancellation(f"message policy {name}"))
            if pending is not None:
                return _Step(self._resume(message, index, pending), pending)
        try:
            return self._written(message)
        except Exception as exc:
            return self._failed(handlers[-1][0], exc)

    def _written(self, message: WsMessage) -> Data:
        """The message to send on, written again when a policy changed its JSON; never larger than
        ``max_message_size`` (orjson writes ``1e15`` as ``1000000000000000.0``: 3.8 times the bytes)."""
        data = message.data
        if message.size > self.max_message_size:
            raise DropMessage(
                "message_too_big", f"the message as rewritten is larger than {self.max_message_size} bytes"
            )
        return data

    async def _resume(self, message: WsMessage, index: int, pending: Awaitable[None] | None) -> Data | None:
        """The rest of :meth:`process_now` once handler ``index`` returned ``pending``."""
        handlers = self.handlers
        try:
            while True:
                if pending is not None:
                    await pending
                index += 1
                if index == len(handlers):
                    return self._written(message)
                pending = handlers[index][1](message)
        except (Exception, asyncio.CancelledError) as error:
            # The message written again after the last handler: that handler's.
            name = handlers[min(index, len(handlers) - 1)][0]
            if isinstance(error, asyncio.CancelledError):
                if cancel_requested():
                    raise
                # The policy's own (it awaited something cancelled): propagated, it ended this
                # direction's pump as the connection's end does, and the other side waited on, unclosed.
                error = OwnCancellation(f"message policy {name}")
            failed = self._failed(name, error)
            if failed is not None:
                await failed
            return None

    def _failed(self, name: str, exc: Exception) -> Coroutine[Any, Any, None] | None:
        """A handler raised ``exc``: the answer to a drop's sender (None: nothing to send), or CloseConnection."""
        if isinstance(exc, AmbiguousJson):  # message.json() in a policy of the user's: the client's doing
            exc = DropMessage("ambiguous_json", str(exc))
        if isinstance(exc, DropMessage):
            self.connection.count(name, exc.action, self.direction, exc.reason)
            return self._answer(exc, name) if exc.reply else None
        if isinstance(exc, CloseConnection):
            self.connection.count(name, "close", self.direction, exc.reason)
            logger.info("API %s: message policy %s closes the connection: %s", self.connection.api, name, exc.reason)
            raise exc
        logger.error("API %s: message policy %s failed", self.connection.api, name, exc_info=exc)
        self.connection.count(name, "close", self.direction, "policy_error")
        raise CloseConnection(1011, "policy_error", "a message policy failed") from None

    async def _answer(self, drop: DropMessage, policy: str) -> None:
        text = self.reply.render(self.connection, drop, policy, self.direction)
        if self.direction == "inbound":
            await self.connection.send_to_client(text)
        else:
            await self.connection.send_to_upstream(text)


class _Step(Coroutine[Any, Any, "Data | None"]):
    """:meth:`MessagePipeline._resume` as a step that, closed or cancelled before it started, closes the
    handler's awaitable it was to await too. Left open, that one warned "coroutine ... was never awaited"
    (the frame relay drops a step whose task a close or the connection's end cancelled before it ran)."""

    __slots__ = ("_pending", "_resume", "_started")

    def __init__(self, resume: Coroutine[Any, Any, Data | None], pending: Awaitable[None]) -> None:
        self._resume = resume
        self._pending = pending
        self._started = False

    def send(self, value: Any) -> Any:
        self._started = True
        return self._resume.send(value)

    def throw(self, *error: Any) -> Any:
        self._close_unstarted()
        return self._resume.throw(*error)

    def close(self) -> None:
        self._close_unstarted()
        self._resume.close()

    def __await__(self) -> Generator[Any, None, Data | None]:
        self._started = True
        return self._resume.__await__()

    def _close_unstarted(self) -> None:
        if not self._started and isinstance(self._pending, Coroutine):
            self._pending.close()


class MessagePolicySet:
    """The message policies of one API (for one product), and how errors are answered."""

    def __init__(
        self,
        inbound: list[MessagePolicy],
        outbound: list[MessagePolicy],
        reply: ErrorReply | None = None,
        *,
        max_message_size: int = _NO_LIMIT,
    ) -> None:
        self.inbound = inbound
        self.outbound = outbound
        self.reply = reply or ErrorReply()
        self.max_message_size = max_message_size

    def __bool__(self) -> bool:
        return bool(self.inbound or self.outbound)

    def attach(self, connection: ConnectionContext) -> tuple[MessagePipeline | None, MessagePipeline | None]:
        """The connection's inbound and outbound pipelines (None: no handler in that direction)."""
        connection.max_message_size = self.max_message_size  # what its policies write within
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
        if not handlers:
            return None
        return MessagePipeline(handlers, direction, connection, self.reply, self.max_message_size)


__all__ = ["MessagePipeline", "MessagePolicySet"]
