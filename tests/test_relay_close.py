"""The relay's close sequences, fast: pure asyncio, a fake upstream and a fake ASGI client, no sockets.

Every test runs on a :class:`Relay` without message policies and on one with a pass-through policy
each way (so both pumps run their processing step). Each test checks the codes each side got,
that ``run()`` returned (a hang fails at ``HANG`` seconds; the relay's close timeout is
``CLOSE_TIMEOUT``), that no task outlived it, and how many ERROR lines it logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from typing import Any, Literal

import pytest

from asgi_ws_gateway._types import Message
from asgi_ws_gateway.handshake.context import HandshakeContext
from asgi_ws_gateway.messages.context import ConnectionContext, MessageHandler, WsMessage
from asgi_ws_gateway.messages.pipeline import MessagePolicySet
from asgi_ws_gateway.relay.close_codes import CLIENT_STALLED, TOO_BIG, client_vanished
from asgi_ws_gateway.relay.close_wait import CLOSE_WAIT_LOOKS
from asgi_ws_gateway.relay.pumps import Relay
from support.policies import context
from support.relay_fakes import CLOSE_TIMEOUT, HANG, Boom, FakeClient, FakeUpstream


class _PassThrough:
    """A message policy that changes nothing: it makes both pumps run their processing step."""

    name = "pass"

    def attach(self, connection: ConnectionContext, direction: str) -> MessageHandler | None:
        def handle(message: WsMessage) -> None:
            return None

        return handle


RelayKind = Literal["relay", "with-policies"]


@pytest.fixture(params=["relay", "with-policies"])
def kind(request: pytest.FixtureRequest) -> RelayKind:
    value: RelayKind = request.param
    return value


def make_relay(kind: RelayKind, client: FakeClient, upstream: FakeUpstream, *, progress: bool = False) -> Relay:
    """``progress``: the relay is given the client's count of what it took in, as the gateway's protocol gives it."""
    told = client.progress if progress else None
    if kind == "relay":
        return Relay(client.receive, client.send, upstream, max_message_size=100, close_timeout=CLOSE_TIMEOUT,
                     client_progress=told)  # fmt: skip
    policies = MessagePolicySet([_PassThrough()], [_PassThrough()])
    handshake = HandshakeContext("chat", context("/ws/x").request)
    return Relay(client.receive, client.send, upstream, max_message_size=100, close_timeout=CLOSE_TIMEOUT,
                 policies=policies, handshake=handshake, client_progress=told)  # fmt: skip


@pytest.fixture
def errors(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[], list[str]]]:
    """The ERROR lines logged so far, as ``logger: message``."""
    caplog.set_level(logging.DEBUG, logger="asgi_ws_gateway")
    yield lambda: [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]


async def run_to_end(relay: Relay, act: Callable[[], Any] | None = None) -> None:
    """Run ``relay`` until it returns (after ``act()`` once it started); assert no task outlived it."""
    before = asyncio.all_tasks()
    task = asyncio.create_task(relay.run())
    await asyncio.sleep(0)  # the pumps start
    if act is not None:
        act()
    async with asyncio.timeout(HANG):
        await task
    assert relay.finished.is_set()
    for _ in range(3):  # let done callbacks run
        await asyncio.sleep(0)
    assert asyncio.all_tasks() - before == set()


# -- normal closes: the mirrored code, no ERROR -------------------------------------------------------


@pytest.mark.parametrize(("code", "reason", "upstream_gets"), [
    (1000, "bye", (1000, "bye")),
    (1001, "tab closed", (1001, "tab closed")),
    (4000, "app", (4000, "app")),
    (1005, "", (1000, "")),
    (1009, "too big here", (1009, "too big here")),
])  # fmt: skip
async def test_client_closes_first(kind: RelayKind, errors: Any, code: int, reason: str,
                                   upstream_gets: tuple[int, str]) -> None:  # fmt: skip
    """The client's code goes upstream (1005 as 1000); the client is sent nothing more."""
    client, upstream = FakeClient(), FakeUpstream()
    relay = make_relay(kind, client, upstream)
    client.says("hi")
    client.closes_with(code, reason)
    await run_to_end(relay)
    assert upstream.sent == ["hi"]
    assert upstream.closes[0] == upstream_gets
    assert client.closes == []
    assert (relay.stats.closed_by, relay.stats.close_code) == ("client", code)
    assert errors() == []


