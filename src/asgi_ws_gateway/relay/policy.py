"""The relay of a connection whose API has message policies: the same pumps, with a pipeline inline.

:class:`~asgi_ws_gateway.relay.Relay` stays the relay of APIs without message policies, untouched
and as cheap as before; the middleware picks this subclass once per connection, and each pump
picks its plain or its policy version once (a direction without handlers runs the plain pump).

The pipeline runs between receiving a message and sending it on, awaited like the send: a policy
that waits holds the sender back, and nothing queues. When a policy closes the connection, the
message's sender (the offender) gets the policy's code, the other side ``peer_code`` (1001). When
the offender is the upstream, the upstream pump keeps draining while the upstream finishes its
closing handshake, so a flooding upstream cannot stall its own close.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Literal

from .._types import Data, Message, Receive, Send
from ..errors import CloseConnection
from ..handshake.context import HandshakeContext
from ..messages.context import ConnectionContext
from ..messages.pipeline import MessagePolicySet
from ..upstream.base import UpstreamClosed, UpstreamConnection
from .pumps import Relay, RelayStats, wire_code, wire_reason

logger = logging.getLogger(__name__)


class PolicyRelay(Relay):
    """A :class:`Relay` that runs message policies on each message (see the module docstring)."""

    def __init__(
        self,
        receive: Receive,
        send: Send,
        upstream: UpstreamConnection,
        *,
        max_message_size: int,
        policies: MessagePolicySet,
        handshake: HandshakeContext,
        close_timeout: float = 5.0,
    ) -> None:
        super().__init__(receive, send, upstream, max_message_size=max_message_size, close_timeout=close_timeout)
        self._tasks: list[Callable[[], Coroutine[Any, Any, None]]] = []
        self._running: set[asyncio.Task[None]] = set()
        self._state: Literal["new", "running", "over"] = "new"
        self.connection = ConnectionContext(handshake, self.stats, self)
        self._inbound, self._outbound = policies.attach(self.connection)

    async def run(self) -> RelayStats:
        self._state = "running"
        for task in self._tasks:
            self._launch(task)
        try:
            return await super().run()
        finally:
            self._state = "over"
            for running in self._running:
                running.cancel()
            await asyncio.gather(*self._running, return_exceptions=True)

    def start(self, task: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``task()`` while the connection is relayed: from :meth:`run` on, or at once if running."""
        if self._state == "new":
            self._tasks.append(task)
        elif self._state == "running":
            self._launch(task)
        # over: the connection is closed; there is nothing left for the task to do

    def _launch(self, task: Callable[[], Coroutine[Any, Any, None]]) -> None:
        running = asyncio.create_task(task())
        self._running.add(running)
        running.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if not task.cancelled() and task.exception() is not None:  # reported now, not at the close
            logger.error("message policy task failed", exc_info=task.exception())

    async def send_to_upstream(self, data: Data) -> bool:
        if self._closing:
            return False
        try:
            await self._upstream.send(data)
        except UpstreamClosed:
            return False
        return True

    async def _client_to_upstream(self) -> None:
        pipeline = self._inbound
        if pipeline is None:
            await super()._client_to_upstream()
            return
        receive, send_upstream, stats, max_size = self._receive, self._upstream.send, self.stats, self._max_size
        process = pipeline.process
        while True:
            message = await receive()
            if message["type"] == "websocket.receive":
                text: str | None = message.get("text")
                if text is not None:
                    data: Data = text
                    size = len(text) if text.isascii() else len(text.encode())
                else:
                    data = message.get("bytes") or b""
                    size = len(data)
                if size > max_size:
                    await self.close(1009, "message too big", 1001, "client message too big")
                    return
                stats.count_in(size, text is None)
                if self._closing:
                    continue  # closing: only the client's disconnect matters now
                try:
                    forward = await process(data, size)
                except CloseConnection as close:
                    await self.close(close.code, close.detail, close.peer_code, close.peer_reason)
                    return
                if forward is None or self._closing:
                    continue  # dropped, or the connection started closing meanwhile
                try:
                    await send_upstream(forward)
                except UpstreamClosed:
                    return
            elif message["type"] == "websocket.disconnect":
                await self._client_left(message)
                return

    async def _upstream_to_client(self) -> None:
        pipeline = self._outbound
        if pipeline is None:
            await super()._upstream_to_client()
            return
        recv, send, stats, process = self._upstream.recv, self._send, self.stats, pipeline.process
        while True:
            try:
                data = await recv()
            except UpstreamClosed as closed:
                await self._upstream_ended(closed)
                return
            if not self._client_open:
                continue  # closing: drain the upstream so its close frame can arrive
            size = len(data) if isinstance(data, bytes) or data.isascii() else len(data.encode())
            stats.count_out(size, isinstance(data, bytes))
            try:
                forward = await process(data, size)
            except CloseConnection as close:
                await self._upstream_offended(close)
                continue
            if forward is None or not self._client_open:
                continue
            message: Message = {"type": "websocket.send", "text": forward} if isinstance(forward, str) else {
                "type": "websocket.send", "bytes": forward}  # fmt: skip
            try:
                await send(message)
            except OSError:
                self._client_open = False  # the client vanished; its pump will see the disconnect

    async def _upstream_offended(self, close: CloseConnection) -> None:
        """Close the client now and the upstream in the background, while this pump drains it."""
        if self._closing:
            return
        self._closing = True
        stats = self.stats
        stats.closed_by, stats.close_code, stats.close_reason = "gateway", close.peer_code, close.peer_reason
        await self._close_client(close.peer_code, close.peer_reason)
        self._launch(lambda: self._close_upstream(wire_code(close.code), wire_reason(close.detail)))


__all__ = ["PolicyRelay"]
