"""An ASGI application in this process as an upstream: the same semantics, no network hop.

The app runs as a task speaking the ASGI WebSocket protocol to the gateway through two bounded
channels (toward the app, :data:`TO_APP_QUEUE` messages; from it, one), so each side's ``send``
waits once the other is that far behind: backpressure works as it does over a socket. A handshake
the app refuses (``websocket.close`` or a ``websocket.http.response``) is relayed like a network
upstream's refusal.

The rules a network upstream lives by hold here too:

* a stall: an app that does nothing with its connection (no ``receive()``, no ``send()``) for the
  API's keepalive window (``ping_interval`` + ``ping_timeout``, as long as a network upstream that
  reads nothing lives; no window when either is None) while a message waits for room toward it is
  dropped: the client gets 1011 ``upstream connection failed``, the app a ``websocket.disconnect``
  (1011) and then cancellation, the access line the gateway's close (reason ``upstream read
  nothing``), as the splice records a stall. Each ``receive()`` and each ``send()`` of the app
  restarts the window, and it does not run while the app's own ``send()`` waits on the gateway (the
  client reads slowly: that is the client's backpressure, not a stall);
* the gateway's close reaches the app after the messages already queued for it, as a network
  upstream reads what it was sent before the close frame;
* a bounded end: an app told to go has ``close_timeout`` to return, is then cancelled, and is waited
  for at most ``min(close_timeout / 2, 1)`` seconds more; one that swallows the cancellation is left
  running (one WARNING) while the client is answered;
* no busy loop: once the app has had its ``websocket.disconnect``, a later ``receive()`` waits until
  it is cancelled, and after the first ``send()`` that raised :class:`AppDisconnected` so does a
  later one (both returned at once: an app retrying in a loop held the event loop, every connection
  of the worker, for good).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any
from urllib.parse import unquote

from websockets.frames import EXTERNAL_CLOSE_CODES

from .._types import ASGIApp, Data, Headers, Message, Scope
from ..config.apis import ApiConfig, UpstreamConfig
from ..errors import UpstreamError, UpstreamRejected, UpstreamTimeout, UpstreamUnreachable, upstream_refusal
from .base import UpstreamClosed, UpstreamConnection, UpstreamRequest, UpstreamStalled
from .checks import valid_header
from .refusal import MAX_REFUSAL_BODY
from .request import kept_response_headers

logger = logging.getLogger(__name__)

TO_APP_QUEUE = 4
"""Client messages queued toward the app before the relay's client pump waits for room: the
``max_queue`` the gateway's ``websockets`` client uses toward a network upstream (whose server
library and TCP buffers take in as much or more before its sender waits). One slot made an app
that reads in bursts (a push feed, a streamer between prompts) look stalled where a network
upstream was not."""


class AppDisconnected(OSError):
    """Raised to the in-process app when it sends after the gateway closed its connection."""


class InProcessConnector:
    """Runs an ASGI app per connection as the upstream."""

    def __init__(self, api: ApiConfig, upstream: UpstreamConfig) -> None:
        self.api = api
        self.app: ASGIApp = upstream.app
        self.label = upstream.label

    async def connect(self, request: UpstreamRequest) -> UpstreamConnection:
        connection = InProcessConnection(self.app, _app_scope(request), self.api)
        try:
            async with asyncio.timeout(self.api.connect_timeout):
                await connection.handshake()
        except UpstreamRejected:
            connection.reap()  # it refused: it ends in its own time (close_timeout at most), not the client's
            raise
        except TimeoutError:
            await connection.abort()
            raise UpstreamTimeout(
                f"{self.label} did not complete the handshake in {self.api.connect_timeout:g} s"
            ) from None
        except UpstreamUnreachable:
            await connection.abort()  # an app that accepted what the gateway refuses must not wait for ever
            raise
        return connection


_SERVER_KEYS = ("type", "asgi", "http_version", "scheme", "server", "client")
"""What the app's scope takes from the client's as is: the connection, as the server saw it. Nothing
else: keys a middleware outside the gateway added (``user``, ``session``, ``path_params``) were
decided on the client's request, before the policies, and the server's ``root_path`` is not the
app's (its path is the whole upstream path, as a network upstream's server would give it)."""


def _app_scope(request: UpstreamRequest) -> Scope:
    path, _, query = request.url.partition("?")
    client = request.scope
    scope = {key: client[key] for key in _SERVER_KEYS if key in client}
    # The app is served by the same server, at the address the client named: it gets the client's
    # Host (checked: exactly one, valid), as an HTTP request must carry one (RFC 9112 §3.2).
    host = [(name, value) for name, value in client.get("headers", ()) if name.lower() == b"host"][:1]
    scope.update(
        root_path="",
        state=dict(client.get("state") or {}),  # the lifespan state, a copy as servers give each connection
        # ASGI's path is decoded; request_checks refused encoded separators and dot segments, so
        # decoding cannot change the path's shape.
        path=unquote(path),
        raw_path=path.encode("latin-1"),
        query_string=query.encode("latin-1"),
        headers=host + [(n.encode("latin-1"), v.encode("latin-1")) for n, v in request.headers],
        subprotocols=list(request.subprotocols),
        extensions={"websocket.http.response": {}},
    )
    return scope


class InProcessConnection:
    def __init__(self, app: ASGIApp, scope: Scope, api: ApiConfig) -> None:
        self.subprotocol: str | None = None
        self.response_headers: Headers = []
        self._app = app
        self._scope = scope
        self._api_name = api.name
        self._max_size = api.max_message_size
        self._close_timeout = api.close_timeout
        self._cancel_wait = min(api.close_timeout / 2, 1.0)  # below the relay's 2 x close_timeout bound
        self._stall_after = (
            api.ping_interval + api.ping_timeout
            if api.ping_interval is not None and api.ping_timeout is not None
            else None  # as a network upstream: without a ping timeout, one that reads nothing lives on
        )
        self._to_app: asyncio.Queue[Message] = asyncio.Queue(maxsize=TO_APP_QUEUE)
        self._from_app: asyncio.Queue[Data | UpstreamClosed] = asyncio.Queue(maxsize=1)
        self._handshake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._rejection: tuple[int, list[tuple[str, str]], bytearray] | None = None
        self._closed_by_gateway: tuple[int, str] | None = None
        self._app_closed = False
        # Once the app had its disconnect (or its AppDisconnected), a later receive() (send()) waits.
        self._disconnect_read = False
        self._send_refused = False
        # What the stall rule watches: when the app last used its connection, how many of its sends wait
        # on the gateway now; _taken wakes a client message waiting for room (the app took one, or the end).
        self._loop = asyncio.get_running_loop()
        self._acted_at = self._loop.time()
        self._app_sends = 0
        self._taken = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._reaper: asyncio.TimerHandle | None = None
        self._left_running = False

    async def handshake(self) -> None:
        self._to_app.put_nowait({"type": "websocket.connect"})
        self._task = asyncio.create_task(self._run())
        await asyncio.shield(self._handshake)

    async def _run(self) -> None:
        outcome = UpstreamClosed(1006, "", by_peer=True)  # returned without a close frame
        try:
            await self._app(self._scope, self._receive, self._send)
        except AppDisconnected:
            pass
        except Exception as exc:
            logger.exception("in-process upstream app raised")
            outcome = UpstreamClosed(1011, "", by_peer=False)
            self._fail_handshake(UpstreamUnreachable(f"in-process upstream raised {type(exc).__name__}"))
        finally:
            if self._reaper is not None:
                self._reaper.cancel()
            self._taken.set()  # a client message waiting for room sees the end
        self._fail_handshake(UpstreamUnreachable("in-process upstream returned without accepting"))
        if not self._app_closed and self._closed_by_gateway is None:
            self._app_closed = True
            await self._from_app.put(outcome)

    def _fail_handshake(self, error: Exception) -> None:
        if not self._handshake.done():
            self._handshake.set_exception(error)

    async def _receive(self) -> Message:
        if self._disconnect_read:
            await self._until_cancelled()
        if self._closed_by_gateway is not None and self._to_app.empty():
            # Its disconnect comes after what was queued for it; here when the queue was full then.
            code, reason = self._closed_by_gateway
            message: Message = {"type": "websocket.disconnect", "code": code, "reason": reason}
        else:
            message = await self._to_app.get()
        self._acted_at = self._loop.time()
        self._taken.set()
        self._disconnect_read = message["type"] == "websocket.disconnect"
        return message

    async def _send(self, message: Message) -> None:
        # Progress for the stall rule; while it waits on the gateway, the window does not run.
        self._app_sends += 1
        try:
            await self._send_message(message)
        finally:
            self._app_sends -= 1
            self._acted_at = self._loop.time()

    async def _send_message(self, message: Message) -> None:
        kind = message["type"]
        if self._closed_by_gateway is not None or self._app_closed:
            if self._send_refused:
                await self._until_cancelled()
            self._send_refused = True
            raise AppDisconnected("the gateway closed this connection")
        if self._rejection is not None:
            self._rejection_body(message)
        elif not self._handshake.done():
            self._handshake_message(message)
        elif kind == "websocket.send":
            await self._from_app.put(_payload(message))
        elif kind == "websocket.close":
            code, reason = _close_frame(message)
            self._app_closed = True
            await self._from_app.put(UpstreamClosed(code, reason, by_peer=True))
        else:
            raise RuntimeError(f"Expected ASGI message 'websocket.send' or 'websocket.close', but got {kind!r}")

    async def _until_cancelled(self) -> None:
        """Wait as uvicorn's ``receive()`` waits on its empty queue: the connection's end cancels the app.
        Returning at once again made an app calling in a loop hold the event loop for good."""
        await asyncio.get_running_loop().create_future()

    def _handshake_message(self, message: Message) -> None:
        kind = message["type"]
        if kind == "websocket.accept":
            subprotocol = message.get("subprotocol")
            if subprotocol is not None and subprotocol not in self._scope["subprotocols"]:
                # As the network connectors refuse it: a client must fail a connection that accepts one.
                error = f"in-process upstream chose a subprotocol that was not offered: {subprotocol!r:.80}"
                self._refused(UpstreamUnreachable(error))
                return
            headers = _response_headers(message)
            if headers is None:
                self._refused(UpstreamUnreachable(_MALFORMED_HEADER))
                return
            negotiated = [name for name, _ in headers if name.lower() in _NEGOTIATED]
            if negotiated:
                # A network upstream's 101 with a subprotocol or an extension the gateway did not offer
                # is a 502; here the header was dropped and the connection accepted without it.
                error = f"in-process upstream's accept carried a {negotiated[0]!r:.40} header (use 'subprotocol')"
                self._refused(UpstreamUnreachable(error))
                return
            self.subprotocol = subprotocol
            self.response_headers = kept_response_headers(headers)
            self._handshake.set_result(None)
        elif kind == "websocket.close":
            self._refused(UpstreamRejected(403, [], b""))
        elif kind == "websocket.http.response.start" and self._rejection is None:
            headers = _response_headers(message)
            if headers is None:
                self._refused(UpstreamUnreachable(_MALFORMED_HEADER))
                return
            status = message.get("status")
            self._rejection = (status if type(status) is int else 0, headers, bytearray())  # 0: a 502 below
        else:
            raise RuntimeError(f"Unexpected ASGI message {kind!r} before the handshake completed")

    def _rejection_body(self, message: Message) -> None:
        assert self._rejection is not None
        status, headers, body = self._rejection
        body += message.get("body", b"")
        # Cut as a network upstream's is (upstream.refusal): an app streaming a large or endless body
        # was held whole in memory. Past the cut its next send finds the connection gone.
        if len(body) >= MAX_REFUSAL_BODY or not message.get("more_body", False):
            kept = bytes(body[:MAX_REFUSAL_BODY])
            self._refused(upstream_refusal("in-process upstream", status, kept_response_headers(headers), kept))

    def _refused(self, error: UpstreamError) -> None:
        """The app's handshake is over without a connection: its next ``receive()`` is a disconnect
        (1006, as uvicorn gives it), so it ends instead of waiting for ever."""
        self._app_closed = True
        self._disconnect_app(1006, "")
        self._handshake.set_exception(error)

    async def recv(self) -> Data:
        item = await self._from_app.get()
        if isinstance(item, UpstreamClosed):
            self._from_app.put_nowait(item)  # every later recv sees the end too
            raise item
        if _too_big(item, self._max_size):
            # The client is told at once; the app gets its disconnect and finishes in its own time
            # (awaiting it here held the client's close for close_timeout, a network upstream's not).
            self._disconnect_app(1009, "message too big")
            _drain(self._from_app)
            self._from_app.put_nowait(UpstreamClosed(1009, "message too big", by_peer=False))
            raise UpstreamClosed(1009, "message too big", by_peer=False)
        return item

    async def send(self, data: Data) -> None:
        if self._closed_by_gateway is not None or self._app_closed:
            raise UpstreamClosed(*(self._closed_by_gateway or (1006, "")), by_peer=False)
        message: dict[str, Any] = {"type": "websocket.receive"}
        message["text" if isinstance(data, str) else "bytes"] = data
        if self._to_app.full():
            await self._room()
            if self._closed_by_gateway is not None or self._app_closed:
                raise UpstreamClosed(*(self._closed_by_gateway or (1006, "")), by_peer=False)
        self._to_app.put_nowait(message)

    async def _room(self) -> None:
        """Wait until the queue toward the app has room, or the connection ends.

        Raises:
            UpstreamStalled: The app neither received nor sent for the keepalive window while this
                message waited (waiting without a bound kept the connection, and the client's unread
                disconnect, for ever). A send of the app's waiting on the gateway (on a client that
                reads slowly) is not a stall: the window starts again when it returns.
        """
        waiting_since = self._loop.time()
        while self._to_app.full() and self._closed_by_gateway is None and not self._app_closed:
            self._taken.clear()
            # Looked at again once the window is over: what the app did meanwhile is in _acted_at.
            delay = self._stall_after
            if delay is not None and not self._app_sends:
                delay += max(self._acted_at, waiting_since) - self._loop.time()
                if delay <= 0:
                    raise self._stalled()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._taken.wait()

    def _stalled(self) -> UpstreamStalled:
        logger.info("relay: the in-process upstream of API %r read nothing and sent nothing for %g s while a "
                    "message waited for it; dropping it", self._api_name, self._stall_after)  # fmt: skip
        self._disconnect_app(1011, "keepalive ping timeout", drop_queued=True)  # as a network upstream's server
        stalled = UpstreamStalled()
        _drain(self._from_app)
        self._from_app.put_nowait(stalled)  # the relay's other pump reads it too
        return stalled

    async def close(self, code: int, reason: str) -> None:
        self._disconnect_app(code, reason)
        await self._wait_app(grace=self._close_timeout)
        _drain(self._from_app)
        self._from_app.put_nowait(UpstreamClosed(code, reason, by_peer=False))

    def _disconnect_app(self, code: int, reason: str, *, drop_queued: bool = False) -> None:
        """Tell the app the connection is over: after what was queued for it (as a network upstream
        reads what came before the close frame) unless ``drop_queued`` (a dropped connection)."""
        if self._closed_by_gateway is None:
            self._closed_by_gateway = (code, reason)
            if drop_queued:
                _drain(self._to_app)
            if not self._to_app.full():  # else _receive gives it once the queue is empty
                self._to_app.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
            self._taken.set()  # a client message waiting for room sees the end

    async def abort(self) -> None:
        await self._wait_app(grace=0)

    def reap(self) -> None:
        """The app refused the handshake (and has its disconnect): it gets ``close_timeout`` to return,
        then is cancelled, in the background (the client is answered at once)."""
        task = self._task
        if task is not None and not task.done() and self._reaper is None:
            self._reaper = asyncio.get_running_loop().call_later(self._close_timeout, self._cancel_app, task)

    def _cancel_app(self, task: asyncio.Task[None]) -> None:
        task.cancel()
        asyncio.get_running_loop().call_later(self._cancel_wait, self._check_cancelled, task)

    def _check_cancelled(self, task: asyncio.Task[None]) -> None:
        if not task.done() and not self._left_running:
            self._left_running = True
            logger.warning("the in-process upstream app of API %r did not end %g s after it was cancelled "
                           "(it swallowed the cancellation); the gateway no longer waits for it, and its task "
                           "keeps running", self._api_name, self._cancel_wait)  # fmt: skip

    async def _wait_app(self, grace: float) -> None:
        """Give the app ``grace`` seconds to return, then cancel it and wait at most ``_cancel_wait``
        seconds more: an app that swallows the cancellation is left running, never waited for."""
        task = self._task
        if task is None or task.done():
            return
        if self._reaper is not None:
            self._reaper.cancel()
        _drain(self._from_app)  # unblock an app waiting to hand us a message
        done, _ = await asyncio.wait({task}, timeout=grace)
        if not done:
            task.cancel()
            await asyncio.wait({task}, timeout=self._cancel_wait)
            self._check_cancelled(task)


# What the app sends is checked as uvicorn checks it: a message no server could send raises in the
# app (whose failure is the upstream's: 1011 to the client), never later in a relay pump.


def _payload(message: Message) -> Data:
    """A ``websocket.send``'s data: exactly one of ``text`` (a ``str`` UTF-8 can encode) or ``bytes``."""
    text, data = message.get("text"), message.get("bytes")
    if (text is None) == (data is None):
        raise TypeError("Expected exactly one of 'text' and 'bytes' in ASGI message 'websocket.send'")
    if text is not None:
        if not isinstance(text, str):
            raise TypeError(f"'websocket.send' text must be str, not {type(text).__name__}")
        if not text.isascii():
            text.encode()  # UnicodeEncodeError for a lone surrogate: no text frame carries one
        return text
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"'websocket.send' bytes must be bytes, not {type(data).__name__}")
    return data if type(data) is bytes else bytes(data)