@pytest.mark.parametrize("disconnect", [
    {"type": "websocket.disconnect", "code": 1006},  # uvicorn's legacy websockets implementation
    {"type": "websocket.disconnect", "code": 1005},  # uvicorn's wsproto and websockets-sansio
])  # fmt: skip
async def test_client_vanishing_gives_the_upstream_1001(kind: RelayKind, errors: Any, disconnect: Message) -> None:
    """A TCP drop, however the server reports it, is 1001 "client went away" upstream, recorded as 1006."""
    client, upstream = FakeClient(), FakeUpstream()
    relay = make_relay(kind, client, upstream)
    upstream.push("for the client")
    await run_to_end(relay, lambda: client.drops_tcp(disconnect))
    assert upstream.closes[0] == (1001, "client went away")
    assert (relay.stats.closed_by, relay.stats.close_code) == ("client", 1006)
    assert errors() == []


@pytest.mark.parametrize("kind_sent", ["websocket.send", "websocket.close"])
async def test_a_send_after_the_server_closed_the_client_is_the_clients_close(
    kind: RelayKind, errors: Any, kind_sent: str
) -> None:
    """uvicorn's stock protocols close a client themselves (a protocol error: 1002) and raise RuntimeError for
    a send before the relay read the disconnect they queued: the client's close, its code upstream, no ERROR
    (it was "relay pump failed" and 1011 both ways)."""
    client, upstream = FakeClient(faults={kind_sent: "closed"}), FakeUpstream()
    relay = make_relay(kind, client, upstream)

    if kind_sent == "websocket.send":
        await run_to_end(relay, lambda: upstream.push("for the client"))
    else:
        await run_to_end(relay, lambda: client.says("x" * 101))  # over max_message_size: the relay's close
    if kind_sent == "websocket.send":
        assert upstream.closes[0] == (1002, "invalid opcode")
        assert (relay.stats.closed_by, relay.stats.close_code, relay.stats.messages_out) == ("client", 1002, 0)
    else:
        assert upstream.closes[0] == (1001, "client message too big")
    assert errors() == []


async def test_a_send_after_the_server_closed_the_client_without_its_disconnect_ends_at_close_timeout(
    kind: RelayKind, errors: Any
) -> None:
    """uvicorn's keepalive timeout closes the client and queues its disconnect only once the transport is lost
    (never, while a client that reads nothing keeps its buffer full): the client is taken for gone after
    close_timeout, 1001 upstream (the relay drained the upstream for as long as it lived)."""
    client, upstream = FakeClient(faults={"websocket.send": "closed quietly"}), FakeUpstream()
    relay = make_relay(kind, client, upstream)
    await run_to_end(relay, lambda: upstream.push("for the client"))
    assert upstream.closes[0] == (1001, "client went away")
    assert (relay.stats.closed_by, relay.stats.close_code, relay.stats.messages_out) == ("client", 1006, 0)
    assert errors() == []


def test_close_frame_without_code_is_not_a_vanished_client() -> None:
    """A close frame with no status code comes with a reason key: it is a normal close."""
    assert not client_vanished({"type": "websocket.disconnect", "code": 1005, "reason": ""})
    assert not client_vanished({"type": "websocket.disconnect", "code": 1000})
    assert client_vanished({"type": "websocket.disconnect", "code": 1005})
    assert client_vanished({"type": "websocket.disconnect", "code": 1006, "reason": ""})


