"""The Redis pipe's wire format (``state/redis_pipe.py``), without a server: the commands it packs
are redis-py's bytes, and each reply is read whole or not at all, however the reads split it."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError, NoScriptError, ResponseError

from asgi_ws_gateway.state.redis_pipe import Script, _parse

SCRIPT = Script("return {KEYS[1], ARGV[1]}")

REPLIES: list[tuple[bytes, Any]] = [
    (b":1\r\n", 1),
    (b":-42\r\n", -42),
    (b"*3\r\n:1\r\n:99999\r\n:0\r\n", [1, 99999, 0]),  # a limit script's decision
    (b"*0\r\n", []),
    (b"*-1\r\n", None),
    (b"$3\r\nabc\r\n", b"abc"),
    (b"$0\r\n\r\n", b""),
    (b"$4\r\na\r\nb\r\n", b"a\r\nb"),
    (b"$-1\r\n", None),
    (b"+OK\r\n", b"OK"),
    (b"*4\r\n$1\r\na\r\n:7\r\n*2\r\n:3\r\n$-1\r\n+QUEUED\r\n", [b"a", 7, [3, None], b"QUEUED"]),
    (b"*2\r\n:1\r\n*1\r\n:2\r\n", [1, [2]]),
]


@pytest.mark.parametrize(("wire", "reply"), REPLIES)
def test_a_reply_is_read_whole_once_all_of_it_is_there(wire: bytes, reply: Any) -> None:
    """Every prefix is incomplete (None); the whole is the reply, and what follows it is left."""
    for cut in range(len(wire)):
        assert _parse(wire[:cut], 0) is None, wire[:cut]
    assert _parse(wire, 0) == (reply, len(wire))
    assert _parse(b"xx" + wire + b":5\r\n", 2) == (reply, 2 + len(wire))


def test_error_replies_are_redis_pys_exceptions() -> None:
    parsed = _parse(b"-NOSCRIPT No matching script\r\n", 0)
    assert parsed is not None and isinstance(parsed[0], NoScriptError)
    parsed = _parse(b"*2\r\n:1\r\n-ERR wrong\r\n", 0)
    assert parsed is not None and isinstance(parsed[0][1], ResponseError) and str(parsed[0][1]) == "wrong"


@pytest.mark.parametrize("wire", [b"?1\r\n", b":x\r\n", b"*2\r\n:1\r\n:y\r\n", b"$z\r\nab\r\n", b"*q\r\n"])
def test_what_is_not_resp_is_a_protocol_error(wire: bytes) -> None:
    with pytest.raises(ConnectionError, match="Protocol error"):
        _parse(wire, 0)


@pytest.mark.parametrize(
    ("keys", "args"),
    [([], []), (["k"], [3, 60000, "member"]), (["a", "b:{c}"], [b"\x00\xff", "é\udc80", -1, 0, 12345678901234])],
)
def test_a_command_is_packed_as_redis_py_packs_it(keys: list[str], args: list[Any]) -> None:
    """EVALSHA and EVAL with keys and arguments: the bytes redis-py's connection would send."""
    packer = Connection(encoding_errors="surrogatepass")
    for full, head in ((False, ("EVALSHA", SCRIPT.sha)), (True, ("EVAL", SCRIPT.source))):
        expected = b"".join(packer.pack_command(*head, len(keys), *keys, *args))
        assert SCRIPT.command(keys, args, full=full) == expected


class _Wire:
    """A transport that keeps what is written (the pipe's connection writes its commands to it)."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def abort(self) -> None:
        self.aborted = True


STREAM: list[tuple[bytes, Any]] = [
    (b"*3\r\n:1\r\n:99999\r\n:0\r\n", [1, 99999, 0]),  # a rate limit's decision
    (b"*4\r\n:0\r\n:0\r\n:-1500\r\n:1767225600\r\n", [0, 0, -1500, 1767225600]),  # a quota's
    (b":5\r\n", 5),  # an integer right after an array of integers: not one of its items
    (b"*1\r\n:7\r\n", [7]),
    (b"*9\r\n" + b":1\r\n" * 9, [1] * 9),
    (b"*10\r\n" + b":2\r\n" * 10, [2] * 10),  # more items than the one-match reading takes
    (b"*2\r\n:1\r\n$1\r\na\r\n", [1, b"a"]),  # an array that is not integers only
    (b"*2\r\n:+1\r\n:3\r\n", [1, 3]),  # an item the one match does not take, read item by item as before
    (b"*0\r\n", []),
    (b"*3\r\n:1\r\n:2\r\n:3\r\n", [1, 2, 3]),
]


@pytest.mark.parametrize("kept", [0, 1, 3])
async def test_replies_in_a_stream_go_to_their_calls_in_order_however_the_reads_cut_it(kept: int) -> None:
    """The connection's reading (integer arrays read by one match, other replies by ``_parse``): each
    call gets its own reply whatever two reads the stream is cut into, the first ``kept`` replies
    already read before the cut."""
    from asgi_ws_gateway.state.redis_pipe import _Connection

    wire = b"".join(data for data, _ in STREAM)
    start = sum(len(data) for data, _ in STREAM[:kept])
    for cut in range(start, len(wire) + 1):
        connection = _Connection(timeout=60)
        transport = _Wire()
        connection.connection_made(transport)  # type: ignore[arg-type]
        futures = [connection.call(b"PING") for _ in STREAM]
        if start:
            connection.data_received(wire[:start])
        connection.data_received(wire[start:cut])
        connection.data_received(wire[cut:])
        assert [future.result() for future in futures] == [reply for _, reply in STREAM], cut
        assert not transport.aborted and not connection.closed
        connection.close(ConnectionError("done"))


async def test_a_reply_too_many_or_not_resp_closes_the_connection_and_fails_the_calls_left() -> None:
    from asgi_ws_gateway.state.redis_pipe import _Connection

    for wire in (b"*3\r\n:1\r\n:2\r\n:3\r\n*1\r\n:1\r\n", b"*3\r\n:1\r\n:2\r\n:3\r\n?x\r\n"):
        connection = _Connection(timeout=60)
        transport = _Wire()
        connection.connection_made(transport)  # type: ignore[arg-type]
        first = connection.call(b"PING")
        if wire.endswith(b"?x\r\n"):
            second = connection.call(b"PING")
        connection.data_received(wire)
        assert first.result() == [1, 2, 3]
        assert transport.aborted and connection.closed
        if wire.endswith(b"?x\r\n"):
            with pytest.raises(ConnectionError, match="Protocol error"):
                second.result()