def _close_frame(message: Message) -> tuple[int, str]:
    """A ``websocket.close``'s code (an ``int`` a close frame may carry) and reason (a ``str`` UTF-8
    can encode in 123 bytes), checked as uvicorn's ``websockets`` checks them before writing the frame.

    A code no peer may send (1004-1006, 1015, under 1000, 1016-2999, 5000 and up) reached the client
    as 1011 or (1005) 1000 while the access line recorded it as sent, and a longer reason was cut."""
    code, reason = message.get("code", 1000), message.get("reason") or ""
    if type(code) is not int:
        raise TypeError(f"'websocket.close' code must be int, not {type(code).__name__}")
    if not isinstance(reason, str):
        raise TypeError(f"'websocket.close' reason must be str, not {type(reason).__name__}")
    if not (code in EXTERNAL_CLOSE_CODES or 3000 <= code <= 4999):
        raise ValueError(f"'websocket.close' code {code} is not one a close frame may carry (RFC 6455 §7.4)")
    if len(reason.encode()) > 123:  # UnicodeEncodeError for a lone surrogate
        raise ValueError("'websocket.close' reason is over the 123 bytes a close frame holds")
    return code, reason


_MALFORMED_HEADER = "in-process upstream sent a malformed response header"
_NEGOTIATED = frozenset({"sec-websocket-protocol", "sec-websocket-extensions"})
"""Headers an accept may not carry: the gateway offered the app no extension, and its subprotocol
goes in the accept's ``subprotocol``."""


def _response_headers(message: Message) -> list[tuple[str, str]] | None:
    """An accept's or a refusal's headers, or None when one could not be written as sent (a name
    that is not a token, a value with CR, LF or another control character): a 502, as from a
    network upstream, instead of a response the server refuses to write or one of the app's making."""
    headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in message.get("headers", [])]
    return headers if all(valid_header(n, v) for n, v in headers) else None


def _too_big(item: Data, limit: int) -> bool:
    """Whether a message is over ``limit`` bytes, a text as UTF-8: up to 4 bytes a character, so a
    text of fewer characters than the limit may still be over it (``"é" * 614400`` is 1.2 MB; it
    was relayed under a 1 MiB limit)."""
    if isinstance(item, bytes):
        return len(item) > limit
    return len(item) > limit or (len(item) * 4 > limit and len(item.encode()) > limit)


def _drain(queue: asyncio.Queue[Any]) -> None:
    while not queue.empty():
        queue.get_nowait()


__all__ = ["AppDisconnected", "InProcessConnector"]