@pytest.mark.parametrize(("code", "reason", "client_gets"), [
    (1000, "done", (1000, "done")),
    (4001, "kicked", (4001, "kicked")),
    (1005, "", (1000, "")),
    (1011, "oops", (1011, "oops")),
])  # fmt: skip
async def test_upstream_closes_first(kind: RelayKind, errors: Any, code: int, reason: str,
                                     client_gets: tuple[int, str]) -> None:  # fmt: skip
    """The upstream's code goes to the client; the client pump is cancelled, not waited for."""
    client, upstream = FakeClient(), FakeUpstream()
    relay = make_relay(kind, client, upstream)
    upstream.push("last words")
    await run_to_end(relay, lambda: upstream.peer_closes(code, reason))
    assert client.messages == ["last words"]
    assert client.closes == [client_gets]
    assert errors() == []


# -- the close wait: a client taking in what waits for it is waited for, as the splice waits ------------

BACKLOG = 20
PACE = CLOSE_TIMEOUT / 5
"""Messages (or paces) that wait for a slow client: ``BACKLOG`` paces of ``PACE`` seconds each, several
``CLOSE_TIMEOUT`` in all, some taken in within each."""


async def test_a_slow_client_whose_pump_found_the_upstream_closed_gets_the_rest_and_its_code(
    kind: RelayKind, errors: Any
) -> None:
    """The upstream closes behind messages a client, sending as it reads, takes several ``close_timeout`` to
    take in: its pump's send finds the upstream closed first, and the upstream pump still delivers every
    message, then the upstream's code. That pump was cut ``close_timeout`` after the other ended, as for
    the client's close: 1011 ``gateway error`` after 1 of 20."""
    client, upstream = FakeClient(pace=PACE), FakeUpstream()
    relay = make_relay(kind, client, upstream, progress=True)
    for n in range(BACKLOG):
        upstream.push(f"backlog {n}")
    upstream.peer_closes(1000, "done")
    client.says("still here")  # its pump's send finds the upstream closed
    await run_to_end(relay)
    assert (len(client.messages), client.closes) == (BACKLOG, [(1000, "done")])
    assert (relay.stats.closed_by, relay.stats.close_code) == ("upstream", 1000)
    assert errors() == []


async def test_a_slow_client_gets_the_upstreams_close_frame_behind_its_backlog(kind: RelayKind, errors: Any) -> None:
    """The close frame waits behind what the server still holds for a client reading slowly, several
    ``close_timeout`` of it: it is sent. The relay gave up sending it at ``close_timeout``: the client read
    its backlog to the end and then EOF, no close frame."""
    client, upstream = FakeClient(pace=PACE, backlog=BACKLOG), FakeUpstream()
    relay = make_relay(kind, client, upstream, progress=True)
    await run_to_end(relay, lambda: upstream.peer_closes(1000, "done"))
    assert client.closes == [(1000, "done")]
    assert errors() == []


@pytest.mark.parametrize("pace", [HANG, PACE], ids=["takes-in-nothing", "unknown-progress"])
async def test_a_client_not_seen_taking_anything_in_is_still_cut_at_close_timeout(
    kind: RelayKind, errors: Any, pace: float
) -> None:
    """A client that takes in nothing of what waits for it after the upstream's close, or one the server
    does not tell the progress of, is cut at ``close_timeout`` (1011 ``gateway error``), not waited for."""
    client, upstream = FakeClient(pace=pace), FakeUpstream()
    relay = make_relay(kind, client, upstream, progress=pace == HANG)
    for n in range(BACKLOG):
        upstream.push(f"backlog {n}")
    upstream.peer_closes(1000, "done")
    client.says("still here")
    await run_to_end(relay)
    assert len(client.messages) < BACKLOG
    assert (relay.stats.closed_by, relay.stats.close_code) == ("gateway", 1011)
    assert errors() == []


