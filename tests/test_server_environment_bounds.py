"""The server's and the management app's numbers read from the environment: bounded, with a clear error.

``ASGI_WS_GATEWAY_MAX_HEAD_BYTES`` took any positive integer (at ``10**20`` the 431 was off: a client could
make a connection buffer whatever head it sent), and ``ASGI_WS_GATEWAY_MANAGEMENT_PORT`` was read with a
bare ``int()`` (a traceback for ``eighty``, a port of ``99999`` handed to the socket).
"""

from __future__ import annotations

import pytest

from asgi_ws_gateway.management import standalone
from asgi_ws_gateway.server.head_deadline import MAX_MAX_HEAD_BYTES, _max_head_bytes_from_env


@pytest.mark.parametrize("value", [str(MAX_MAX_HEAD_BYTES + 1), "100000000000000000000"])
def test_a_head_limit_past_a_mebibyte_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("ASGI_WS_GATEWAY_MAX_HEAD_BYTES", value)
    with pytest.raises(ValueError, match=r"ASGI_WS_GATEWAY_MAX_HEAD_BYTES: expected at most 1048576 bytes"):
        _max_head_bytes_from_env()


def test_a_head_limit_of_a_mebibyte_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASGI_WS_GATEWAY_MAX_HEAD_BYTES", str(MAX_MAX_HEAD_BYTES))
    assert _max_head_bytes_from_env() == MAX_MAX_HEAD_BYTES


@pytest.mark.parametrize("value", ["eighty", "0", "65536", "-1", "8080x", "1e3"])
def test_a_management_port_that_is_no_port_is_a_clear_error(value: str) -> None:
    with pytest.raises(RuntimeError, match=r"ASGI_WS_GATEWAY_MANAGEMENT_PORT: expected a port from 1 to 65535"):
        standalone._port(value)


@pytest.mark.parametrize(("value", "port"), [(None, None), ("", None), ("8081", 8081), ("65535", 65535)])
def test_a_management_port_is_read(value: str | None, port: int | None) -> None:
    assert standalone._port(value) == port
