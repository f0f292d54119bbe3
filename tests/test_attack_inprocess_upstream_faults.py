"""Attack: a faulty in-process (``asgi:``) upstream is bounded as a network upstream is.

Real uvicorn, real websockets clients, apps that misbehave on purpose. Before:

* an app that accepted and never called ``receive()`` held the connection for ever once the client
  had sent two messages (the relay's client pump waited on the full one-slot queue, never reading
  the client's disconnect): no keepalive or stall rule as for a network upstream;
* an app calling ``receive()`` in a loop after its disconnect (or ``send()`` after it raised) got
  its answer without suspending: the event loop, every connection of the worker, was held for good;
* an app that swallowed ``CancelledError`` held the handshake's 504 and the connection's end (and its
  access line) for as long as it ran;
* a close code no close frame may carry reached the client as 1011 (or 1005 as 1000) while the access
  line recorded it as sent, and a 500-byte reason was cut and relayed (uvicorn raises in the app);
* an accept whose headers carried ``Sec-WebSocket-Protocol`` or ``Sec-WebSocket-Extensions`` was
  accepted with them dropped (a network upstream's 101 with one the gateway did not offer is a 502);
* then the stall rule dropped apps that were alive: one sending all along but not reading (a push
  feed; a streamer reading its next prompt after the answer, the client's heartbeats queued) got
  1011 a keepalive window after the client's second message, and so did one whose sends waited on a
  client reading slowly (the queue toward the app held one message; the window ran from the first
  wait, whatever the app did meanwhile); an app busy for a moment with a few messages sent to it was
  dropped too, and the gateway's close dropped the message queued for a busy app;
* an app that raised ``SystemExit`` or ``KeyboardInterrupt`` (uvicorn catches both from an
  application) stopped the worker's event loop, every connection with it; one raising a
  ``CancelledError`` of its own (awaiting a task that was cancelled) before its accept was a 504 at
  ``connect_timeout``, and after it left the connection open for ever with nothing to relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway._types import Message, Receive, Scope, Send
from asgi_ws_gateway.standalone import not_found
from support.access import access_line, warnings_after_start
from support.apps import websocket_only
from support.clients import connect, expect_close, expect_status
from support.gateway import PASSTHROUGH
from support.rawhttp import handshake
from support.servers import UvicornFactory, UvicornServer

FAST: dict[str, Any] = {"ping_interval": 0.2, "ping_timeout": 0.3, "close_timeout": 0.3, "connect_timeout": 0.5}
INPROCESS = "asgi_ws_gateway.upstream.inprocess_connection"
QUEUED = 4  # inprocess_connection.TO_APP_QUEUE, a network upstream's max_queue: what waits for an app without a stall
SPIN_CAP = 10_000  # an app past this many answers spun (the old code); it stops so the test ends


def _serve(uvicorn_server: UvicornFactory, app: Any, **api: Any) -> UvicornServer:
    config = {
        "apis": [{"name": "inner", "path": "/ws/{room}", "upstreams": [{"app": websocket_only(app)}], **FAST, **api}]
    }
    return uvicorn_server(WebSocketGateway(not_found, config=config), ws=PASSTHROUGH, proxy_headers=False)  # as run


async def _until(check: Any) -> None:
    for _ in range(200):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("never happened")


@pytest.mark.parametrize("client", ["stays", "vanishes"])
async def test_an_app_that_reads_nothing_is_dropped_as_a_stalled_upstream(
    uvicorn_server: UvicornFactory, caplog: pytest.LogCaptureFixture, client: str
) -> None:
    """The client streaming to it gets 1011 (or, gone, its connection still ends); the app is cancelled;
    one INFO line; the access line records the gateway's close with 1011."""
    caplog.set_level(logging.INFO)
    ended: list[str] = []

    async def deaf(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            ended.append("cancelled")
            raise

    server = _serve(uvicorn_server, deaf)
    ws = await connect(server.url("/ws/a"), ping_interval=None)
    for _ in range(QUEUED + 1):  # the last waits on the app: the relay no longer reads the client
        await ws.send(b"x" * 4096)
    if client == "stays":
        assert await expect_close(ws) == (1011, "upstream connection failed")
    else:
        assert ws.transport is not None
        ws.transport.abort()
    line = await access_line(caplog)
    assert "closed by gateway with 1011" in line, line
    messages = [r.getMessage() for r in caplog.records]
    assert any("in-process upstream of API 'inner' read nothing" in m for m in messages), messages
    assert warnings_after_start(caplog) == []
    await _until(lambda: ended == ["cancelled"])


async def test_an_app_without_a_keepalive_window_is_not_dropped(uvicorn_server: UvicornFactory) -> None:
    """``ping_timeout: null`` keeps a network upstream that reads nothing: the in-process one too."""
    took: asyncio.Queue[Message] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    async def slow(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await asyncio.sleep(1)  # well past the 0.5 s window the other test uses
        while True:
            message = await receive()
            loop.call_soon_threadsafe(took.put_nowait, message)
            if message["type"] == "websocket.disconnect":
                return

    server = _serve(uvicorn_server, slow, ping_timeout=None)
    async with await connect(server.url("/ws/a")) as ws:
        for n in range(3):
            await ws.send(str(n))
        async with asyncio.timeout(10):
            assert [(await took.get()).get("text") for _ in range(3)] == ["0", "1", "2"]


async def test_receive_after_the_disconnect_waits_instead_of_spinning(uvicorn_server: UvicornFactory) -> None:
    """The app gets one disconnect; its next receive() waits until the connection's end cancels it."""
    seen: list[str] = []

    async def looping(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        try:
            while len(seen) < SPIN_CAP:
                message = await receive()
                seen.append(message["type"])
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    server = _serve(uvicorn_server, looping)
    async with await connect(server.url("/ws/a")):
        pass
    await _until(lambda: seen[-1:] == ["cancelled"] or len(seen) >= SPIN_CAP)
    assert seen == ["websocket.disconnect", "cancelled"]


async def test_send_after_the_connection_ended_raises_once_then_waits(uvicorn_server: UvicornFactory) -> None:
    """An app retrying its send in a loop is told once; its next send waits until it is cancelled."""
    failures: list[str] = []

    async def retrying(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        assert (await receive())["type"] == "websocket.disconnect"
        try:
            while len(failures) < SPIN_CAP:
                try:
                    await send({"type": "websocket.send", "text": "again"})
                except OSError as exc:
                    failures.append(type(exc).__name__)
        except asyncio.CancelledError:
            failures.append("cancelled")
            raise

    server = _serve(uvicorn_server, retrying)
    async with await connect(server.url("/ws/a")):
        pass
    await _until(lambda: failures[-1:] == ["cancelled"] or len(failures) >= SPIN_CAP)
    assert failures == ["AppDisconnected", "cancelled"]


@pytest.mark.parametrize("stage", ["handshake", "close"])
async def test_an_app_that_swallows_its_cancellation_is_left_running_with_a_warning(
    uvicorn_server: UvicornFactory, caplog: pytest.LogCaptureFixture, stage: str
) -> None:
    """The client gets its 504 (or its connection ends, with its access line) all the same."""
    caplog.set_level(logging.INFO)
    release = {"now": False}

    async def stubborn(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        if stage == "close":
            await send({"type": "websocket.accept"})
            await receive()
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if release["now"]:  # the test is over: the server's shutdown cancels it for good
                    raise

    server = _serve(uvicorn_server, stubborn)
    try:
        async with asyncio.timeout(10):  # a hang guard, not a measure
            if stage == "handshake":
                assert (await expect_status(server.url("/ws/a")))[0] == 504
            else:
                async with await connect(server.url("/ws/a")):
                    pass
                assert "closed by client with 1000" in await access_line(caplog)
            await _until(lambda: any(r.name == INPROCESS and r.levelno == logging.WARNING for r in caplog.records))
    finally:
        release["now"] = True
    (warning,) = [r.getMessage() for r in caplog.records if r.name == INPROCESS and r.levelno >= logging.WARNING]
    assert "API 'inner'" in warning and "keeps running" in warning, warning


BAD_CLOSES: dict[str, dict[str, Any]] = {
    **{f"code-{code}": {"code": code} for code in (999, 1004, 1005, 1006, 1015, 2999, 5000, 65535, 0, 70000, -1)},
    "reason-124-bytes": {"code": 4000, "reason": "r" * 124},
    "reason-500-bytes": {"code": 1000, "reason": "é" * 250},
}


@pytest.mark.parametrize("close", list(BAD_CLOSES.values()), ids=list(BAD_CLOSES))
async def test_a_close_no_frame_may_carry_raises_in_the_app(
    uvicorn_server: UvicornFactory, caplog: pytest.LogCaptureFixture, close: dict[str, Any]
) -> None:
    """As uvicorn's websockets raises: the client gets 1011, the access line the 1011 the client got."""
    caplog.set_level(logging.INFO)
    raised: list[BaseException] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        try:
            await send({"type": "websocket.close", **close})
        except Exception as exc:
            raised.append(exc)
            raise

    server = _serve(uvicorn_server, app, connect_timeout=10)  # not FAST's 0.5 s: a loaded CI missed it (504)
    async with await connect(server.url("/ws/a")) as ws:
        assert await expect_close(ws) == (1011, "upstream connection failed")
    assert "closed by upstream with 1011" in await access_line(caplog)
    assert len(raised) == 1 and isinstance(raised[0], ValueError)


async def test_the_largest_close_a_frame_holds_is_relayed(uvicorn_server: UvicornFactory) -> None:
    reason = "é" * 61 + "r"  # 123 bytes

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 4999, "reason": reason})

    server = _serve(uvicorn_server, app)
    async with await connect(server.url("/ws/a")) as ws:
        assert await expect_close(ws) == (4999, reason)


@pytest.mark.parametrize(
    "header",
    [(b"sec-websocket-protocol", b"chat"), (b"Sec-WebSocket-Extensions", b"permessage-deflate")],
    ids=["protocol", "extensions"],
)
async def test_an_accept_carrying_negotiation_headers_is_502_as_from_a_network_upstream(
    uvicorn_server: UvicornFactory, header: tuple[bytes, bytes]
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept", "headers": [header]})
        await receive()

    server = _serve(uvicorn_server, app)
    assert (await expect_status(server.url("/ws/a"), subprotocols=["chat"]))[0] == 502


RAISED: dict[str, type[BaseException]] = {
    "SystemExit": SystemExit,
    "KeyboardInterrupt": KeyboardInterrupt,
    "own-CancelledError": asyncio.CancelledError,
}


@pytest.mark.parametrize("raised", list(RAISED.values()), ids=list(RAISED))
@pytest.mark.parametrize("accepted", [False, True], ids=["before-accept", "after-accept"])
async def test_whatever_the_app_raises_is_its_failure_alone(
    uvicorn_server: UvicornFactory, raised: type[BaseException], accepted: bool
) -> None:
    """A 502 at once, or 1011 to its client; the worker goes on serving (another connection echoes)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        if scope["path"] == "/ws/fine":
            await send({"type": "websocket.accept"})
            message = await receive()
            await send({"type": "websocket.send", "text": message["text"]})
            await receive()
            return
        if accepted:
            await send({"type": "websocket.accept"})
            await receive()
        raise raised()

    server = _serve(uvicorn_server, app, connect_timeout=30, close_timeout=30)  # no timeout answers for it
    if accepted:
        async with await connect(server.url("/ws/a")) as ws:
            await ws.send("go")
            assert await expect_close(ws) == (1011, "upstream connection failed")
    else:
        assert (await expect_status(server.url("/ws/a")))[0] == 502  # open_timeout: 5 s
    async with await connect(server.url("/ws/fine")) as ws:
        await ws.send("still here")
        assert await ws.recv() == "still here"


async def test_an_app_that_returns_without_closing_is_an_upstream_gone_without_a_close_frame(
    uvicorn_server: UvicornFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Its client is told what a network upstream's is when its TCP connection ends without a close
    frame (it got 1011 with no reason); the access line records the upstream's 1006."""
    caplog.set_level(logging.INFO)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})

    server = _serve(uvicorn_server, app)
    async with await connect(server.url("/ws/a")) as ws:
        assert await expect_close(ws) == (1011, "upstream connection failed")
    assert "closed by upstream with 1006" in await access_line(caplog)


def _ticks(count: int) -> list[str]:
    return [f"tick {n}" for n in range(count)]


@pytest.mark.parametrize("sent", [3, 2 * QUEUED], ids=["a-few", "past-the-queue"])
async def test_an_app_that_sends_all_along_without_reading_is_not_stalled(
    uvicorn_server: UvicornFactory, caplog: pytest.LogCaptureFixture, sent: int
) -> None:
    """A push feed (a tick every 0.05 s for 2 s, four keepalive windows) never calls receive(): each of
    its sends restarts the window, and the client gets every tick, then the feed's 1000."""
    caplog.set_level(logging.INFO)

    async def feed(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        for tick in _ticks(40):
            await send({"type": "websocket.send", "text": tick})
            await asyncio.sleep(0.05)
        await send({"type": "websocket.close", "code": 1000})

    server = _serve(uvicorn_server, feed)
    async with await connect(server.url("/ws/a")) as ws:
        for n in range(sent):  # past the queue, the client's messages wait on the feed all along
            await ws.send(f"hello {n}")
        got = []
        async with asyncio.timeout(10):  # a hang guard, not a measure
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    got.append(await ws.recv())
    assert got == _ticks(40)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
    assert "closed by upstream with 1000" in await access_line(caplog)


async def test_a_streamer_reading_its_next_prompt_after_the_answer_is_not_stalled(
    uvicorn_server: UvicornFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """An LLM-style streamer answers a prompt with 32 tokens over 1.6 s, then reads on; the client's
    heartbeat every 0.05 s queues meanwhile. Every token arrives, then the answer to the next prompt."""
    caplog.set_level(logging.INFO)

    async def streamer(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            prompt = message.get("text", "")
            if prompt.startswith("prompt"):
                for n in range(32):
                    await send({"type": "websocket.send", "text": f"{prompt} token {n}"})
                    await asyncio.sleep(0.05)
                await send({"type": "websocket.send", "text": f"{prompt} done"})

    async def heartbeat(ws: Any) -> None:
        while True:
            await ws.send('{"type":"ping"}')
            await asyncio.sleep(0.05)

    server = _serve(uvicorn_server, streamer)
    async with await connect(server.url("/ws/a")) as ws:
        beating = asyncio.create_task(heartbeat(ws))
        try:
            async with asyncio.timeout(10):  # a hang guard, not a measure
                for prompt in ("prompt 1", "prompt 2"):
                    await ws.send(prompt)
                    got = [await ws.recv() for _ in range(33)]
                    assert got == [*(f"{prompt} token {n}" for n in range(32)), f"{prompt} done"]
        finally:
            beating.cancel()
    assert "closed by client with 1000" in await access_line(caplog)
    assert not [r for r in caplog.records if r.name == INPROCESS], [r.getMessage() for r in caplog.records]


async def test_an_app_whose_sends_wait_on_a_slow_client_is_not_stalled(
    uvicorn_server: UvicornFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The client reads slowly (a message every 0.1 s) for three keepalive windows while the app sends
    16 MiB: the app's sends wait on the gateway (the client's backpressure), its own messages wait on the
    app; once the client reads on at full speed, it gets everything, then the app's 1000. (A client
    reading nothing that long is dropped: the relay's stall rule has the API's ``ping_timeout``.)"""
    caplog.set_level(logging.INFO)
    chunk, count = b"x" * 256 * 1024, 64
    sent = [0]

    async def producer(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        for _ in range(count):
            await send({"type": "websocket.send", "bytes": chunk})
            sent[0] += 1
        await send({"type": "websocket.close", "code": 1000})

    server = _serve(uvicorn_server, producer, max_message_size=len(chunk))
    async with await connect(
        server.url("/ws/a"), max_queue=1, compression=None
    ) as ws:  # no deflate: 16 MiB on the wire
        for n in range(2 * QUEUED):  # they wait on the app, whose sends wait on this client
            await ws.send(f"hello {n}")
        received = 0
        for _ in range(15):  # three keepalive windows, the client reading slowly
            assert await ws.recv() == chunk
            received += 1
            await asyncio.sleep(0.1)
        assert sent[0] < count, "the client's buffers took it all: the app's sends never waited"
        async with asyncio.timeout(20):  # a hang guard, not a measure
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    assert await ws.recv() == chunk
                    received += 1
    assert received == count
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
    assert "closed by upstream with 1000" in await access_line(caplog)


async def test_a_few_messages_wait_for_a_busy_app_as_for_a_network_upstream(uvicorn_server: UvicornFactory) -> None:
    """An app busy elsewhere for two keepalive windows (neither receiving nor sending) while the
    client sends three messages: they wait for it, as a network upstream's library takes them in."""
    loop = asyncio.get_running_loop()
    resume = asyncio.Event()

    async def busy(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await asyncio.sleep(1)  # two windows: no receive(), no send()
        for _ in range(QUEUED - 1):
            message = await receive()
            await send({"type": "websocket.send", "text": f"echo {message.get('text')}"})
        loop.call_soon_threadsafe(resume.set)
        await receive()

    server = _serve(uvicorn_server, busy)
    async with await connect(server.url("/ws/a")) as ws:
        for n in range(QUEUED - 1):
            await ws.send(f"m{n}")
        async with asyncio.timeout(10):  # a hang guard, not a measure
            assert [await ws.recv() for _ in range(QUEUED - 1)] == [f"echo m{n}" for n in range(QUEUED - 1)]
            await resume.wait()


async def test_the_gateways_close_reaches_the_app_after_what_was_queued_for_it(
    uvicorn_server: UvicornFactory,
) -> None:
    """A client that sends three messages and closes while the app is busy: the app reads all three,
    then the client's close, as a network upstream reads what came before the close frame."""
    took: list[Message] = []
    done = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def busy(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await asyncio.sleep(0.1)  # under the keepalive window: busy, not stalled
        while not took or took[-1]["type"] != "websocket.disconnect":
            took.append(await receive())
        loop.call_soon_threadsafe(done.set)

    server = _serve(uvicorn_server, busy)
    async with await connect(server.url("/ws/a")) as ws:
        for n in range(3):
            await ws.send(f"m{n}")
    async with asyncio.timeout(5):  # a hang guard, not a measure
        await done.wait()
    assert [m.get("text", m["type"]) for m in took] == ["m0", "m1", "m2", "websocket.disconnect"]
    assert took[-1]["code"] == 1000


async def test_an_app_that_closes_reads_its_own_close_echoed(uvicorn_server: UvicornFactory) -> None:
    """As a network upstream's close is echoed to it (and uvicorn's app reads the client's echo): its next
    ``receive()`` is a disconnect with its own code and reason, not the gateway's 1000."""
    after: list[Message] = []
    done = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def closing(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 4001, "reason": "bye"})
        after.append(await receive())
        loop.call_soon_threadsafe(done.set)

    server = _serve(uvicorn_server, closing)
    async with await connect(server.url("/ws/a")) as ws:
        assert await expect_close(ws) == (4001, "bye")
    async with asyncio.timeout(5):  # a hang guard, not a measure
        await done.wait()
    assert after == [{"type": "websocket.disconnect", "code": 4001, "reason": "bye"}]


async def test_an_app_deciding_on_the_handshake_when_the_client_leaves_reads_a_disconnect(
    uvicorn_server: UvicornFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The gateway's protocol cancels a handshake whose client left: the app, not yet decided, reads a
    disconnect (1006), as a network upstream's app reads its connection lost when the gateway's
    connect is cancelled. It was left waiting for ever, its task and all it held with it."""
    read: list[Message] = []
    started, done = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()

    async def deciding(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()  # websocket.connect; no answer yet (a slow look-up)
        loop.call_soon_threadsafe(started.set)
        read.append(await receive())
        loop.call_soon_threadsafe(done.set)

    server = _serve(uvicorn_server, deciding, connect_timeout=60)
    _, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(handshake("/ws/a"))
    await writer.drain()
    async with asyncio.timeout(10):
        await started.wait()
    writer.close()
    async with asyncio.timeout(10):  # a hang guard, not a measure (connect_timeout is 60 s)
        await done.wait()
    assert read == [{"type": "websocket.disconnect", "code": 1006, "reason": ""}]
    await asyncio.sleep(0.2)  # the app's task ends on the server's loop
    gc.collect()  # an unread exception of the handshake nobody waits for is logged now
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_an_app_that_returns_once_cancelled_at_connect_timeout_is_a_504_without_an_error(
    uvicorn_server: UvicornFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """It cleans up and returns when cancelled: the handshake's outcome it left behind, which no one
    waited for any more, was logged as an ERROR ("Future exception was never retrieved")."""

    async def slow(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(60)  # a look-up that never answers

    server = _serve(uvicorn_server, slow)
    assert (await expect_status(server.url("/ws/a")))[0] == 504
    await asyncio.sleep(0.2)  # the app's task ends on the server's loop
    gc.collect()  # an unread exception is logged when its future is collected
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