async def test_a_client_that_takes_in_nothing_of_what_came_before_the_upstreams_close_is_cut(
    kind: RelayKind, errors: Any
) -> None:
    """The upstream closes behind messages a client that reads (and sends) nothing never takes in: its close
    is in, its pump still sending what came before it: the client is cut at ``close_timeout`` (nothing more
    sent to it), the upstream's close recorded. Only the server's stall rule (``ping_timeout``) bounded that
    send, and nothing with the keepalive off: ``run()`` never returned."""
    client, upstream = FakeClient(pace=HANG), FakeUpstream()
    relay = make_relay(kind, client, upstream, progress=True)
    for n in range(BACKLOG):
        upstream.push(f"backlog {n}")
    upstream.peer_closes(1000, "done")
    await run_to_end(relay)
    assert (len(client.messages), client.closes) == (0, [])
    assert (relay.stats.closed_by, relay.stats.close_code, relay.stats.close_reason) == ("upstream", 1000, "done")
    assert errors() == []


async def test_a_slow_client_gets_what_came_before_the_upstreams_close_and_its_close_frame(
    kind: RelayKind, errors: Any
) -> None:
    """The same backlog to a client that takes it in slowly (several ``close_timeout``), sending nothing: every
    message, then the upstream's close frame; the close wait goes on while it takes some in."""
    client, upstream = FakeClient(pace=PACE), FakeUpstream()
    relay = make_relay(kind, client, upstream, progress=True)
    for n in range(BACKLOG):
        upstream.push(f"backlog {n}")
    upstream.peer_closes(1000, "done")
    await run_to_end(relay)
    assert (len(client.messages), client.closes) == (BACKLOG, [(1000, "done")])
    assert errors() == []


async def test_a_client_taking_in_a_little_for_ever_is_cut_within_the_close_waits_looks(
    kind: RelayKind, errors: Any
) -> None:
    """A client that takes in a little within each ``close_timeout``, for ever: the close wait ends within
    ``CLOSE_WAIT_LOOKS`` looks, progress or not (``run()`` returns; a hang fails at ``HANG``)."""
    assert CLOSE_WAIT_LOOKS * CLOSE_TIMEOUT < HANG / 2
    client, upstream = FakeClient(pace=PACE, backlog=10**6), FakeUpstream()
    relay = make_relay(kind, client, upstream, progress=True)
    await run_to_end(relay, lambda: upstream.peer_closes(1000, "done"))
    assert client.closes == []  # its close frame never got past the backlog
    assert errors() == []


async def test_upstream_vanishing_gives_the_client_1011(kind: RelayKind, errors: Any) -> None:
    """Lost without a close frame: the client gets 1011 "upstream connection failed"."""
    client, upstream = FakeClient(), FakeUpstream()
    relay = make_relay(kind, client, upstream)
    await run_to_end(relay, upstream.vanish)
    assert client.closes == [(1011, "upstream connection failed")]
    assert (relay.stats.closed_by, relay.stats.close_code) == ("upstream", 1006)
    assert errors() == []


async def test_gateway_close_sends_each_side_its_code(kind: RelayKind, errors: Any) -> None:
    """``close()`` (idle, lifetime, drain, management): each side gets its own code."""
    client, upstream = FakeClient(), FakeUpstream()
    relay = make_relay(kind, client, upstream)

    def act() -> None:
        asyncio.get_running_loop().create_task(relay.close(1001, "idle timeout", 1012, "restart"))

    await run_to_end(relay, act)
    assert client.closes == [(1001, "idle timeout")]
    assert upstream.closes[0] == (1012, "restart")
    assert errors() == []


