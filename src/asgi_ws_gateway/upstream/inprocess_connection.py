"""The in-process upstream's connection: the app as a task, held to the rules a network upstream lives by.

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

from .._types import ASGIApp, Data, Headers, Message, Scope
from ..cancellation import cancel_requested
from ..config.apis import ApiConfig
from ..errors import UpstreamError, UpstreamRejected, UpstreamUnreachable, upstream_refusal
from .base import UpstreamClosed, UpstreamStalled
from .headers import kept_response_headers
from .inprocess_messages import (
    MALFORMED_HEADER,
    NEGOTIATED_HEADERS,
    SERVER_LINES_OF_A_101,
    checked_close,
    checked_headers,
    checked_payload,
    head_problem,
)
from .refusal import MAX_REFUSAL_BODY
from .refusal_headers import REFUSAL_HEADERS
from .response_head import MAX_HEAD

logger = logging.getLogger(__name__)

TO_APP_QUEUE = 4
"""Client messages queued toward the app before the relay's client pump waits for room: the
``max_queue`` the gateway's ``websockets`` client uses toward a network upstream (whose server
library and TCP buffers take in as much or more before its sender waits). One slot made an app
that reads in bursts (a push feed, a streamer between prompts) look stalled where a network
upstream was not."""


class AppDisconnected(OSError):
    """Raised to the in-process app when it sends after the gateway closed its connection."""


class InProcessConnection:
    def __init__(self, app: ASGIApp, scope: Scope, api: ApiConfig, *, max_head: int = MAX_HEAD) -> None:
        self.subprotocol: str | None = None
        self.response_headers: Headers = []
        # The app's close waits behind its messages in a bounded queue (its send blocks): nothing to tell early.
        self.ended: asyncio.Future[None] | None = None
        self._app = app
        self._scope = scope
        # The client's offer as the gateway forwarded it: the scope is the app's from now on (an app
        # adding to scope["subprotocols"] could then accept with a subprotocol the client never offered).
        self._offered = tuple(scope["subprotocols"])
        self._api_name = api.name
        self._max_size = api.max_message_size
        self._max_head = max_head  # the response head a network upstream may send (upstream.head_limits)
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
        self._app_close: tuple[int, str] | None = None  # the close it sent after accepting, echoed to it
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
        # Returned without a close: as a network upstream whose TCP connection ends without a close frame
        # (its client is told 1011 "upstream connection failed"; by the peer, it got 1011 and no reason).
        outcome = UpstreamClosed(1006, "", by_peer=False)
        try:
            await self._app(self._scope, self._receive, self._send)
        except AppDisconnected:
            pass
        except BaseException as exc:
            # Only the gateway's own cancellation ends the task as such. Whatever else the app raises is
            # its failure, as uvicorn takes any exception from an application: a SystemExit or
            # KeyboardInterrupt out of this task stopped the event loop (every connection of the worker),
            # and a CancelledError of the app's own (an awaited task that was cancelled) left the
            # handshake to connect_timeout, or an accepted connection open for ever with nothing to relay.
            if isinstance(exc, asyncio.CancelledError) and cancel_requested():
                raise
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
            message: Message = self._disconnect_message()
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
            await self._from_app.put(checked_payload(message))
        elif kind == "websocket.close":
            code, reason = checked_close(message)
            self._app_closed = True
            self._app_close = (code, reason)
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
            if subprotocol is not None and subprotocol not in self._offered:
                # As the network connectors refuse it: a client must fail a connection that accepts one.
                error = f"in-process upstream chose a subprotocol that was not offered: {subprotocol!r:.80}"
                self._refused(UpstreamUnreachable(error))
                return
            headers = self._answer_headers(message, SERVER_LINES_OF_A_101 + (subprotocol is not None))
            if headers is None:
                return
            negotiated = [name for name, _ in headers if name.lower() in NEGOTIATED_HEADERS]
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
            headers = self._answer_headers(message, len(REFUSAL_HEADERS))  # the gateway adds them to a refusal
            if headers is None:
                return
            status = message.get("status")
            self._rejection = (status if type(status) is int else 0, headers, bytearray())  # 0: a 502 below
        else:
            raise RuntimeError(f"Unexpected ASGI message {kind!r} before the handshake completed")

    def _answer_headers(self, message: Message, server_lines: int) -> list[tuple[str, str]] | None:
        """An accept's or a refusal's headers, or None, the handshake refused (a 502), when a network
        upstream's answer with them would be: a header that could not be written as sent, or a head
        over a network upstream's limits (``server_lines``: the lines the server writes for the app)."""
        headers = checked_headers(message)
        problem = (
            MALFORMED_HEADER
            if headers is None
            else head_problem(headers, server_lines=server_lines, max_head=self._max_head)
        )
        if problem is not None:
            self._refused(UpstreamUnreachable(problem))
            return None
        return headers

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

    def _disconnect_message(self) -> Message:
        """The app's ``websocket.disconnect``. After its own close, that close echoed, as a network
        upstream's is echoed to it (and an app under uvicorn reads the client's echo): it read the
        gateway's 1000 whatever it had sent."""
        assert self._closed_by_gateway is not None
        code, reason = self._app_close or self._closed_by_gateway
        return {"type": "websocket.disconnect", "code": code, "reason": reason}

    def _disconnect_app(self, code: int, reason: str, *, drop_queued: bool = False) -> None:
        """Tell the app the connection is over: after what was queued for it (as a network upstream
        reads what came before the close frame) unless ``drop_queued`` (a dropped connection)."""
        if self._closed_by_gateway is None:
            self._closed_by_gateway = (code, reason)
            if drop_queued:
                _drain(self._to_app)
            if not self._to_app.full():  # else _receive gives it once the queue is empty
                self._to_app.put_nowait(self._disconnect_message())
            self._taken.set()  # a client message waiting for room sees the end

    async def abort(self) -> None:
        self._unawaited_handshake()
        await self._wait_app(grace=0)

    def abandon(self) -> None:
        """The gateway no longer waits for the handshake (its task was cancelled: the client left, the
        server stops). The app reads a disconnect (1006, its connection gone without a close, as a
        network upstream's app does when the gateway's connect is cancelled), its sends raise, and it is
        reaped as a refusal is. It was left waiting for ever, with all it held."""
        self._app_closed = True
        self._unawaited_handshake()
        self._disconnect_app(1006, "")
        self.reap()

    def _unawaited_handshake(self) -> None:
        """No one waits for the handshake any more (the connector's wait was cancelled, or timed out): an
        outcome the app gave it later went unread, which asyncio logs as an ERROR ("Future exception was
        never retrieved") for an app that returned once cancelled at ``connect_timeout``."""
        if not self._handshake.done():
            self._handshake.cancel()

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


__all__ = ["AppDisconnected", "InProcessConnection"]
