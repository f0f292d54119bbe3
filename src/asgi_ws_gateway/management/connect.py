"""The session of ``asgi-ws-gateway connect``: its usage and rules are :mod:`.connect_usage`'s (the
command's ``--help``, which the command line shows without importing websockets' client from here).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import threading
import time
from collections.abc import Sequence
from ssl import SSLContext
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, PayloadTooBig
from websockets.typing import Subprotocol

from ..redact import REDACTED, printable, redact_url_credentials
from .connect_credentials import token_offer
from .connect_usage import DEFAULT_MAX_SIZE

EXIT_OK, EXIT_FAILED, EXIT_ABNORMAL = 0, 1, 6


class Printer:
    """Writes events as human lines or, with ``as_json``, one JSON object per line.

    A human line's values from the peer or the user must be passed through ``printable`` first (the
    JSON encoder escapes them itself): a server could otherwise write ``\\x1b]52;...`` (the
    clipboard), ``\\x1b[2J`` or a newline and a forged event to the terminal.
    """

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def __call__(self, event: str, text: str = "", **fields: Any) -> None:
        now = time.time()
        if self.as_json:
            print(json.dumps({"time": round(now, 3), "event": event, **fields}), flush=True)
            return
        stamp = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d}"
        print(f"{stamp} {text}", flush=True)


def _describe(data: str | bytes) -> tuple[str, dict[str, Any]]:
    if isinstance(data, str):
        return printable(data, quote=False), {"type": "text", "size": len(data.encode()), "data": data}
    preview = data[:32].hex(" ") + (" …" if len(data) > 32 else "")
    return f"[binary] {preview}", {"type": "binary", "size": len(data), "data": data.hex()}


def _lines() -> asyncio.Queue[str | None]:
    """Lines of standard input, read by a daemon thread (works for terminals, pipes and files)."""
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    def read() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(queue.put_nowait, line.rstrip("\r\n"))
        loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=read, name="stdin", daemon=True).start()
    return queue


class _NoRedirects(connect):
    """websockets' connect, a redirect not followed: it re-sent every header but ``Authorization``
    and ``Cookie`` (a subscription key, ``-H`` credentials) to wherever the server pointed."""

    def process_redirect(self, exc: Exception) -> Exception | str:
        return exc


async def session(
    url: str,
    *,
    headers: Sequence[tuple[str, str]] = (),
    subprotocols: Sequence[str] = (),
    linger: float = 1.0,
    as_json: bool = False,
    max_size: int = DEFAULT_MAX_SIZE,
    ssl: SSLContext | None = None,
) -> int:
    """Connect, relay standard input as messages, print every frame; returns the exit code.

    ``max_size``: bytes a received message may have once inflated (default 16 MiB); a larger one
    closes the connection with 1009 (``EXIT_ABNORMAL``). ``ssl``: for ``wss://``, the certificates
    trusted (default: the system's). A redirect is not followed: its target is printed (``EXIT_FAILED``).
    """
    show = Printer(as_json)
    tls: dict[str, Any] = {"ssl": ssl} if ssl is not None and url.lower().startswith("wss:") else {}
    try:
        ws = await _NoRedirects(
            url,
            additional_headers=list(headers),
            open_timeout=10,
            proxy=None,
            max_size=max_size,
            subprotocols=[Subprotocol(p) for p in subprotocols] or None,
            **tls,
        )
    except InvalidStatus as exc:
        if 300 <= exc.response.status_code < 400:
            _redirected(show, exc.response.status_code, exc.response.headers.get("Location"))
            return EXIT_FAILED
        body = bytes(exc.response.body).decode(errors="replace")
        show(
            "refused",
            f"! handshake refused: {exc.response.status_code} {printable(body, quote=False)}".rstrip(),
            status=exc.response.status_code,
            body=body,
        )
        return EXIT_FAILED
    except (OSError, InvalidHandshake, TimeoutError) as exc:
        show("error", f"! cannot connect: {printable(str(exc), quote=False)}", error=str(exc))
        return EXIT_FAILED
    # What was typed may be in a terminal's scrollback or a CI log: shown without its credentials.
    shown, chosen = redact_url_credentials(url), _shown_offer(ws.subprotocol)
    show(
        "open",
        f"* connected to {printable(shown, quote=False)}"
        + (f" (subprotocol {printable(chosen, quote=False)})" if chosen else ""),
        url=shown,
        subprotocol=chosen,
    )
    reader = asyncio.create_task(_receive(ws, show))
    writer = asyncio.create_task(_send(ws, show, linger))
    await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
    writer.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await writer
    await reader
    closed = ws.protocol.close_rcvd
    too_big = isinstance(ws.protocol.parser_exc, PayloadTooBig)
    if too_big:  # the client failed the connection with 1009 (unless a /close was sent first)
        sent = ws.protocol.close_sent
        show(
            "error",
            f"! a message was larger than --max-size ({max_size} bytes)"
            + (": closed with 1009" if sent is not None and sent.code == 1009 else ""),
            error="message too big",
            max_size=max_size,
        )
        closed = closed or sent  # a hostile server may just hang up
    code, reason = (closed.code, closed.reason) if closed is not None else (1006, "")
    show("close", f"* closed {code}" + (f' "{printable(reason)}"' if reason else ""), code=code, reason=reason)
    return EXIT_OK if code in (1000, 1001) and not too_big else EXIT_ABNORMAL  # too big after a /close too


def _shown_offer(subprotocol: str | None) -> str | None:
    """The subprotocol the server chose, ``REDACTED`` when it is an offer carrying a token (echoed back)."""
    return REDACTED if subprotocol is not None and token_offer(subprotocol) else subprotocol


def _redirected(show: Printer, status: int, location: str | None) -> None:
    """A redirect, not followed (the credentials would go with it): where it points, to connect there."""
    where = redact_url_credentials(location) if location is not None else None
    show(
        "refused",
        f"! redirected ({status}) to {printable(where, quote=False)}: not followed; connect to that URL if you trust it"
        if where is not None
        else f"! redirected ({status}) with no Location: not followed",
        status=status,
        location=where,
    )


async def _receive(ws: ClientConnection, show: Printer) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for data in ws:
            text, fields = _describe(data)
            show("received", f"< {text}  ({fields['size']} B)", **fields)


async def _send(ws: ClientConnection, show: Printer, linger: float) -> None:
    lines = _lines()
    while (line := await lines.get()) is not None:
        data: str | bytes = line
        if line.startswith("/close"):
            parts = line.split(maxsplit=2)
            await ws.close(int(parts[1]) if len(parts) > 1 else 1000, parts[2] if len(parts) > 2 else "")
            return
        if line.startswith("/binary "):
            try:
                data = bytes.fromhex(line.removeprefix("/binary "))
            except ValueError:
                show("error", "! /binary takes hexadecimal digits", error="invalid hex")
                continue
        elif line.startswith("/json "):
            try:
                data = json.dumps(json.loads(line.removeprefix("/json ")))
            except json.JSONDecodeError as exc:
                show("error", f"! not JSON: {printable(str(exc), quote=False)}", error=str(exc))
                continue
        try:
            await ws.send(data)
        except ConnectionClosed:
            return
        text, fields = _describe(data)
        show("sent", f"> {text}  ({fields['size']} B)", **fields)
    await asyncio.sleep(linger)  # end of input: give replies a moment, then close normally
    await ws.close(1000)


__all__ = ["DEFAULT_MAX_SIZE", "EXIT_ABNORMAL", "EXIT_FAILED", "EXIT_OK", "session"]