async def test_a_message_the_server_refused_as_too_big_is_recorded_with_the_reason_it_sent(
    kind: RelayKind, errors: Any
) -> None:
    """The server closed the client itself (its ``max_size``), with its own words: the access line, span and
    metrics record those, not "message too big", which the client never received (a hunter: the relay's
    signals disagreed with the client's close frame)."""
    client, upstream = FakeClient(), FakeUpstream()
    relay = make_relay(kind, client, upstream)
    client.drops_tcp({"type": "websocket.disconnect", "code": 1009, "reason": "frame exceeds limit of 100 bytes",
                      TOO_BIG: True})  # fmt: skip
    await run_to_end(relay)
    assert (relay.stats.closed_by, relay.stats.close_code) == ("gateway", 1009)
    assert relay.stats.close_reason == "frame exceeds limit of 100 bytes"
    assert upstream.closes[0] == (1001, "client message too big")
    assert errors() == []


async def test_a_client_the_server_dropped_as_stalled_is_the_gateways_close(kind: RelayKind, errors: Any) -> None:
    """The server protocol dropped a client that read nothing (the stall rule): recorded as the splice records
    it (the gateway's 1006, ``client read nothing``; passive health does not count it), the upstream 1001."""
    client, upstream = FakeClient(), FakeUpstream()
    relay = make_relay(kind, client, upstream)
    client.drops_tcp({"type": "websocket.disconnect", "code": 1006, CLIENT_STALLED: True})
    await run_to_end(relay)
    assert (relay.stats.closed_by, relay.stats.close_code, relay.stats.close_reason) == (
        "gateway", 1006, "client read nothing"
    )  # fmt: skip
    assert upstream.closes[0] == (1001, "client went away")
    assert errors() == []


async def test_oversize_client_message_is_1009_and_upstream_1001(kind: RelayKind, errors: Any) -> None:
    """The gateway's own close from inside a pump: the offender 1009, the other side 1001."""
    client, upstream = FakeClient(), FakeUpstream()
    relay = make_relay(kind, client, upstream)
    client.says("x" * 101)
    await run_to_end(relay)
    assert client.closes == [(1009, "message too big")]
    assert upstream.closes[0] == (1001, "client message too big")
    assert upstream.sent == []
    assert errors() == []


async def test_abort_closes_client_1011_and_upstream_1001(kind: RelayKind, errors: Any) -> None:
    """``abort()`` (a drain's stragglers): run() still closes both sides and returns."""
    client, upstream = FakeClient(), FakeUpstream()
    relay = make_relay(kind, client, upstream)
    await run_to_end(relay, relay.abort)
    assert client.closes == [(1011, "gateway error")]
    assert upstream.closes[0] == (1001, "gateway error")
    assert errors() == []


async def test_cancelling_run_closes_both_sides_and_reraises(kind: RelayKind, errors: Any) -> None:
    """Cancellation from outside propagates, after both sides were closed and both pumps awaited."""
    client, upstream = FakeClient(), FakeUpstream()
    relay = make_relay(kind, client, upstream)
    before = asyncio.all_tasks()
    task = asyncio.create_task(relay.run())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(HANG):
            await task
    assert client.closes == [(1011, "gateway error")]
    assert upstream.closes[0] == (1001, "gateway error")
    assert asyncio.all_tasks() - before == set()
    assert errors() == []


# -- failures at each await point: both sides 1011, exactly one ERROR ------------------------------------

FAILED = (1011, "gateway error")


@pytest.mark.parametrize(("where", "act"), [
    ("upstream send", lambda c, u: c.says("hi")),
    ("upstream recv", lambda c, u: None),
    ("client receive", lambda c, u: None),
    ("client send", lambda c, u: u.push("to the client")),
])  # fmt: skip
async def test_a_failing_pump_closes_both_sides_1011_and_logs_once(
    kind: RelayKind, errors: Any, where: str, act: Callable[[FakeClient, FakeUpstream], None]
) -> None:
    """Either pump raising (a bug) ends the connection at once: 1011 both ways, one ERROR with the traceback."""
    side, point = where.split()
    client = FakeClient(faults={"receive": "raise"} if where == "client receive" else {})
    if where == "client send":
        client.faults["websocket.send"] = "raise"
    upstream = FakeUpstream(faults={point: "raise"} if side == "upstream" else {})
    relay = make_relay(kind, client, upstream)
    await run_to_end(relay, lambda: act(client, upstream))
    assert client.closes == [FAILED]
    assert upstream.closes[0] == FAILED
    assert errors() == ["asgi_ws_gateway.relay.pumps: relay pump failed; closing both sides with 1011"]
    assert (relay.stats.closed_by, relay.stats.close_code) == ("gateway", 1011)


