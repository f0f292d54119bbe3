"""Audit: ``ASGI_WS_GATEWAY_HEADER_TIMEOUT`` is a decimal number of seconds in ASCII digits.

It was read with ``float()``, which also takes other scripts' digits ("٣", Arabic-Indic three, was 3 s),
underscores, surrounding blanks and "nan"; every other number the gateway reads from its environment
is ASCII digits only. Those are refused now with the message any malformed value gets.
"""

from __future__ import annotations

import pytest

from asgi_ws_gateway.server.head_deadline import _header_timeout_from_env

_NOT_ASCII_DECIMALS = ["\u0663", "\u0663.\u0665", "\uff13", "1_0", " 3", "3 ", "3\n", "nan", "inf", "+3", "0x1p1", "3s",
                       "."]  # fmt: skip


@pytest.mark.parametrize("value", _NOT_ASCII_DECIMALS)  # Arabic-Indic 3 and 3.5, a fullwidth 3, what float() pads
def test_a_header_timeout_that_is_no_ascii_decimal_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("ASGI_WS_GATEWAY_HEADER_TIMEOUT", value)
    with pytest.raises(ValueError) as info:
        _header_timeout_from_env()
    assert str(info.value) == f"ASGI_WS_GATEWAY_HEADER_TIMEOUT: expected a positive number of seconds, got {value!r}"


@pytest.mark.parametrize(("value", "seconds"), [("3", 3.0), ("0.5", 0.5), (".5", 0.5), ("2.", 2.0), ("1e1", 10.0),
                                                ("2.5E-1", 0.25), ("300", 300.0), ("010", 10.0)])  # fmt: skip
def test_ascii_decimals_are_taken(monkeypatch: pytest.MonkeyPatch, value: str, seconds: float) -> None:
    monkeypatch.setenv("ASGI_WS_GATEWAY_HEADER_TIMEOUT", value)
    assert _header_timeout_from_env() == seconds
