"""The splice checks the upstream's permessage-deflate answer against the client's offers (RFC 7692 §7).

It checked parameter names and the 8 to 15 range only: an upstream answering ``server_max_window_bits=15``
to an offer of 10, or dropping an offered ``server_no_context_takeover``, got its 101 relayed; the
client failed the negotiation (1006 in the access log), the upstream leg was held until the closing
handshake timed out, and no backend failure was counted. Such an answer is a 502 now, like any
other 101 the client may not get.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.exceptions import NegotiationError
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.headers import build_extension
from websockets.typing import ExtensionName, ExtensionParameter

from asgi_ws_gateway.passthrough.raw_upstream import _answer_problem
from support.clients import connect, expect_status
from support.gateway import PASSTHROUGH, ProbedGateway
from support.rawhttp import accept_upstream, ws_frame
from support.rawws import next_frame
from support.servers import UvicornServer
from support.upstream import UpstreamServer

_DEFLATE = ExtensionName("permessage-deflate")

# (offer as the client sends it, the upstream's answer): answers refused since the fix...
_NEWLY_REFUSED = [
    pytest.param(
        "permessage-deflate; server_max_window_bits=10",
        "permessage-deflate; server_max_window_bits=15",
        False,
        id="server-bits-over-offered",
    ),
    pytest.param(
        "permessage-deflate; server_max_window_bits=10",
        "permessage-deflate",
        False,
        id="server-bits-offered-not-answered",
    ),
    pytest.param(
        "permessage-deflate; server_no_context_takeover",
        "permessage-deflate",
        False,
        id="server-no-context-takeover-dropped",
    ),
    pytest.param(
        "permessage-deflate; client_max_window_bits=10",
        "permessage-deflate; client_max_window_bits=12",
        False,
        id="client-bits-over-offered",
    ),
    pytest.param(
        "permessage-deflate; server_no_context_takeover, permessage-deflate; server_max_window_bits=10",
        "permessage-deflate; server_max_window_bits=15",
        False,
        id="no-offer-matches",
    ),
    pytest.param(
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=15",
        False,
        id="invalid-offer-accepted",
    ),
]
# ... answers refused before it...
_REFUSED_BEFORE = [
    pytest.param(
        "permessage-deflate", "permessage-deflate; client_max_window_bits=12", False, id="client-bits-not-offered"
    ),
    pytest.param(
        "permessage-deflate; client_max_window_bits",
        "permessage-deflate; client_max_window_bits",
        False,
        id="client-bits-answered-without-value",
    ),
    pytest.param(
        "permessage-deflate",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        False,
        id="duplicate-parameter",
    ),
    pytest.param("permessage-deflate", "permessage-deflate; client_no_context_takeover=1", False, id="flag-with-value"),
]
# ... and answers allowed.
_ALLOWED = [
    pytest.param(
        "permessage-deflate; server_max_window_bits=10",
        "permessage-deflate; server_max_window_bits=10",
        True,
        id="server-bits-as-offered",
    ),
    pytest.param(
        "permessage-deflate; server_max_window_bits=10",
        "permessage-deflate; server_max_window_bits=9",
        True,
        id="server-bits-under-offered",
    ),
    pytest.param(
        "permessage-deflate", "permessage-deflate; server_max_window_bits=12", True, id="server-bits-not-offered"
    ),
    pytest.param(
        "permessage-deflate",
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        True,
        id="flags-not-offered",
    ),
    pytest.param(
        "permessage-deflate; server_no_context_takeover",
        "permessage-deflate; server_no_context_takeover",
        True,
        id="server-no-context-takeover-kept",
    ),
    pytest.param(
        "permessage-deflate; client_max_window_bits",
        "permessage-deflate; client_max_window_bits=8",
        True,
        id="client-bits-offered-without-value",
    ),
    pytest.param(
        'permessage-deflate; client_max_window_bits="10"',
        "permessage-deflate; client_max_window_bits=10",
        True,
        id="client-bits-quoted-in-offer",
    ),
    pytest.param(
        "permessage-deflate; server_no_context_takeover, permessage-deflate; server_max_window_bits=10",
        "permessage-deflate; server_max_window_bits=10",
        True,
        id="second-offer-matches",
    ),
]


@pytest.mark.parametrize(("offer", "answer", "allowed"), _NEWLY_REFUSED + _REFUSED_BEFORE + _ALLOWED)
def test_an_answer_is_checked_against_the_offers(offer: str, answer: str, allowed: bool) -> None:
    """RFC 7692 §7.1: the answer must fit one offer, parameter by parameter."""
    assert (_answer_problem([answer], offer) is None) is allowed


def _websockets_accepts(factory: ClientPerMessageDeflateFactory, answer: list[ExtensionParameter]) -> bool:
    try:
        factory.process_response_params(answer, [])
    except NegotiationError:
        return False
    return True


_OFFER_BITS = st.none() | st.integers(9, 15)  # websockets' client offers no client_max_window_bits=8
_ANSWER_PARAMETER = st.tuples(
    st.sampled_from(
        [
            "server_no_context_takeover",
            "client_no_context_takeover",
            "server_max_window_bits",
            "client_max_window_bits",
            "x-level",
        ]
    ),
    st.none() | st.sampled_from([str(bits) for bits in range(7, 17)]) | st.just("010"),
)


@given(
    server_no_context_takeover=st.booleans(),
    client_no_context_takeover=st.booleans(),
    server_max_window_bits=st.none() | st.integers(8, 15),
    client_max_window_bits=_OFFER_BITS | st.just(True),
    answer=st.lists(_ANSWER_PARAMETER, max_size=4),
)
def test_an_answer_passes_exactly_when_a_websockets_client_accepts_it(
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: int | None,
    client_max_window_bits: int | bool | None,
    answer: list[ExtensionParameter],
) -> None:
    """The check agrees with websockets' own client on every single offer it makes (but for an
    answered ``client_max_window_bits=8``: valid by the RFC, which websockets' zlib cannot use)."""
    factory = ClientPerMessageDeflateFactory(
        server_no_context_takeover, client_no_context_takeover, server_max_window_bits, client_max_window_bits
    )
    offer = build_extension([(_DEFLATE, factory.get_request_params())])
    allowed = _answer_problem([build_extension([(_DEFLATE, answer)])], offer) is None
    if ("client_max_window_bits", "8") in answer and allowed:
        return
    assert allowed is _websockets_accepts(factory, answer)