async def test_a_connector_leaking_oserror_from_send_is_a_failure(kind: RelayKind, errors: Any) -> None:
    """``send`` must raise ``UpstreamClosed``; an ``OSError`` leaking out is a bug, handled as one."""
    client, upstream = FakeClient(), FakeUpstream(faults={"send": "oserror"})
    relay = make_relay(kind, client, upstream)
    await run_to_end(relay, lambda: client.says("hi"))
    assert client.closes == [FAILED]
    assert len(errors()) == 1


async def test_upstream_reset_while_paused_gives_the_client_1011(kind: RelayKind, errors: Any) -> None:
    """A send waiting on a full buffer, then the connection is lost mid-send: a clean 1011, no ERROR."""
    client, upstream = FakeClient(), FakeUpstream(paused=True)
    relay = make_relay(kind, client, upstream)
    client.says("fills the buffer")
    client.closes_with(1000)  # queued behind the blocked send: never read

    async def reset_once_blocked() -> None:
        while not upstream.sent:  # noqa: ASYNC110 - the fake has no event for it
            await asyncio.sleep(0)
        upstream.vanish()

    resetter = asyncio.create_task(reset_once_blocked())
    await run_to_end(relay)
    await resetter
    assert client.closes == [(1011, "upstream connection failed")]
    assert errors() == []


async def test_failing_upstream_close_after_the_client_left_logs_once(kind: RelayKind, errors: Any) -> None:
    """The upstream's close raising (a bug in a connector): logged once, run() still returns."""
    client, upstream = FakeClient(), FakeUpstream(faults={"close": "raise"})
    relay = make_relay(kind, client, upstream)
    client.closes_with(1000, "bye")
    await run_to_end(relay)
    assert upstream.closes[0] == (1000, "bye")
    assert errors() == ["asgi_ws_gateway.relay.pumps: closing the upstream failed"]


# -- hangs: bounded by the close timeout, never by the peer ---------------------------------------------


async def test_upstream_close_that_hangs_is_bounded(kind: RelayKind, errors: Any) -> None:
    """An upstream that never finishes its closing handshake: run() returns after the close timeout."""
    client, upstream = FakeClient(), FakeUpstream(faults={"close": "hang"})
    relay = make_relay(kind, client, upstream)
    client.closes_with(4000, "done")
    await run_to_end(relay)
    assert upstream.closes[0] == (4000, "done")
    assert errors() == []


async def test_upstream_recv_that_never_ends_after_the_client_left_is_cancelled(kind: RelayKind, errors: Any) -> None:
    """The upstream pump gets the close timeout to see the close through, then is cancelled."""
    client, upstream = FakeClient(), FakeUpstream(faults={"recv": "hang"})
    relay = make_relay(kind, client, upstream)
    client.closes_with(1000)
    await run_to_end(relay)
    assert upstream.closes[0] == (1000, "")
    assert errors() == []


async def test_client_receive_that_never_ends_after_the_upstream_closed_is_cancelled(
    kind: RelayKind, errors: Any
) -> None:
    """The upstream ended and the client was told: its pump is cancelled at once."""
    client, upstream = FakeClient(), FakeUpstream()
    client.faults["receive"] = "hang"
    relay = make_relay(kind, client, upstream)
    await run_to_end(relay, lambda: upstream.peer_closes(1000, "bye"))
    assert client.closes == [(1000, "bye")]
    assert errors() == []


