"""EVALUATION ONLY: a picows upstream leg behind the gateway's connector interface.

The profile of the 64 B echo says the ``websockets`` asyncio client (the upstream leg) is about
half of the gateway's CPU per message, so issue 6 asks what a faster client buys. This connector
implements :class:`~asgi_ws_gateway.upstream.UpstreamConnection` on picows, and
``bench.apps:gateway_picows_app`` swaps it in for the ``gateway-picows`` path.

It is not the gateway's behaviour and not shipped in ``src/``: picows has no permessage-deflate (the
gateway offers it upstream by default), its keepalive differs (ping when idle), and its redirect,
UTF-8 and oversize handling are only approximated here. It exists to put a number on the lever.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

from picows import (
    WSAutoPingStrategy,
    WSCloseCode,
    WSError,
    WSFrame,
    WSInvalidStatusError,
    WSListener,
    WSMsgType,
    WSTransport,
    ws_connect,
)

from asgi_ws_gateway._types import Data, Headers
from asgi_ws_gateway.config.apis import ApiConfig, UpstreamConfig
from asgi_ws_gateway.errors import UpstreamRejected, UpstreamTimeout, UpstreamUnreachable
from asgi_ws_gateway.upstream.base import UpstreamClosed, UpstreamConnection, UpstreamRequest

MAX_QUEUE = 4  # messages buffered before reading from the upstream is paused, as the websockets connector


class _Listener(WSListener):
    """Turns picows frame callbacks into a bounded queue of whole messages for ``recv``."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.queue: collections.deque[Data | UpstreamClosed] = collections.deque()
        self.waiter: asyncio.Future[None] | None = None
        self.drained: asyncio.Future[None] | None = None
        self.transport: WSTransport | None = None
        self.fragments: list[bytes] = []
        self.fragment_type = WSMsgType.BINARY
        self.ended = False
        self.paused = False

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def _push(self, item: Data | UpstreamClosed) -> None:
        self.queue.append(item)
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if len(self.queue) >= MAX_QUEUE and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.underlying_transport.pause_reading()

    def _end(self, closed: UpstreamClosed) -> None:
        if not self.ended:
            self.ended = True
            self._push(closed)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind == WSMsgType.BINARY or kind == WSMsgType.TEXT:
            if frame.fin:
                if kind == WSMsgType.BINARY:
                    self._push(frame.get_payload_as_bytes())
                else:
                    self._push(frame.get_payload_as_utf8_text())
            else:
                self.fragment_type, self.fragments = kind, [frame.get_payload_as_bytes()]
        elif kind == WSMsgType.CONTINUATION:
            self.fragments.append(frame.get_payload_as_bytes())
            if frame.fin:
                payload = b"".join(self.fragments)
                self.fragments = []
                if len(payload) > self.max_size:
                    transport.send_close(WSCloseCode.MESSAGE_TOO_BIG, b"message too big")
                    transport.disconnect()
                    self._end(UpstreamClosed(1009, "message too big", by_peer=False))
                    return
                self._push(payload.decode() if self.fragment_type == WSMsgType.TEXT else payload)
        elif kind == WSMsgType.CLOSE:
            code = int(frame.get_close_code().value) or 1005
            reason = frame.get_close_reason() or ""
            if not transport.is_close_frame_sent:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
            self._end(UpstreamClosed(code, reason, by_peer=True))

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self._end(UpstreamClosed(1006, "", by_peer=False))
        drained = self.drained
        if drained is not None and not drained.done():
            drained.set_result(None)

    def pause_writing(self) -> None:
        if self.drained is None or self.drained.done():
            self.drained = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)


class PicowsConnection:
    def __init__(self, transport: WSTransport, listener: _Listener, close_timeout: float) -> None:
        self._transport = transport
        self._listener = listener
        self._close_timeout = close_timeout
        headers = transport.response.headers
        self.subprotocol: str | None = headers.get("sec-websocket-protocol")
        self.response_headers: Headers = []
        self.ended: asyncio.Future[None] | None = None  # not told: recv's UpstreamClosed is the first word

    async def recv(self) -> Data:
        listener = self._listener
        queue = listener.queue
        while not queue:
            listener.waiter = asyncio.get_running_loop().create_future()
            await listener.waiter
        item = queue[0]
        if isinstance(item, UpstreamClosed):
            raise item  # left in the queue: every later recv sees the end too
        queue.popleft()
        if listener.paused and len(queue) < MAX_QUEUE // 2:
            listener.paused = False
            self._transport.underlying_transport.resume_reading()
        return item

    async def send(self, data: Data) -> None:
        transport = self._transport
        if transport.is_close_frame_sent or transport.is_disconnected:
            raise UpstreamClosed(1006, "", by_peer=False)
        if isinstance(data, str):
            transport.send(WSMsgType.TEXT, data.encode())
        else:
            transport.send(WSMsgType.BINARY, data)
        drained = self._listener.drained
        if drained is not None and not drained.done():
            await drained

    async def close(self, code: int, reason: str) -> None:
        transport = self._transport
        if not transport.is_disconnected:
            if not transport.is_close_frame_sent:
                transport.send_close(WSCloseCode(code), reason.encode())
            try:
                async with asyncio.timeout(self._close_timeout):
                    await transport.wait_disconnected()
            except TimeoutError:
                transport.disconnect(graceful=False)
        self._listener._end(UpstreamClosed(code, reason, by_peer=False))


class PicowsConnector:
    """Opens ``ws://`` upstream connections with picows (no compression, no TLS options)."""

    def __init__(self, api: ApiConfig, upstream: UpstreamConfig) -> None:
        self.api = api
        self.label = upstream.label

    async def connect(self, request: UpstreamRequest) -> UpstreamConnection:
        api = self.api
        headers: list[tuple[str, str]] = list(request.headers)
        if request.subprotocols:
            headers.append(("Sec-WebSocket-Protocol", ", ".join(request.subprotocols)))
        ping: dict[str, Any] = {}
        if api.ping_interval is not None:
            ping = {"enable_auto_ping": True, "auto_ping_idle_timeout": api.ping_interval,
                    "auto_ping_reply_timeout": api.ping_timeout or api.ping_interval,
                    "auto_ping_strategy": WSAutoPingStrategy.PING_WHEN_IDLE}  # fmt: skip
        try:
            transport, listener = await ws_connect(
                lambda: _Listener(api.max_message_size),
                request.url,
                websocket_handshake_timeout=api.connect_timeout,
                max_frame_size=api.max_message_size,
                extra_headers=headers,
                max_redirects=0,
                **ping,
            )
        except WSInvalidStatusError as exc:
            response = exc.response
            status = int(response.status) if response is not None else 502
            raise UpstreamRejected(status, [], exc.raw_body or b"") from None
        except TimeoutError:
            raise UpstreamTimeout(f"{self.label} did not complete the handshake in {api.connect_timeout:g} s") from None
        except (OSError, WSError) as exc:
            raise UpstreamUnreachable(f"{self.label} is unreachable: {exc}") from None
        assert isinstance(listener, _Listener)
        return PicowsConnection(transport, listener, api.close_timeout)


__all__ = ["PicowsConnection", "PicowsConnector"]
