"""Which close codes a close frame may carry (RFC 6455 §7.4), as websockets decides, and what a bad close payload is."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.exceptions import ProtocolError
from websockets.frames import Close

from asgi_ws_gateway.relay.close_codes import close_code_and_reason, close_problem, sendable, wire_code


def _websockets_accepts(code: int) -> bool:
    try:
        Close(code, "").check()
    except ProtocolError:
        return False
    return True


@given(st.integers(min_value=0, max_value=65535))
def test_sendable_is_what_websockets_accepts(code: int) -> None:
    """The splice, the frame relay and websockets agree on every 16-bit code."""
    assert sendable(code) == _websockets_accepts(code)


@given(st.integers(min_value=0, max_value=65535), st.binary(max_size=123))
def test_close_problem_agrees_with_websockets_parse(code: int, reason: bytes) -> None:
    """A payload is refused exactly when websockets refuses to parse it; 1007 only for the reason's UTF-8."""
    payload = code.to_bytes(2, "big") + reason
    expected: tuple[str, int] | None
    try:
        Close.parse(payload)
    except ProtocolError:
        expected = "invalid close code", 1002
    except UnicodeDecodeError:
        expected = "invalid UTF-8 in the close reason", 1007
    else:
        expected = None
    assert close_problem(payload) == expected


@pytest.mark.parametrize(("payload", "problem"), [(b"", None), (b"\x03", ("invalid close frame", 1002))])
def test_empty_close_is_valid_and_one_byte_is_not(payload: bytes, problem: tuple[str, int] | None) -> None:
    """No payload is a close without a code (1005); one byte is malformed."""
    assert close_problem(payload) == problem


@given(st.integers(min_value=0, max_value=65535), st.text(max_size=40))
def test_a_valid_close_payload_reads_as_websockets_parses_it(code: int, reason: str) -> None:
    """The code and reason the splice and the frame relay read are websockets' own; no payload is 1005."""
    payload = code.to_bytes(2, "big") + reason.encode()
    if close_problem(payload) is None:
        close = Close.parse(payload)
        assert close_code_and_reason(payload) == (close.code, close.reason)
    assert close_code_and_reason(b"") == (1005, "")


@given(st.integers(min_value=0, max_value=65535))
def test_wire_code_always_sends_a_sendable_code(code: int) -> None:
    """What the gateway writes itself is always a code a peer accepts."""
    assert sendable(wire_code(code))
