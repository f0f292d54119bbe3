"""``tls_bounded_loop`` with a uvloop that does not export its TLS protocol (``uvloop.loop.SSLProtocol``, a
name outside its public API): the loop stays uvloop's, its TLS servers use asyncio's TLS layer, and why is
logged once. Before, that failed import put the whole server on asyncio's loop without a word.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import ssl
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from asgi_ws_gateway.server import tls_loop
from support.tls import make_ca

uvloop = pytest.importorskip("uvloop")


@pytest.fixture
def without_uvloop_tls(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    """``tls_loop`` imported again under a ``uvloop.loop`` without ``SSLProtocol``; as it was afterwards."""
    stub = types.ModuleType("uvloop.loop")
    stub.Loop = uvloop.Loop  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "uvloop.loop", stub)
    try:
        yield importlib.reload(tls_loop)
    finally:
        monkeypatch.undo()
        importlib.reload(tls_loop)


class _Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]


async def _echo_over_tls(directory: Path) -> bytes:
    ca = make_ca(directory)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Echo, "127.0.0.1", 0, ssl=ca.server_context())
    try:
        port = server.sockets[0].getsockname()[1]
        context = ssl.create_default_context(cafile=str(ca.ca_file))
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
        payload = bytes(range(256)) * 4096  # 1 MiB: the TLS layer's flow control both ways
        writer.write(payload)
        echoed = await reader.readexactly(len(payload))
        writer.close()
        await writer.wait_closed()
        return echoed
    finally:
        server.close()
        await server.wait_closed()


def test_the_loop_stays_uvloop_and_its_tls_servers_use_asyncios_tls_layer(
    without_uvloop_tls: types.ModuleType, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=tls_loop.__name__)
    loops = [without_uvloop_tls.tls_bounded_loop() for _ in range(2)]
    try:
        assert all(isinstance(loop, uvloop.Loop) for loop in loops)
        echoed = loops[0].run_until_complete(_echo_over_tls(tmp_path))
    finally:
        for loop in loops:
            loop.close()
    assert echoed == bytes(range(256)) * 4096
    said = [r.getMessage() for r in caplog.records if r.name == tls_loop.__name__]
    assert len(said) == 1 and "no uvloop.loop.SSLProtocol" in said[0], said
