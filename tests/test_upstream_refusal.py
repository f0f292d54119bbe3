"""Pure logic: ``HeldRefusal`` holds a refusal back and hands it over with its body cut, whatever the
reads; everything else passes as it comes. What it hands over is read with websockets' own parser."""

from __future__ import annotations

from collections.abc import Generator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.http11 import Response
from websockets.streams import StreamReader

from asgi_ws_gateway.errors import RELAYED_STATUSES
from asgi_ws_gateway.upstream.refusal import MAX_REFUSAL_BODY, HeldRefusal, is_refusal

HEAD = b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nContent-Type: text/plain\r\n"
BODY = bytes(i % 251 for i in range(MAX_REFUSAL_BODY + 5000))


def _chunked(body: bytes, size: int = 999) -> bytes:
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


ANSWERS = {
    "length": HEAD + b"Content-Length: %d\r\n\r\n" % len(BODY) + BODY,
    "chunked": HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + _chunked(BODY),
    "short": HEAD + b"Content-Length: 5\r\n\r\nhello",
    "empty": HEAD + b"Content-Length: 0\r\n\r\n",
}


def _parsed(data: bytes) -> Response:
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    parser: Generator[None, None, Response] = Response.parse(reader.read_line, reader.read_exact, reader.read_to_eof)
    try:
        next(parser)
    except StopIteration as done:
        response: Response = done.value
        return response
    raise AssertionError("the handed-over response is not complete")


def _feed(held: HeldRefusal, answer: bytes, cuts: list[int]) -> bytes:
    out, start = b"", 0
    for cut in [*sorted(cuts), len(answer)]:
        out += held.feed(answer[start:cut])
        start = max(start, cut)
    return out


@pytest.mark.parametrize("kind", list(ANSWERS))
@given(cuts=st.lists(st.integers(0, len(ANSWERS["chunked"])), max_size=6))
def test_a_refusal_is_handed_over_once_cut_and_framed_by_its_length(kind: str, cuts: list[int]) -> None:
    answer = ANSWERS[kind]
    held = HeldRefusal()
    out = _feed(held, answer, [c for c in cuts if c <= len(answer)])
    assert held.settled
    response = _parsed(out)
    expected = {"length": BODY, "chunked": BODY, "short": b"hello", "empty": b""}[kind][:MAX_REFUSAL_BODY]
    assert (response.status_code, response.body) == (429, expected)
    assert response.headers.get_all("Retry-After") == ["7"]
    assert "Transfer-Encoding" not in response.headers
    assert response.headers.get_all("Content-Length") == [str(len(expected))]


def test_a_body_that_ends_with_the_connection_is_handed_over_at_eof() -> None:
    held = HeldRefusal()
    assert held.feed(HEAD + b"\r\nnot much") == b""
    response = _parsed(held.eof())
    assert (response.status_code, response.body) == (429, b"not much")
    assert held.eof() == b""  # once


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n",  # the handshake's answer: at once
        b"HTTP/1.1 302 Found\r\nLocation: /x\r\n\r\n",  # no client gets it: websockets reads it as before
        b"HTTP/1.1 403 Forbidden\nContent-Length: 0\n\n",  # bare LF: websockets refuses it at once
        b"HTTP/1.1 403 Forbidden\r\nX: a\rb\r\n",  # bare CR
        HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",  # malformed chunks: as they are
    ],
)
def test_anything_else_passes_as_it_comes(answer: bytes) -> None:
    held = HeldRefusal()
    assert held.feed(answer) == answer
    assert held.settled
    assert held.feed(b"more") == b"more"


def test_an_endless_head_is_passed_on_past_the_limit() -> None:
    held = HeldRefusal()
    assert held.feed(b"HTTP/1.1 403 Forbidden\r\n") == b""
    filler = b"X-Filler: " + b"a" * 1000 + b"\r\n"
    passed = b"".join(held.feed(filler) for _ in range(70))
    assert held.settled and passed.startswith(b"HTTP/1.1 403 Forbidden\r\n")


@given(answer=st.sampled_from([*ANSWERS.values(), b"HTTP/1.1 403 Forbidden\r\nX: a\nY: b\r\n\r\n"]), data=st.data())
def test_a_byte_per_read_is_the_same_as_one_read(answer: bytes, data: st.DataObject) -> None:
    """The head is checked a read at a time: a CRLF (or the CRLF CRLF) split across reads is found,
    a bare LF anywhere still passes the answer on at once."""
    whole, trickled = HeldRefusal(), HeldRefusal()
    expected = whole.feed(answer)
    cut = data.draw(st.integers(0, min(len(answer), 400)))
    out = b"".join(trickled.feed(answer[i : i + 1]) for i in range(cut)) + trickled.feed(answer[cut:])
    assert out == expected


@pytest.mark.parametrize("reason", [b" Nope", b" ", b""])
def test_a_refusal_is_what_a_client_gets_relayed(reason: bytes) -> None:
    """``is_refusal`` reads the status line as ``RELAYED_STATUSES`` decides (4xx and 5xx)."""
    for status in range(100, 1000):
        assert is_refusal(b"HTTP/1.1 %d%s\r\n" % (status, reason)) == (status in RELAYED_STATUSES), status
    assert not is_refusal(b"HTTP/1.1 4033 X\r\n") and not is_refusal(b"HTTP/2 403 X\r\n")


def test_a_head_trickled_a_byte_per_read_is_looked_at_once() -> None:
    """Counted, not timed: each read moves the checked mark on, so no read scans the held head again."""
    head = b"HTTP/1.1 403 " + b"a" * 5000 + b"\r\nX-Filler: " + b"b" * 5000 + b"\r\n\r\n"
    held = HeldRefusal()
    for index in range(len(head)):
        assert held.feed(head[index : index + 1]) == b""
        assert held._checked >= index - 1  # but a CR whose LF is to come, or the final CRLF
