"""The relay: two pumps that copy messages between the client (ASGI) and the upstream.

Each pump awaits every send before its next receive, so a slow reader slows its writer and nothing
queues without bound. A connection whose API has message policies runs the same pumps with one more
step: each pump awaits its direction's :class:`~asgi_ws_gateway.messages.pipeline.MessagePipeline` between receiving
a message and sending it on (a policy that waits holds the sender back, exactly as a slow receiver
would). A direction without policies -- every direction of an API without any -- skips that step.

Whichever side closes first, the other is closed with the mirrored code and reason, and both pumps
always finish:

* the client closes: its code goes upstream; the upstream pump keeps draining (and dropping)
  until the upstream completes the closing handshake (a message a policy step holds is dropped
  then, its step cancelled: the answer is not left unread behind it);
* the upstream closes: its code goes to the client and the client pump is cancelled (at the close
  frame: the connector does not wait for the upstream's TCP close to report it); what it sent before
  its close goes first, also when the client pump finds it closed first (a send to it fails): that
  ends no delivery, it is no close of the client's;
* the gateway closes (oversize message, idle, lifetime, drain): each side gets its own code.

The pumps run as a task group: the first to finish decides. When it failed (an exception that is
not a close), the other is cancelled at once; when it ended normally (a close), the other gets
``close_timeout`` seconds to see the close through, then is cancelled. The cancelled pump is always
awaited, and :meth:`Relay.run` returns only when both are done and both sides are closed, however
often it is cancelled meanwhile:

============================================  ======================  ==========================
what ended the connection                     the client gets         the upstream gets
============================================  ======================  ==========================
client closed with *c*, *r*                   (its own close echoed)  *c*, *r* (1005: 1000)
client vanished (TCP dropped, no close frame) —                       1001 ``client went away``
upstream closed with *c*, *r*                 *c*, *r* (1005: 1000)   (its own close echoed)
upstream vanished / keepalive / protocol err  1011                    —
an in-process app stalled (read nothing)      1011                    1011, then cancelled
a pump failed (a bug: logged once at ERROR)   1011 ``gateway error``  1011 ``gateway error``
:meth:`Relay.run` cancelled / :meth:`abort`   1011 ``gateway error``  1001 ``gateway error``
============================================  ======================  ==========================

A client that vanishes gets 1001 upstream, not 1011: nothing failed in the gateway or in the
backend, the client went away (RFC 6455 §7.4.1) -- a backend that alerts on 1011 would otherwise
page for every phone that lost its signal. Passthrough's splice sends the same.

When a message policy closes the connection, the message's sender (the offender) gets the policy's
code, the other side ``peer_code`` (1001). When the offender is the upstream, the upstream pump keeps
draining while the upstream finishes its closing handshake, so a flooding upstream cannot stall its
own close.

Reserved codes never go on the wire: 1005 (no status) is sent as 1000, 1006 and 1015 as 1011.

What is on its way to the client when a close begins, and the close frame behind it, is waited for as
the splice waits (:mod:`.close_wait`) when the server tells the client's progress (the gateway's
protocol does: ``client_progress``): ``close_timeout``, and on while the client takes in some of it
within each; a client that takes in nothing is cut at ``close_timeout``. That bounds the client's close
frame, and the upstream pump's delivery of what the upstream sent before its close when the client
pump found the upstream closed first. Both were ``close_timeout`` whatever the progress: a client
reading slowly lost its close frame (the relay gave up sending it behind the backlog: EOF, no code),
or, sending as it read, was cut with 1011 ``gateway error`` (the client pump's send found the
upstream closed and the relay took that for the client's close: 5 of 8 messages of 1 MiB delivered).
The same wait bounds what the upstream sent before its close when its close is in (a connector that tells
it: ``UpstreamConnection.ended``) while its pump still sends the client what came before: a client that
takes in nothing is cut there (nothing more sent to it; the upstream's close recorded), where only the
server's stall rule (``ping_timeout``) did, and nothing with the keepalive off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from .._types import Data, Message, Receive, Send
from ..errors import CloseConnection
from ..loop_watch import INFLATED_PER_TURN, MESSAGES_PER_TURN
from ..messages.context import ConnectionContext
from ..upstream.base import UpstreamClosed, UpstreamConnection, UpstreamStalled
from .close_codes import CLIENT_STALLED, SERVER_SHUTDOWN, TOO_BIG, client_vanished, wire_code, wire_reason
from .close_wait import CloseWait
from .policy_tasks import PolicyTasks
from .stats import RelayStats

if TYPE_CHECKING:
    from ..handshake.context import HandshakeContext
    from ..messages.pipeline import MessagePipeline, MessagePolicySet
    from ..upstream.close_secrets import SentCredentials

logger = logging.getLogger(__name__)
_CLIENT_OVER = (OSError, RuntimeError)
"""What the server's ``send`` raises once the client's side is over, which the relay takes for the client
gone (its pump then reads the disconnect, whose code goes upstream). An ``OSError`` when the client's
connection is lost (ASGI 2.4: uvicorn's ``ClientDisconnected``); a ``RuntimeError`` from uvicorn's stock
``websockets-sansio`` and ``wsproto`` once the server closed the client itself -- a protocol error, a message
over ``--ws-max-size``, its keepalive timeout -- with the disconnect it queued not read yet ("Unexpected ASGI
message 'websocket.send', after sending 'websocket.close'"): that failed the pump, logged at ERROR with a
traceback, for a client's bad frame. Told by the type, not the words: the relay sends only well-formed
``websocket.send`` and ``websocket.close`` messages, and none past its own close, so a stock server raises
no other RuntimeError for them."""
_PROTOCOL_ERRORS = frozenset({1002, 1007})
"""Codes the gateway fails an upstream with for what it found in its frames (a protocol error, a text
message not UTF-8): its own close, as the splice and the frame relay record it."""


class Relay:
    """Copies messages both ways between an accepted ASGI WebSocket and an upstream connection.

    Args:
        receive: the client's ASGI ``receive``.
        send: the client's ASGI ``send``.
        upstream: the open upstream connection.
        max_message_size: payload bytes one client message may carry (larger: 1009).
        close_timeout: seconds the second pump gets to finish after the first ended with a close,
            and the client's close may take; the upstream's close is given twice that, over the
            connector's own bound of ``close_timeout`` (default 5).
        policies: the connection's message policies (default None: none); attached here, once.
        handshake: the connection's handshake context, which the policies see; required with
            ``policies``.
        client_progress: a count that grows as the client takes in what is sent to it (the server's
            :func:`~asgi_ws_gateway.progress.taken_in` of its transport), for the close wait's looks
            (default None: none, and the close wait is ``close_timeout`` flat).
        sent: the credentials the gateway sent the upstream, taken out of its close reason (default
            None: none).

    Attributes:
        connection: what the message policies see of the connection (None without policies).
    """

    def __init__(
        self,
        receive: Receive,
        send: Send,
        upstream: UpstreamConnection,
        *,
        max_message_size: int,
        close_timeout: float = 5.0,
        policies: MessagePolicySet | None = None,
        handshake: HandshakeContext | None = None,
        client_progress: Callable[[], int] | None = None,
        sent: SentCredentials | None = None,
    ) -> None:
        slots = max_message_size.bit_length() + 1  # a message over the limit is never counted
        self.stats = RelayStats(sizes_in=[0] * slots, sizes_out=[0] * slots)
        self._receive = receive
        self._send = send
        self._upstream = upstream
        self._max_size = max_message_size
        self._close_timeout = close_timeout
        self._client_open = True  # False once a close was sent to, or received from, the client
        self._closing = False  # True once one side or the gateway started closing
        self._upstream_gone = False  # a send found the upstream closed before its pump read its close
        self._shutdown_told = False  # the server closed the client at shutdown (``client_closed_at_shutdown``)
        self._client_progress = client_progress
        self._sent_credentials = sent
        self._close_wait: CloseWait | None = None  # the client's, from its first wait on (``_for_the_client``)
        self._waiting: list[asyncio.Timeout] = []  # the waits for the client under way
        self._look_due: asyncio.TimerHandle | None = None
        self._close_read: asyncio.Event | None = None  # set when the upstream pump read the close (once watched)
        self._to_client: asyncio.Task[None] | None = None  # the upstream pump, while it runs
        self._cutting = False  # the upstream pump is cancelled to cut off a client that took in nothing
        self._holding = False  # the upstream pump awaits a policy step for a message (a delay, a rate limit)
        self._sending = False  # the upstream pump's send to the client is under way
        self._sent: asyncio.Event | None = None  # set when that send ends, for what waits behind it
        self._pumps: set[asyncio.Task[None]] = set()
        self._ending: tuple[int, str, int, str] | None = None  # the codes a failed or cancelled run closes with
        self.finished = asyncio.Event()
        """Set when :meth:`run` has closed both sides and is returning."""
        self.client_over = asyncio.Event()
        """Set when the client's connection is over for the client (its closing handshake done, or it
        vanished) and the upstream's close frame is sent (by the time a waiter runs): what the client
        holds (its concurrency lease) may go while the upstream's close completes (``close_timeout``)."""
        self._background = PolicyTasks()
        self.connection: ConnectionContext | None = None
        self._inbound: MessagePipeline | None = None
        self._outbound: MessagePipeline | None = None
        if policies is not None:
            if handshake is None:
                raise ValueError("a relay with message policies needs the connection's handshake context")
            self.connection = ConnectionContext(handshake, self.stats, self)
            self._inbound, self._outbound = policies.attach(self.connection)

    async def run(self) -> RelayStats:
        """Relay until both sides are closed (see the module docstring for the codes each gets).

        Cancelling it closes both sides with 1011/1001 and re-raises. Never raises for a failed
        pump: the failure is logged once, at ERROR, and both sides are closed with 1011. Background
        work the policies started is cancelled, and awaited, before it returns.
        """
        self._background.begin()
        try:
            return await self._relay()
        finally:
            await self._background.end()

    async def _relay(self) -> RelayStats:
        to_upstream = asyncio.create_task(self._client_to_upstream())
        to_client = asyncio.create_task(self._upstream_to_client())
        pumps = self._pumps = {to_upstream, to_client}
        self._to_client = to_client
        failure: BaseException | None = None
        ended = self._upstream.ended
        if ended is not None:
            ended.add_done_callback(self._upstream_over)
        try:
            done, pending = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            failure = _failure(done)
            if failure is None and to_upstream in pending:
                to_upstream.cancel()  # the upstream ended and the client was told: stop reading it
            elif failure is None and pending and self._upstream_gone:
                # The upstream ended, found by a send to it: its pump still delivers what came before its
                # close, then the close, as the client takes them in (not the client's close: see above).
                with contextlib.suppress(TimeoutError):
                    async with self._for_the_client():
                        await asyncio.wait(pending)
            elif failure is None and pending:
                # The client side ended with a close the upstream was sent: its pump sees it through.
                await asyncio.wait(pending, timeout=self._close_timeout)
        finally:
            try:
                await self._wind_down(pumps, failure)
            except asyncio.CancelledError:  # cancelled again meanwhile: wound down again, to the end
                await _to_the_end(self._wind_down(pumps, failure))
                raise
        return self.stats

    async def _wind_down(self, pumps: set[asyncio.Task[None]], failure: BaseException | None) -> None:
        """Stop both pumps and close what is still open: the end of every run, bounded by the close timeouts.

        Cut short by a cancellation, it may run again: each step is idempotent, and the codes the
        first run chose (``_ending``) are the ones the second sends."""
        for pump in pumps:
            pump.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        failure = failure or _failure(pumps)
        if (ended := self._upstream.ended) is not None:
            ended.remove_done_callback(self._upstream_over)  # (it holds this relay)
        # A cancelled pump keeps its CancelledError, whose traceback holds this relay's frames: a
        # reference cycle that kept both connections until a full collection.
        self._pumps, self._to_client = set(), None
        if self._ending is None:
            if failure is not None:
                logger.error("relay pump failed; closing both sides with 1011", exc_info=failure)
                self._ending = (1011, "gateway error", 1011, "gateway error")
            elif not self._closing:  # cancelled from outside, or both pumps ended without a close
                self._ending = (1011, "gateway error", 1001, "gateway error")
        if self._ending is not None:
            await self._shut(*self._ending)
        await self._close_upstream(1000, "", quiet=True)  # idempotent: closed on return, whatever happened
        if self._look_due is not None:  # (no wait is under way by now: already cancelled)
            self._look_due.cancel()
            self._look_due = None
        self.finished.set()

    def start(self, task: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``task()`` while the connection is relayed: from :meth:`run` on, or at once if running."""
        self._background.start(task)

    def abort(self) -> None:
        """Stop relaying now; :meth:`run` then closes both sides with 1011/1001 and returns."""
        for pump in self._pumps:
            pump.cancel()

    def client_closed_at_shutdown(self, disconnect: Message) -> None:
        """The server closed the client (SIGTERM: 1012) and queued ``disconnect``: mirror it upstream now.

        The client pump reads that disconnect only once its send to the upstream returns: an upstream that
        reads nothing held it until its keepalive failed (40 s by default), past the server's graceful
        timeout, which cancelled the relay (uvicorn's ERROR) and left the close to the drain's 1001. The
        upstream's close, bounded by ``close_timeout``, ends that send; the pump's later read is a no-op.
        """
        self._shutdown_told = True  # the client has the server's 1012: closing, though the task has yet to run
        if self._pumps and not self._closing:
            self._background.spawn(self._client_left(disconnect))

    @property
    def closing(self) -> bool:
        """True once the connection's close is under way: the gateway's own, the client's (or the server's
        1012 to it at shutdown, mirrored by a task not yet run), the client gone, or the upstream's close in
        (its messages before it may still be on their way to the client)."""
        ended = self._upstream.ended
        return self._closing or not self._client_open or self._shutdown_told or (ended is not None and ended.done())

    async def close(self, client_code: int, client_reason: str, upstream_code: int, upstream_reason: str) -> bool:
        """Close both sides on the gateway's own initiative (a no-op once closing has started).

        Bounded in time (see ``close_timeout``); a failing upstream close is logged, not raised.

        Returns:
            True when this call began the close, decided before its first wait; False when closing
            had begun already (nothing done).
        """
        if self._closing:
            return False
        self._closing = True
        stats = self.stats
        stats.closed_by, stats.close_code, stats.close_reason = "gateway", client_code, client_reason
        await self._close_client(client_code, client_reason)
        await self._close_upstream(upstream_code, upstream_reason)
        return True

    async def _shut(self, client_code: int, client_reason: str, upstream_code: int, upstream_reason: str) -> None:
        """Close what is still open, whatever state the pumps left: the end of a failed or cancelled run."""
        if not self._closing:
            self._closing = True
            stats = self.stats
            stats.closed_by, stats.close_code, stats.close_reason = "gateway", client_code, client_reason
        try:
            await self._close_client(client_code, client_reason, patient=False)
        except Exception as exc:  # the failure that brought us here is logged already
            logger.debug("closing the client failed: %r", exc)
        await self._close_upstream(upstream_code, upstream_reason, quiet=True)

    async def _close_upstream(self, code: int, reason: str, *, quiet: bool = False) -> None:
        """Close the upstream, bounded; never raises (``quiet``: log at DEBUG only).

        Connectors bound their own closing handshake by ``close_timeout`` (and drop the connection
        then); twice that is the safety net for one that does not, without cutting theirs short.
        """
        try:
            async with asyncio.timeout(2 * self._close_timeout):
                await self._upstream.close(code, reason)
        except (OSError, UpstreamClosed) as exc:  # already gone: nothing left to close
            logger.debug("closing the upstream: %r", exc)
        except TimeoutError:
            logger.log(logging.DEBUG if quiet else logging.INFO,
                       "the upstream's close did not return in %g s; given up", 2 * self._close_timeout)  # fmt: skip
        except Exception:
            logger.log(logging.DEBUG if quiet else logging.ERROR, "closing the upstream failed", exc_info=True)

    async def send_to_client(self, data: Data) -> bool:
        """Send a message of the gateway's own to the client (management); False once it is closing."""
        if not self._client_open:
            return False
        await self._behind_the_send()
        if not self._client_open:  # closed meanwhile (mypy takes it for open, as before the await)
            return False  # type: ignore[unreachable]
        try:
            await self._send(_send_message(data))
        except _CLIENT_OVER as exc:
            logger.debug("the client's side is over: %r", exc)
            return False
        return True

    async def send_to_upstream(self, data: Data) -> bool:
        """Send a message of the gateway's own to the upstream (an error reply); False once closing."""
        if self._closing:
            return False
        try:
            await self._upstream.send(data)
        except UpstreamClosed:
            return False
        return True

    async def _close_client(self, code: int, reason: str, *, patient: bool = True) -> None:
        """Send the client its close frame, behind what is still on its way to it: bounded by the close wait
        (``patient``), or by ``close_timeout`` flat (a failed or cancelled run's close)."""
        if self._client_open:
            self._client_open = False
            self._drop_held()
            with contextlib.suppress(*_CLIENT_OVER, TimeoutError):  # the client is gone or closed, or not reading
                async with self._for_the_client() if patient else asyncio.timeout(self._close_timeout):
                    await self._behind_the_send()
                    message: Message = {
                        "type": "websocket.close",
                        "code": wire_code(code),
                        "reason": wire_reason(reason),
                    }
                    await self._send(message)

    async def _behind_the_send(self) -> None:
        """Wait for the upstream pump's send to the client under way, if any: what the gateway sends the client
        goes behind it, never beside it. uvicorn's legacy ``websockets`` asserts against a second send waiting
        for a client that reads nothing (its drain's AssertionError: a policy's close, a kick, the watchdog's
        close to a slow client failed the relay, logged at ERROR with a traceback)."""
        while self._sending:
            if self._sent is None or self._sent.is_set():
                self._sent = asyncio.Event()
            await self._sent.wait()

    @contextlib.asynccontextmanager
    async def _for_the_client(self) -> AsyncIterator[None]:
        """As ``asyncio.timeout(close_timeout)``, but the client gets another ``close_timeout`` at each look
        at which it took in some of what waits for it since the last, within the bounds of
        :class:`.close_wait.CloseWait` (one wait per relay, however many wait on it at once; a wait that
        begins after one ended starts its looks afresh, its count of looks and bytes kept). Without
        ``client_progress``, ``close_timeout`` flat. Raises ``TimeoutError`` when the wait ends."""
        async with asyncio.timeout(None) as timer:
            self._waiting.append(timer)
            try:
                if self._look_due is None:
                    probe = self._client_progress
                    taken = probe() if probe is not None else 0
                    if self._close_wait is None:
                        self._close_wait = CloseWait(taken, self._max_size)
                    else:
                        self._close_wait.again(taken)
                    self._look_due = asyncio.get_running_loop().call_later(self._close_timeout, self._look)
                yield
            finally:
                self._waiting.remove(timer)
                if not self._waiting and self._look_due is not None:
                    self._look_due.cancel()
                    self._look_due = None

    def _look(self) -> None:
        """``close_timeout`` after the close wait began, or after its last look: on, or over for every waiter."""
        self._look_due = None
        probe, wait, loop = self._client_progress, self._close_wait, asyncio.get_running_loop()
        if probe is not None and wait is not None and wait.goes_on(probe()):
            self._look_due = loop.call_later(self._close_timeout, self._look)
            return
        for timer in self._waiting:
            if not timer.expired():  # (one a look before ended is on its way out)
                timer.reschedule(loop.time())

    async def _client_to_upstream(self) -> None:
        receive, send_upstream, stats, max_size, per_turn = (
            self._receive,
            self._upstream.send,
            self.stats,
            self._max_size,
            MESSAGES_PER_TURN,
        )
        sizes = stats.sizes_in
        # None on a direction without message policies: the loop then only pays for this test.
        process = self._inbound.process if self._inbound is not None else None
        share_ends = INFLATED_PER_TURN  # bytes_in at which this turn's share ends, whatever the count
        while True:
            message = await receive()
            if message["type"] == "websocket.receive":
                text: str | None = message.get("text")
                if text is not None:
                    data: str | bytes = text
                    size = len(text) if text.isascii() else len(text.encode())
                else:
                    data = message.get("bytes") or b""
                    size = len(data)
                if size > max_size:
                    await self.close(1009, "message too big", 1001, "client message too big")
                    return
                stats.messages_in += 1
                stats.bytes_in += size
                if not stats.messages_in % per_turn or stats.bytes_in >= share_ends:
                    # A share per loop turn: receive() does not wait while messages are queued. By bytes too:
                    # each costs its size to send (to compress again), and 1 KB compressed is 1 MB here.
                    share_ends = stats.bytes_in + INFLATED_PER_TURN
                    await asyncio.sleep(0)
                if text is None:
                    stats.binary_in += 1
                    stats.binary_bytes_in += size
                sizes[size.bit_length()] += 1
                if process is not None:
                    if self._closing:
                        continue  # closing: only the client's disconnect matters now
                    try:
                        forward = await process(data, size)
                    except CloseConnection as close:
                        await self.close(close.code, close.detail, close.peer_code, close.peer_reason)
                        return
                    if forward is None or self._closing:
                        continue  # dropped, or the connection started closing meanwhile
                    data = forward
                try:
                    await send_upstream(data)
                except UpstreamClosed:
                    # The other pump reports how the upstream ended, once it delivered what came before.
                    self._upstream_gone = not self._closing
                    return
            elif message["type"] == "websocket.disconnect":
                await self._client_left(message)
                return

    async def _client_left(self, message: Message) -> None:
        self._client_open = False
        self._drop_held()
        if message.get(TOO_BIG):  # the server refused a message over the limit: as the pump below does
            # The client is closed already, with the server's reason ("frame exceeds limit of 1000 bytes"):
            # the access line, span and metrics record that one, not words it never received.
            reason = message.get("reason") or "message too big"
            await self.close(1009, reason, 1001, "client message too big")
            return
        if not self._closing:
            self._closing = True
            code, reason = message.get("code", 1005), message.get("reason") or ""
            if message.get(SERVER_SHUTDOWN):  # the server sent the client its 1012: mirrored upstream
                self.stats.closed_by, self.stats.close_code, self.stats.close_reason = "gateway", code, reason
                await self._close_upstream(code, reason)
                return
            if message.get(CLIENT_STALLED):  # the server dropped a client that read nothing: as the splice
                self.stats.closed_by, self.stats.close_code, self.stats.close_reason = (
                    "gateway", 1006, "client read nothing"
                )  # fmt: skip
                await self._close_upstream(1001, "client went away")
                return
            if client_vanished(message):
                code, reason = 1006, ""
            self.stats.closed_by, self.stats.close_code, self.stats.close_reason = "client", code, reason
            # Set before the upstream's close starts: a waiter runs once this task waits, its close frame sent.
            self.client_over.set()
            if code == 1006:
                await self._close_upstream(1001, "client went away")
            else:
                await self._close_upstream(wire_code(code), wire_reason(reason))

    def _drop_held(self) -> None:
        """The client is closed to messages: one a policy step holds for it has nowhere to go. Its step is
        cancelled (the message not counted as sent) and the upstream pump drains on to the upstream's close.
        Left waiting, the pump read nothing behind it: the upstream's answer to its close frame, sent at once,
        stayed unread until ``close_timeout`` cut the handshake (the upstream dropped, the access line 2 s late
        with ``close_timeout`` 1; a delay of a minute behind it)."""
        if self._holding:
            self._cut_upstream_pump()

    def _cut_upstream_pump(self) -> None:
        """Cancel the upstream pump to cut the client off, what is left read and dropped: once. A second cut
        before the pump runs again (the server's 1012 comes twice in one turn at shutdown: its queued
        disconnect and ``client_closed_at_shutdown``) was a second cancellation, which the pump takes for the
        relay's end: it stopped reading, and the upstream's close answer was left unread to close_timeout."""
        pump = self._to_client
        if pump is not None and not pump.done() and not self._cutting:
            self._cutting = True
            pump.cancel()

    def _upstream_over(self, _: object) -> None:
        """The upstream's close is in (or its connection lost) before the relay closes: its pump may still be
        sending the client what came before it."""
        if not self._closing and self._pumps:
            self._close_read = asyncio.Event()  # here: the pump may read the close before the task starts
            self._background.spawn(self._deliver_before_the_close(self._close_read))

    async def _deliver_before_the_close(self, read: asyncio.Event) -> None:
        """What the upstream sent before its close, still on its way to the client (its connector's queue), is
        waited for as the close frame behind it: within the close wait, or the client is cut off there (the
        upstream pump's send dropped, the rest read and dropped to the close, which is recorded as ever).

        Before, only the server's stall rule (``ping_timeout``) bounded that delivery, and nothing did with the
        keepalive off: a client that read nothing held the connection, its lease and both sockets for as long
        as it lived (the upstream's close answered at once: 20 s and counting in the test, then killed)."""
        try:
            async with self._for_the_client():
                await read.wait()
        except TimeoutError:
            if not read.is_set():
                self._cut_upstream_pump()

    async def _upstream_to_client(self) -> None:
        while True:
            try:
                await self._deliver_to_client()
                return
            except asyncio.CancelledError:
                if not self._cutting:
                    raise
                self._cutting = False
                task = asyncio.current_task()
                if task is not None and task.uncancel() > 0:
                    raise  # cancelled besides (the relay's end): that one stands
                self._client_open = False  # cut off: what is left is read and dropped

    async def _deliver_to_client(self) -> None:
        recv, send, stats, per_turn = self._upstream.recv, self._send, self.stats, MESSAGES_PER_TURN
        sizes, last = stats.sizes_out, len(stats.sizes_out) - 1
        process = self._outbound.process if self._outbound is not None else None
        share_ends = INFLATED_PER_TURN  # bytes_out at which this turn's share ends (see _client_to_upstream)
        while True:
            try:
                data = await recv()
            except UpstreamClosed as closed:
                if self._close_read is not None:
                    self._close_read.set()
                await self._upstream_ended(closed)
                return
            if not self._client_open:
                continue  # closing: drain the upstream so its close frame can arrive
            message: Message
            if isinstance(data, str):
                size = len(data) if data.isascii() else len(data.encode())
                message = {"type": "websocket.send", "text": data}
            else:
                size = len(data)
                stats.binary_out += 1
                stats.binary_bytes_out += size
                message = {"type": "websocket.send", "bytes": data}
            stats.messages_out += 1
            stats.bytes_out += size
            if not stats.messages_out % per_turn or stats.bytes_out >= share_ends:
                share_ends = stats.bytes_out + INFLATED_PER_TURN
                await asyncio.sleep(0)  # a share per loop turn: recv() does not wait while messages are queued
            try:
                sizes[size.bit_length()] += 1
            except IndexError:  # connectors enforce max_message_size; never fail a pump over a counter
                sizes[last] += 1
            if process is not None:
                self._holding = True
                try:
                    forward = await process(data, size)
                except CloseConnection as close:
                    self._holding = False  # (before the close: not a hold to cut)
                    await self._upstream_offended(close)
                    continue
                except asyncio.CancelledError:
                    stats.uncount_out(size, isinstance(data, bytes))  # held by a step as the relay ended or cut it
                    raise
                finally:
                    self._holding = False
                if forward is None:
                    continue  # dropped by a policy: counted (its decision, not a message lost)
                if forward is not data:  # transformed
                    message = _send_message(forward)
            # The client left, or was closed, while this waited (a policy step, the turn's end above: a send
            # then came after the relay's own close, which uvicorn's stock protocols raise for).
            # (mypy takes it for open, as before the awaits.)
            if not self._client_open:
                stats.uncount_out(size, isinstance(data, bytes))  # type: ignore[unreachable]  # never sent
                continue
            self._sending = True
            try:
                await send(message)
            except _CLIENT_OVER as exc:
                stats.uncount_out(size, isinstance(data, bytes))  # not sent: only what the client was sent counts
                self._client_open = False  # the client is gone or closed; its pump will see the disconnect
                logger.debug("the client's side is over: %r", exc)
                if isinstance(exc, RuntimeError):  # the server closed it (an OSError: lost, its disconnect queued)
                    self._background.spawn(self._disconnect_due())
            finally:
                self._sending = False
                if self._sent is not None:
                    self._sent.set()

    async def _disconnect_due(self) -> None:
        """A send found the client's side over: the client pump reads its disconnect within ``close_timeout``,
        or the client is taken for gone (1001 upstream). uvicorn queues one as it closes a client for a bad
        frame, but at its keepalive timeout only once the transport's buffer is flushed, which a client that
        reads nothing never lets happen: the relay drained the upstream, and held the client's lease, for as
        long as the upstream lived."""
        await asyncio.sleep(self._close_timeout)
        if not self._closing:
            await self._client_left({"type": "websocket.disconnect", "code": 1006})

    async def _upstream_ended(self, closed: UpstreamClosed) -> None:
        if self._closing:
            return
        self._closing = True
        stats = self.stats
        if isinstance(closed, UpstreamStalled):
            # The gateway dropped an upstream that read nothing (an in-process app, or a network upstream
            # whose keepalive ping could not be written): its close, as the splice records
            # a stall (passive health does not count it), the client told as for a vanished upstream.
            stats.closed_by, stats.close_code, stats.close_reason = "gateway", 1011, closed.reason
            await self._close_client(1011, "upstream connection failed")
        elif not closed.by_peer and closed.code in _PROTOCOL_ERRORS:
            # The gateway failed the upstream for a protocol error it found (1002, a text message not
            # UTF-8: 1007): its close, recorded as the splice and the frame relay record it (passive
            # health counts it); it said "closed by upstream with 1007", the upstream's code it never sent.
            stats.closed_by, stats.close_code, stats.close_reason = "gateway", 1011, "upstream connection failed"
            await self._close_client(1011, "upstream connection failed")
        elif closed.by_peer or closed.code != 1009:
            # The upstream closed, or vanished (1006: its TCP connection lost, a keepalive timeout), or
            # an in-process app failed (1011, as the server it runs in records an application's error).
            reason = closed.reason
            if closed.by_peer and self._sent_credentials is not None:  # not to the client, nor to the log
                reason = self._sent_credentials.scrubbed(reason)
            stats.closed_by, stats.close_code, stats.close_reason = "upstream", closed.code, reason
            if closed.messages_sent is not None:  # what it was sent before its close, not what came after
                stats.messages_in_at_close = closed.messages_sent
            code = wire_code(closed.code) if closed.by_peer else 1011
            await self._close_client(code, reason if closed.by_peer else "upstream connection failed")
        else:  # the upstream sent a message over the size limit and was closed with 1009
            stats.closed_by, stats.close_code, stats.close_reason = (
                "gateway",
                1001,
                "upstream message too big",
            )
            await self._close_client(1001, "upstream message too big")

    async def _upstream_offended(self, close: CloseConnection) -> None:
        """Close the client now and the upstream in the background, while its pump drains it."""
        if self._closing:
            return
        self._closing = True
        stats = self.stats
        stats.closed_by, stats.close_code, stats.close_reason = "gateway", close.peer_code, close.peer_reason
        await self._close_client(close.peer_code, close.peer_reason)
        self._background.spawn(self._close_upstream(wire_code(close.code), wire_reason(close.detail)))


async def _to_the_end(wind_down: Coroutine[Any, Any, None]) -> None:
    """Run ``wind_down`` to its end, whatever cancels the caller meanwhile (re-raised once it is over).

    A second cancellation while the relay wound down (a shutdown that cancels again, a cancel scope
    that cancels every await) cut it short: the upstream was never closed (its socket and keepalive
    kept for as long as the upstream answered pings) and ``finished`` never set (a drain waited its
    whole grace for it). The wind-down is bounded by the close timeouts, so waiting for it is too.
    Only a wind-down cancelled once comes here: its task costs ~8 us of CPU (a trivial coroutine:
    10.3 us through here, 2.0 us awaited directly), not paid by every connection.
    """
    task = asyncio.ensure_future(wind_down)
    cancelled = False
    while True:
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                raise
            cancelled = True  # the wind-down goes on: awaited again
            continue
        if cancelled:
            raise asyncio.CancelledError
        return


def _send_message(data: Data) -> Message:
    if isinstance(data, str):
        return {"type": "websocket.send", "text": data}
    return {"type": "websocket.send", "bytes": data}


def _failure(pumps: set[asyncio.Task[None]]) -> BaseException | None:
    """The exception a finished pump raised (a bug, not a close), if any."""
    for pump in pumps:
        if pump.done() and not pump.cancelled() and pump.exception() is not None:
            return pump.exception()
    return None


__all__ = ["Relay"]
