"""``asgi-ws-gateway connect`` against a hostile server: one message may not take the terminal's memory.

With ``max_size=None`` a permessage-deflate message of ~1 MiB on the wire per GiB inflated took the
client to gigabytes. Now a message is at most ``--max-size`` bytes (16 MiB by default), counted as it
is inflated; a larger one closes the connection with 1009 and says so (exit code 6).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import struct
import sys
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from websockets.asyncio.server import ServerConnection, serve

from asgi_ws_gateway.management.cli import _size
from support.processes import EXE, cli_env

MIB = 1024 * 1024
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _frame(opcode: int, payload: bytes, *, fin: bool, rsv1: bool) -> bytes:
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    size = len(payload)
    if size < 126:
        return bytes([first, size]) + payload
    if size < 65536:
        return bytes([first, 126]) + struct.pack("!H", size) + payload
    return bytes([first, 127]) + struct.pack("!Q", size) + payload


@asynccontextmanager
async def _deflate_bomb(inflated_mib: int) -> AsyncIterator[str]:
    """A server that accepts permessage-deflate and sends one binary message of ``inflated_mib`` MiB of
    zeros, fragmented, about a thousandth of it on the wire, then hangs up; yields its URL."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        key = next(
            line.split(":", 1)[1].strip()
            for line in head.split("\r\n")
            if line.lower().startswith("sec-websocket-key:")
        )
        accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        writer.write(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n".encode()
        )
        deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
        zeros = bytes(MIB)
        try:
            for i in range(inflated_mib):
                data = deflate.compress(zeros) + deflate.flush(zlib.Z_SYNC_FLUSH)
                last = i == inflated_mib - 1
                writer.write(_frame(0 if i else 2, data[:-4] if last else data, fin=last, rsv1=i == 0))
                await writer.drain()
            await asyncio.sleep(0.5)
        except ConnectionError:
            pass  # the client gave up on the message: what it should do
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/bomb"


# Runs the command line and reports its peak memory (ru_maxrss, KiB on Linux) on standard error's last line.
MEASURED = """
import resource, subprocess, sys
code = subprocess.run(sys.argv[1:]).returncode
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)
sys.exit(code)
"""


async def _connect(url: str, *args: str) -> tuple[int, str, int]:
    """``connect URL ARGS`` with no input; (exit code, stdout, peak memory in MiB)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", MEASURED, str(EXE), "connect", url, "--linger", "5", *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=cli_env(),
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, err = await process.communicate(b"")
    assert process.returncode is not None
    return process.returncode, out.decode(), int(err.decode().split()[-1]) // 1024


async def test_a_deflate_bomb_stops_at_the_default_max_size_with_1009() -> None:
    """512 MiB inflated from ~0.5 MiB on the wire: closed 1009 past 16 MiB, the client stays small."""
    async with _deflate_bomb(512) as url:
        code, out, peak = await _connect(url)
    assert code == 6
    lines = [line.split(" ", 1)[1] for line in out.splitlines()]
    assert lines[-2] == "! a message was larger than --max-size (16777216 bytes): closed with 1009"
    assert lines[-1].startswith("* closed 1009")
    assert peak < 200, f"{peak} MiB"


async def test_max_size_is_an_option_and_json_reports_the_limit() -> None:
    """``--max-size 4MiB`` stops a 6 MiB message; ``--json`` says the same as an ``error`` event."""
    async with _deflate_bomb(6) as url:
        code, out, _ = await _connect(url, "--max-size", "4MiB", "--json")
    assert code == 6
    events = [json.loads(line) for line in out.splitlines()]
    assert events[-2] == {"time": events[-2]["time"], "event": "error", "error": "message too big", "max_size": 4 * MIB}
    assert (events[-1]["event"], events[-1]["code"]) == ("close", 1009)


async def test_a_message_within_max_size_is_received_whole() -> None:
    """A compressed 6 MiB message is under the default limit: received, and a normal close."""

    async def send_big(ws: ServerConnection) -> None:
        await ws.send(bytes(6 * MIB))
        await ws.close()

    async with serve(send_big, "127.0.0.1", 0) as server:
        url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        code, out, _ = await _connect(url, "--json")
    assert code == 0
    (received,) = [json.loads(line) for line in out.splitlines() if '"received"' in line]
    assert received["size"] == 6 * MIB


async def test_max_size_must_be_a_positive_size() -> None:
    for bad in ("0", "-1", "lots", "1.5"):
        code, _, _ = await _connect("ws://127.0.0.1:1/", "--max-size", bad)
        assert code == 2, bad


@pytest.mark.parametrize("bad", ["\u0661\u0666MiB", "1_0", "\u00b2", "\uff11KiB"])
def test_max_size_is_ascii_digits(bad: str) -> None:
    """int() reads Arabic-Indic and fullwidth digits, and raised on '²' (a traceback out of argparse)."""
    with pytest.raises(argparse.ArgumentTypeError):
        _size(bad)
    assert _size("16MiB") == 16 * 1024 * 1024