def _answering(
    extensions: bytes, held: asyncio.Future[bool]
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A 101 with ``extensions`` as its Sec-WebSocket-Extensions; ``held``: the gateway kept the leg open.
        A close frame relayed is answered and the connection closed, as a server does (unanswered, a client's
        close waited out the 2 s)."""
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            await accept_upstream(reader, writer, extensions=extensions)
            try:
                async with asyncio.timeout(2):
                    with contextlib.suppress(asyncio.IncompleteReadError):  # EOF at once when the gateway refuses
                        while True:
                            opcode, payload = await next_frame(reader)
                            if opcode == 0x8:
                                writer.write(ws_frame(0x8, payload[:2], mask=False))
                                break
                held.set_result(False)
            except TimeoutError:
                held.set_result(True)
        writer.close()

    return handle


def _config(url: str) -> dict[str, Any]:
    return {"apis": [{"name": "s", "path": "/s", "upstreams": [url], "passthrough": True}]}


@pytest.mark.parametrize(("offer", "answer", "allowed"), _NEWLY_REFUSED)
async def test_an_answer_the_offer_does_not_allow_is_a_502(offer: str, answer: str, allowed: bool) -> None:
    """The 101 was relayed, the client failed the negotiation and the upstream leg stayed open:
    now the client gets a 502, the upstream's connection is dropped and its backend counts a failure."""
    held: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    listener = await asyncio.start_server(_answering(answer.encode(), held), "127.0.0.1", 0)
    async with listener:
        port = listener.sockets[0].getsockname()[1]
        gateway = ProbedGateway(_config(f"ws://127.0.0.1:{port}/"))
        with UvicornServer(gateway, ws=PASSTHROUGH) as server:
            status, _headers, _body = await expect_status(
                server.url("/s"), compression=None, additional_headers={"Sec-WebSocket-Extensions": offer}
            )
            async with asyncio.timeout(5):
                assert await held is False
    assert status == 502
    assert gateway.gateway._apis["s"].pool.backends[0].failures == 1


# What a websockets client offers (one factory each, or two offers) and what the raw upstream answers.
_GOOD = [
    pytest.param([{"server_max_window_bits": 10}], b"permessage-deflate; server_max_window_bits=10", id="server-bits"),
    pytest.param(
        [{"server_no_context_takeover": True}],
        b"permessage-deflate; server_no_context_takeover",
        id="server-no-context-takeover",
    ),
    pytest.param([{}], b"permessage-deflate; client_max_window_bits=12; client_no_context_takeover", id="client-side"),
    pytest.param(
        [{"server_no_context_takeover": True}, {"server_max_window_bits": 11}],
        b"permessage-deflate; server_max_window_bits=11",
        id="second-offer",
    ),
]


@pytest.mark.parametrize(("offers", "answer"), _GOOD)
async def test_an_answer_the_offer_allows_still_opens(offers: list[dict[str, Any]], answer: bytes) -> None:
    """The client's own library accepts the answer the gateway relays, and the backend counts no failure."""
    listener = await asyncio.start_server(
        _answering(answer, asyncio.get_running_loop().create_future()), "127.0.0.1", 0
    )
    async with listener:
        port = listener.sockets[0].getsockname()[1]
        gateway = ProbedGateway(_config(f"ws://127.0.0.1:{port}/"))
        with UvicornServer(gateway, ws=PASSTHROUGH) as server:
            factories = [ClientPerMessageDeflateFactory(**offer) for offer in offers]
            async with await connect(server.url("/s"), compression=None, extensions=factories) as ws:
                assert ws.response is not None
                assert ws.response.headers["Sec-WebSocket-Extensions"] == answer.decode()
    assert gateway.gateway._apis["s"].pool.backends[0].failures == 0


_REAL_OFFERS = [
    pytest.param({}, id="default"),
    pytest.param({"server_max_window_bits": 10}, id="server-bits"),
    pytest.param({"server_no_context_takeover": True}, id="server-no-context-takeover"),
    pytest.param({"client_max_window_bits": 11, "client_no_context_takeover": True}, id="client-side"),
    pytest.param(
        {"server_max_window_bits": 9, "server_no_context_takeover": True, "client_max_window_bits": None},
        id="all-server",
    ),
]


@pytest.mark.parametrize("offer", _REAL_OFFERS)
async def test_a_websockets_upstream_answer_to_each_offer_passes(offer: dict[str, Any]) -> None:
    """A real websockets server's answer to each offer is relayed, and messages flow compressed."""
    with UpstreamServer() as upstream:
        gateway = ProbedGateway(_config(upstream.url("/echo")))
        with UvicornServer(gateway, ws=PASSTHROUGH) as server:
            factory = ClientPerMessageDeflateFactory(**offer)
            async with await connect(server.url("/s"), compression=None, extensions=[factory]) as ws:
                assert ws.response is not None
                assert ws.response.headers["Sec-WebSocket-Extensions"].startswith("permessage-deflate")
                await ws.send("hello " * 100)
                assert await ws.recv() == "hello " * 100
    assert gateway.gateway._apis["s"].pool.backends[0].failures == 0
