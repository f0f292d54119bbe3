"""At ``--log-level debug`` the libraries' lines are printable: what a client sent is escaped in them.

uvicorn's and websockets' debug lines dump every header as it came (``< user-agent: ...``, bytes read
as Latin-1, so 0x85 and 0x9B are the C1 controls NEL and CSI), websockets quotes a malformed header
in its error (``InvalidHeaderFormat: ... in a\\x85...``, the formatted exception) and writes a close
frame's reason as sent (``< CLOSE 4000 (private use) ...``, where U+2028 and a line feed may stand).
The gateway's own lines escaped such characters (``redact.printable``); the libraries' were written
raw: a NEL or U+2028 ends a line for many log readers, CSI drives a terminal. Now the
``RedactingFilter`` escapes them in every library record, and in every formatted exception (its
traceback's own line ends kept). Under a real ``asgi-ws-gateway run``, each output format; every
character of stdout and stderr is searched.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from asgi_ws_gateway.log_redaction import RedactingFilter
from asgi_ws_gateway.redact import CONTROL_CHARACTERS
from support.configs import build_config
from support.processes import ServerProcess, ready_server
from support.rawhttp import handshake, ws_frame
from support.upstream import UpstreamServer

HOSTILE = b"\x85\x9b[31m FORGED"  # NEL, CSI: what Latin-1 reads of these bytes
"""A header value: the server's parser takes bytes 0x80-0xFF (not ESC or DEL, which it refuses with 400)."""
REASON = "bye\u2028\u0085\nINFO:     FORGED \u009b31m".encode()
"""A close reason (UTF-8): a line separator, NEL and a line feed that would start a forged line."""
RAW = re.compile(f"(?!\n)[{CONTROL_CHARACTERS}]")
"""Any of redact.py's control class but the line feed that ends each line."""


def _run(tmp: Path, upstream: UpstreamServer, *extra: str) -> ServerProcess:
    config = build_config(upstream, api={"passthrough": False})  # relayed: websockets' client logs the upstream leg
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    command = ["-m", "asgi_ws_gateway", "run", str(path), "--log-level", "debug", *extra]
    return ready_server(lambda port: [*command, "--port", str(port)])


async def _hostile_session(port: int) -> None:
    """A handshake whose User-Agent holds C1 controls, closed with a hostile reason; and one whose
    ``Sec-WebSocket-Extensions`` websockets cannot parse (it quotes the value in its exception; a
    ``Sec-WebSocket-Protocol``'s, a credential's place, is redacted there: ``tests/test_run_security.py``)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(handshake("/ws/echo", b"User-Agent: probe " + HOSTILE + b"\r\n"))
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    writer.write(ws_frame(8, (4000).to_bytes(2, "big") + REASON))
    await writer.drain()
    assert await reader.read() != b""  # the gateway's close frame, then EOF
    writer.close()
    await writer.wait_closed()  # close() only schedules the FIN, and the gateway lingers for it: stop() blocks the loop
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(handshake("/ws/echo", b"Sec-WebSocket-Extensions: a" + HOSTILE + b"\r\n"))
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 400")
    writer.close()
    await writer.wait_closed()  # as above: the refusal's linger waited out its 2 s for the FIN


def _assert_printable(output: str) -> None:
    raw = sorted({f"U+{ord(m[0]):04X}" for m in RAW.finditer(output)})
    assert not raw, f"raw control characters {raw} in:\n{output}"
    forged = [line for line in output.splitlines() if line.startswith("INFO:     FORGED")]
    assert not forged, forged


_JSON_LOG_CONFIG = {
    "version": 1, "disable_existing_loggers": False,
    "formatters": {"json": {"format": '{"logger": "%(name)s", "message": "%(message)s"}'}},
    "handlers": {"err": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "formatter": "json"}},
    "root": {"level": "DEBUG", "handlers": ["err"]},
}  # fmt: skip
"""A user's ``--log-config``: every library at DEBUG, each line a JSON-shaped record of the raw message."""


