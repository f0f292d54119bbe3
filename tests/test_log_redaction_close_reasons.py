"""Every log line that quotes a peer's close reason redacts it as free text, at every level.

An attack pass found the access log's close reason redacted as free text but the same reason in
clear elsewhere: the backend's "failed" line (``(1011 "bad api_key=sk_live_...")``, INFO) and, at
debug, websockets' frame lines (``> CLOSE 1011 (internal error) bad api_key=... [38 bytes]``),
which only ``redact_text`` read; websockets cuts a long payload in the middle, so a secret cut in
two matched no pattern and its end (a JWT's signature) showed. Now the frame's text is redacted
whole before it is cut (``redact.frame_text``), and lines quoting an exception (``ConnectionClosed``
holds both reasons) read it as free text.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import yaml
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosedError
from websockets.frames import Close, Frame, Opcode

from asgi_ws_gateway.config.apis import ApiConfig
from asgi_ws_gateway.log_redaction import RedactingFilter
from asgi_ws_gateway.redact import REDACTED
from asgi_ws_gateway.upstream.balancing import Backend, BackendPool
from support.clients import connect, expect_close
from support.hostile import CONNECTORS
from support.processes import ready_server

_JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlX3NpZ25hdHVyZQ"
SECRETS = {
    "api_key": ("bad api_key=", "sk_live_0123456789abcdef"),
    "password": ("db auth failed password=", "hunter2secret99"),
    "token": ("expired token=", "tok_9f8e7d6c5b4a3928"),
    "jwt": ("rejected ", _JWT),
    "bearer": ("rejected Bearer ", "bearer_secret_abcdef"),
    # Longer than websockets shows whole (75 characters): it cuts before the secret's name and shows
    # the secret's end, which no pattern can tell from text.
    "long": ("auth failed for the client of tenant north with api_key=", "sk_live_QWERTYUIOPasdfghLONGTAIL99"),
    "long jwt": ("token rejected by the auth service for client 42: ", _JWT),
}
"""Each a close reason's clear part and its secret (at most 123 bytes together)."""


def _reason(kind: str) -> str:
    return "".join(SECRETS[kind])


def _leaks(output: str) -> list[str]:
    """Any 8-character piece of a secret in ``output`` (a cut secret shows its pieces)."""
    found = []
    for _, secret in SECRETS.values():
        value = secret.split(" ")[0]
        pieces = {value[i : i + 8] for i in range(len(value) - 7)}
        found += [piece for piece in pieces if piece in output]
    return sorted(found)


@asynccontextmanager
async def _upstream(plan: list[str]) -> AsyncIterator[str]:
    """Each connection takes the next of ``plan``: a reason to close with at once (1011), or "" to wait
    for the client's close (websockets answers it with the same reason)."""

    async def handler(connection: ServerConnection) -> None:
        reason = plan.pop(0)
        if reason:
            await connection.close(1011, reason)
        else:
            async for _ in connection:
                pass

    async with serve(handler, "127.0.0.1", 0) as server:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"


async def test_no_close_reason_reaches_the_output_of_a_debug_run(tmp_path: Path) -> None:
    """``asgi-ws-gateway run --log-level debug``, on every connector: the upstream's reasons and the
    client's, each secret shape; the lines are there, redacted, and no piece of any secret is."""
    plan: list[str] = []
    async with _upstream(plan) as url:
        apis = [{"name": f"a{i}", "path": f"/a{i}", "upstreams": [url], "close_timeout": 2, **settings}
                for i, settings in enumerate(CONNECTORS.values())]  # fmt: skip
        (tmp_path / "gateway.yaml").write_text(yaml.safe_dump({"apis": apis}))
        command = ["-m", "asgi_ws_gateway", "run", str(tmp_path / "gateway.yaml"), "--log-level", "debug"]
        with ready_server(lambda port: [*command, "--port", str(port)]) as server:
            for i in range(len(apis)):
                for kind in SECRETS:
                    plan.append(_reason(kind))  # the upstream's close
                    async with await connect(f"ws://127.0.0.1:{server.port}/a{i}") as ws:
                        assert await expect_close(ws) == (1011, _reason(kind))
                    plan.append("")  # the client's
                    async with await connect(f"ws://127.0.0.1:{server.port}/a{i}") as ws:
                        await ws.close(1000, _reason(kind))
            assert server.stop() == 0
            output = server.output()
    assert _leaks(output) == []
    # The lines that quoted them are there (the relay's: its client and upstream legs are websockets').
    assert "failed: it failed a connection" in output and f'(1011 "bad api_key={REDACTED}")' in output
    assert f"< CLOSE 1011 (internal error) bad api_key={REDACTED} [38 bytes]" in output  # the upstream leg
    assert f"> CLOSE 1011 (internal error) bad api_key={REDACTED} [38 bytes]" in output  # mirrored to the client
    assert f"< CLOSE 1000 (OK) rejected Bearer {REDACTED} [" in output  # the client's
    assert f"> CLOSE 1000 (OK) rejected {REDACTED} [" in output  # sent upstream, and back to the client