async def test_client_close_that_hangs_is_bounded(kind: RelayKind, errors: Any) -> None:
    """Sending the client its close frame never completes: bounded too, and both sides still closed."""
    client, upstream = FakeClient(faults={"websocket.close": "hang"}), FakeUpstream()
    relay = make_relay(kind, client, upstream)
    await run_to_end(relay, lambda: upstream.peer_closes(1001, "restart"))
    assert upstream.closes == [(1000, "")]  # the final, idempotent close of an already-closed upstream
    assert errors() == []


# -- ConnectionContext.start(): background work of message policies -------------------------------------


class _StartsOnFirstMessage:
    """A message policy that starts background work when the first inbound message arrives."""

    name = "starter"

    def __init__(self, work: Callable[[ConnectionContext], Any]) -> None:
        self.work = work
        self.connections: list[ConnectionContext] = []

    def attach(self, connection: ConnectionContext, direction: str) -> MessageHandler | None:
        if direction != "inbound":
            return None
        self.connections.append(connection)

        def handle(message: WsMessage) -> None:
            if message.connection.stats.messages_in == 1:
                message.connection.start(lambda: self.work(message.connection))

        return handle


def _policy_relay(client: FakeClient, upstream: FakeUpstream, policy: Any) -> Relay:
    handshake = HandshakeContext("chat", context("/ws/x").request)
    return Relay(client.receive, client.send, upstream, max_message_size=100, close_timeout=CLOSE_TIMEOUT,
                 policies=MessagePolicySet([policy], []), handshake=handshake)  # fmt: skip


async def test_start_while_running_runs_at_once_and_is_cancelled_at_the_end(errors: Any) -> None:
    """Work started mid-connection runs while the connection is open, and does not outlive it."""
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def work(connection: ConnectionContext) -> None:
        await connection.send_to_client("from the background")
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    client, upstream = FakeClient(), FakeUpstream()
    relay = _policy_relay(client, upstream, _StartsOnFirstMessage(work))
    client.says("go")

    async def close_once_started() -> None:
        await started.wait()
        client.closes_with(1000)

    closer = asyncio.create_task(close_once_started())
    await run_to_end(relay)
    await closer
    assert client.messages == ["from the background"]
    assert cancelled.is_set()
    assert errors() == []


async def test_start_before_run_waits_for_run_and_after_the_end_is_ignored(errors: Any) -> None:
    """Queued until run() starts; once the connection is over there is nothing to start."""
    ran: list[str] = []

    async def work(label: str) -> None:
        ran.append(label)

    policy = _StartsOnFirstMessage(lambda c: work("unused"))
    client, upstream = FakeClient(), FakeUpstream()
    relay = _policy_relay(client, upstream, policy)
    (connection,) = policy.connections
    connection.start(lambda: work("before"))
    assert ran == []
    await run_to_end(relay, lambda: client.closes_with(1000))
    assert ran == ["before"]
    connection.start(lambda: work("after"))  # never called: no coroutine left un-awaited
    await asyncio.sleep(0)
    assert ran == ["before"]
    assert errors() == []


async def test_failing_background_work_is_logged_once_when_it_fails(errors: Any) -> None:
    """A background task's exception is reported as it happens, once; the connection goes on."""

    async def work(connection: ConnectionContext) -> None:
        raise Boom("background failed")

    client, upstream = FakeClient(), FakeUpstream()
    relay = _policy_relay(client, upstream, _StartsOnFirstMessage(work))
    client.says("go")

    async def close_once_logged() -> None:
        while not errors():  # noqa: ASYNC110 - the log has no event
            await asyncio.sleep(0)
        client.says("still relayed")
        client.closes_with(1000)

    closer = asyncio.create_task(close_once_logged())
    await run_to_end(relay)
    await closer
    assert upstream.sent == ["go", "still relayed"]
    assert errors() == ["asgi_ws_gateway.relay.policy_tasks: message policy task failed"]