@pytest.mark.parametrize("output_format", ["text", "json", "log-config"])
async def test_library_debug_lines_escape_what_a_client_sent(
    tmp_path: Path, upstream: UpstreamServer, output_format: str
) -> None:
    """Before: U+0085 and U+009B raw in the ``< user-agent:`` dumps and in InvalidHeaderFormat's text
    (each format), U+2028 and a line feed raw in the close frame's dump (a forged ``INFO:`` line)."""
    if output_format == "log-config":
        (tmp_path / "logging.json").write_text(json.dumps(_JSON_LOG_CONFIG))
        extra: tuple[str, ...] = ("--log-config", str(tmp_path / "logging.json"))
    else:
        extra = ("--access-log-format", output_format)
    with _run(tmp_path, upstream, *extra) as server:
        await _hostile_session(server.port)
        assert server.stop() == 0
        output = server.stdout_path.read_bytes().decode() + server.stderr_path.read_bytes().decode()
    _assert_printable(output)
    # The lines are there, escaped (the test would prove nothing without them).
    assert "< user-agent: probe \\x85\\x9b[31m FORGED" in output
    assert "InvalidHeaderFormat: invalid Sec-WebSocket-Extensions header" in output
    assert "a\\x85\\x9b[31m FORGED" in output.split("InvalidHeaderFormat", 1)[1]
    assert "CLOSE 4000 (private use) bye\\u2028\\x85\\nINFO:     FORGED \\x9b31m" in output


def _record(msg: Any, *args: Any, exc_info: Any = None, name: str = "websockets.server") -> logging.LogRecord:
    record = logging.LogRecord(name, logging.DEBUG, __file__, 1, msg, args, exc_info)
    RedactingFilter().filter(record)
    return record


def test_an_exception_message_on_several_lines_stays_on_one() -> None:
    """A peer's text in an exception's message (a close reason) cannot start a log line of its own;
    the traceback's own lines stay lines, its source's backslashes unescaped."""
    try:
        try:
            raise ValueError("received 1000 (OK) bye\nINFO:     FORGED \x1b[2J")
        except ValueError as inner:
            raise RuntimeError("relay:\u2028INFO:     FORGED too\n") from inner
    except RuntimeError:
        record = _record("! failing connection", exc_info=sys.exc_info())
    text = record.exc_text or ""
    assert "ValueError: received 1000 (OK) bye\\nINFO:     FORGED \\x1b[2J" in text
    assert "RuntimeError: relay:\\u2028INFO:     FORGED too\\n" in text
    assert text.startswith("Traceback (most recent call last):\n") and "\nThe above exception was" in text
    assert not any(line.startswith("INFO:") for line in text.splitlines())
    assert not RAW.search(text)


@pytest.mark.parametrize(
    ("msg", "args", "expected"),
    [
        ("< %s: %s", ("user-agent", "a\x85b\u2028c"), "< user-agent: a\\x85b\\u2028c"),
        (ValueError("quoted a\x9bb"), (), "quoted a\\x9bb"),  # an object as the message
        ("%(who)s said %(what)s", {"who": "x", "what": "\x1b[2J"}, "x said \\x1b[2J"),
        ("Exception in ASGI application\n", (), "Exception in ASGI application\n"),  # a trailing line end stays
        ("2 problem(s):\n  a: x\n  b: y\n", (), "2 problem(s):\n  a: x\n  b: y\n"),  # so do indented lines
        ("< CLOSE %s", ("1000 (OK) a\nINFO:     FORGED\n",), "< CLOSE 1000 (OK) a\\nINFO:     FORGED\n"),
    ],
)
def test_every_library_message_shape_is_made_printable(msg: Any, args: Any, expected: str) -> None:
    record = _record(msg, *([args] if isinstance(args, dict) else args))
    assert record.getMessage() == expected


def test_uvicorn_access_arguments_are_escaped_and_keep_their_types() -> None:
    """uvicorn's access formatter reads ``record.args`` itself: each is escaped where it stands."""
    record = _record('%s - "%s %s HTTP/%s" %d', "127.0.0.1:1", "GET", "/a\x85", "1.1", 200, name="uvicorn.access")
    assert record.args == ("127.0.0.1:1", "GET", "/a\\x85", "1.1", 200)


def test_the_gateways_own_lines_are_not_escaped_twice() -> None:
    """Its lines escape each client value themselves (``printable``): a backslash is not doubled again."""
    record = _record("refused %s", "\\x1b", name="asgi_ws_gateway.management")
    assert record.getMessage() == "refused \\x1b"