@pytest.mark.parametrize("kind", list(SECRETS))
def test_the_backends_failed_line_redacts_the_upstreams_reason(caplog: pytest.LogCaptureFixture, kind: str) -> None:
    """``BackendPool.early_end``: the reason on one line, a credential in it redacted."""
    caplog.set_level(logging.INFO, logger="asgi_ws_gateway.upstream.balancing")
    api = ApiConfig.model_validate({"name": "h", "path": "/h", "upstreams": ["ws://a/"]})
    backend = Backend("ws://a/", connector=None, index=0)  # type: ignore[arg-type]

    class End:
        closed_by, close_code, close_reason, messages_in_at_close = "upstream", 1011, _reason(kind), 0

    BackendPool(api, [backend]).early_end(backend, End(), 0.1)
    (line,) = [r.getMessage() for r in caplog.records if "failed:" in r.getMessage()]
    assert _leaks(line) == [] and SECRETS[kind][0].split()[-1] in line and REDACTED in line


def _filtered(name: str, msg: str, *args: object, exc_info: object = None) -> str:
    record = logging.LogRecord(name, logging.DEBUG, __file__, 1, msg, args, exc_info)  # type: ignore[arg-type]
    RedactingFilter().filter(record)
    return record.getMessage() + "\n" + (record.exc_text or "")


def _legacy_frame(frame: Frame) -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from websockets.legacy.framing import Frame as LegacyFrame
    return LegacyFrame(frame.fin, frame.opcode, frame.data)


@pytest.mark.parametrize("kind", list(SECRETS))
@pytest.mark.parametrize("logger", ["websockets.client", "websockets.server", "uvicorn.error"])
@pytest.mark.parametrize("legacy", [False, True], ids=["sansio", "legacy"])
def test_websockets_frame_lines_redact_the_payload_whole(kind: str, logger: str, legacy: bool) -> None:
    """A close frame's reason, a text message, a ping's payload, a message long enough to be cut in the
    middle: the secret is redacted before websockets cuts it; the size is the frame's own."""
    text = _reason(kind).encode()
    frames = [
        Frame(Opcode.CLOSE, Close(1011, _reason(kind)).serialize()),
        Frame(Opcode.TEXT, text),
        Frame(Opcode.BINARY, text),
        Frame(Opcode.PING, text[:125]),
        Frame(Opcode.TEXT, b"z" * 400 + text + b"z" * 400),  # cut by websockets: the secret in the middle
        Frame(Opcode.TEXT, text + b"z" * 400, fin=False),
        Frame(Opcode.CONT, b"z" * 400 + text),
    ]
    for frame in frames:
        line = _filtered(logger, "< %s", _legacy_frame(frame) if legacy else frame)
        assert _leaks(line) == [], line
        assert line.startswith(f"< {frame.opcode.name} ") and f"{len(frame.data)} bytes" in line, line


def test_a_frame_too_long_to_read_whole_shows_no_text() -> None:
    """Over 64 KiB: websockets would show its start and end; the line shows its kind and size."""
    frame = Frame(Opcode.TEXT, b"token=" + b"s" * 70000 + b" " + _JWT.encode())
    assert _filtered("websockets.client", "< %s", frame).strip() == f"< TEXT (not shown) [{len(frame.data)} bytes]"


def test_frame_lines_without_a_secret_are_websockets_own() -> None:
    """Nothing to redact: the line is as websockets writes it (cut, hex for binary data)."""
    for frame in [Frame(Opcode.TEXT, b"hello" * 100), Frame(Opcode.PING, b"\x00\x01\x02"),
                  Frame(Opcode.CLOSE, Close(1000, "bye").serialize()), Frame(Opcode.CLOSE, b"")]:  # fmt: skip
        assert _filtered("websockets.client", "> %s", frame).strip() == f"> {frame}"


@pytest.mark.parametrize("kind", list(SECRETS))
def test_a_connection_closed_exception_quoting_reasons_is_redacted(kind: str) -> None:
    """As an argument (``"closing failed: %r"``) and as the record's exception: both sides' reasons."""
    closed = ConnectionClosedError(Close(1011, _reason(kind)), Close(1000, _reason(kind)), rcvd_then_sent=True)
    assert _leaks(_filtered("asgi_ws_gateway.relay.pumps", "closing the client failed: %r", closed)) == []
    assert _leaks(_filtered("asgi_ws_gateway.relay.pumps", "closing the client failed: %s", closed)) == []
    try:
        raise closed
    except ConnectionClosedError:
        text = _filtered("websockets.client", "! failing connection", exc_info=sys.exc_info())
    assert _leaks(text) == [] and "ConnectionClosedError: received 1011 (internal error)" in text
