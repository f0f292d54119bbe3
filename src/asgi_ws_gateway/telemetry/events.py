"""The opt-in per-message mode: a sampled fraction of messages become events on the connection span.

Off by default (``telemetry.message_events: 0``): then nothing here runs. When on, the relay's
client ``receive`` and upstream connection are wrapped, so the relay itself never changes. Each
event carries the direction, type and size of one message, never its payload. The SDK keeps the
first 128 events of a span (``OTEL_SPAN_EVENT_COUNT_LIMIT``) and exports them when the connection
closes.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from opentelemetry.trace import Span

from .._types import Data, Headers, Message, Receive
from . import names as n

if TYPE_CHECKING:
    from ..upstream.base import UpstreamConnection


class MessageEvents:
    """Records a ``ratio`` of messages (0 < ratio <= 1) on ``span`` once the connection span exists."""

    def __init__(self, ratio: float) -> None:
        self.ratio = ratio
        self.span: Span | None = None

    def record(self, direction: str, data: Data) -> None:
        span = self.span
        if span is None or random.random() >= self.ratio:
            return
        if isinstance(data, str):
            kind, size = "text", len(data.encode())
        else:
            kind, size = "binary", len(data)
        span.add_event(n.EVENT_MESSAGE, {n.DIRECTION: direction, n.MESSAGE_TYPE: kind, n.MESSAGE_SIZE: size})

    def wrap_receive(self, receive: Receive) -> Receive:
        async def receive_recorded() -> Message:
            message = await receive()
            if message["type"] == "websocket.receive":
                text = message.get("text")
                self.record(n.TO_UPSTREAM, text if text is not None else message.get("bytes") or b"")
            return message

        return receive_recorded

    def wrap_upstream(self, upstream: UpstreamConnection) -> UpstreamConnection:
        return _RecordedUpstream(upstream, self)


class _RecordedUpstream:
    def __init__(self, inner: UpstreamConnection, events: MessageEvents) -> None:
        self.subprotocol: str | None = inner.subprotocol
        self.response_headers: Headers = inner.response_headers
        self.ended = inner.ended
        self._inner = inner
        self._events = events

    async def recv(self) -> Data:
        data = await self._inner.recv()
        self._events.record(n.TO_CLIENT, data)
        return data

    async def send(self, data: Data) -> None:
        await self._inner.send(data)

    async def close(self, code: int, reason: str) -> None:
        await self._inner.close(code, reason)


__all__ = ["MessageEvents"]
