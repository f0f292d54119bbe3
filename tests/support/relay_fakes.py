"""A fake upstream connection and a fake ASGI client for the relay's pumps: pure asyncio, no sockets;
a fake transport for the splice and the frame relay.

Each fails or hangs on command at every await point (tests/test_relay_close.py, tests/test_relay_counting.py).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Literal

from asgi_ws_gateway._types import Data, Message
from asgi_ws_gateway.upstream.base import UpstreamClosed

CLOSE_TIMEOUT = 0.05  # seconds: the relay's bound on each closing step, injected
HANG = 5.0  # seconds: a run() still going after this is a hang (a failure, not a slow pass)

Fault = Literal["raise", "hang", "oserror", "closed", "closed quietly"]


class Boom(Exception):
    """The injected bug (not a RuntimeError: a server's send raises one once it closed the client itself)."""


@dataclass
class FakeUpstream:
    """An ``UpstreamConnection`` whose every await point can fail or hang on demand.

    Like the ``websockets`` connector: once ``close()`` returned (or the peer closed), ``recv`` and
    ``send`` raise ``UpstreamClosed`` (``recv`` after the messages pushed before), and ``ended`` is done at
    once. ``paused`` makes ``send`` wait as a full write buffer would.
    """

    faults: dict[str, Fault] = field(default_factory=dict)
    subprotocol: str | None = None
    response_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    sent: list[Data] = field(default_factory=list)
    closes: list[tuple[int, str]] = field(default_factory=list)
    paused: bool = False

    def __post_init__(self) -> None:
        self._inbox: asyncio.Queue[Data | UpstreamClosed] = asyncio.Queue()
        self._drained = asyncio.Event()
        self._ended: UpstreamClosed | None = None
        self._ended_soon: asyncio.Future[None] | None = None

    # -- the test's controls --
    def push(self, data: Data) -> None:
        self._inbox.put_nowait(data)

    def peer_closes(self, code: int, reason: str) -> None:
        self._end(UpstreamClosed(code, reason, by_peer=True))

    def vanish(self) -> None:
        """The TCP connection is lost (a reset): every pending and later call ends with 1006."""
        self._end(UpstreamClosed(1006, "", by_peer=False))

    def _end(self, closed: UpstreamClosed) -> None:
        if self._ended is None:
            self._ended = closed
            self._inbox.put_nowait(closed)
            self._drained.set()
            if self._ended_soon is not None:
                self._ended_soon.set_result(None)

    async def _fault(self, point: str) -> None:
        fault = self.faults.get(point)
        if fault == "raise":
            raise Boom(f"{point} failed")
        if fault == "oserror":
            raise ConnectionResetError(f"{point}: connection reset")
        if fault == "hang":
            await asyncio.Event().wait()

    # -- UpstreamConnection --
    @property
    def ended(self) -> asyncio.Future[None]:
        if self._ended_soon is None:  # made in the test's loop, which __post_init__ may run outside of
            self._ended_soon = asyncio.get_running_loop().create_future()
            if self._ended is not None:
                self._ended_soon.set_result(None)
        return self._ended_soon

    async def recv(self) -> Data:
        await self._fault("recv")
        item = await self._inbox.get()
        if isinstance(item, UpstreamClosed):
            self._inbox.put_nowait(item)
            raise item
        return item

    async def send(self, data: Data) -> None:
        await self._fault("send")
        if self._ended is not None:
            raise self._ended
        self.sent.append(data)
        if self.paused:
            await self._drained.wait()  # drain while paused: only a reset ends it
            if self._ended is not None:
                raise self._ended

    async def close(self, code: int, reason: str) -> None:
        self.closes.append((code, reason))
        await self._fault("close")
        self._end(UpstreamClosed(code, reason, by_peer=False))


@dataclass
class FakeClient:
    """An accepted client's ASGI ``receive``/``send``; sends after it left raise ``OSError``.

    ``pace``: seconds each send takes, one step of the client taking in what waits for it (``taken``, the
    count :meth:`progress` gives the relay); the close frame waits ``backlog`` steps more behind what the
    server still holds for the client: a slow reader.
    """

    faults: dict[str, Fault] = field(default_factory=dict)
    messages: list[Data] = field(default_factory=list)
    closes: list[tuple[int, str]] = field(default_factory=list)
    pace: float = 0.0
    backlog: int = 0
    taken: int = 0

    def progress(self) -> int:
        """What the client has taken in so far (the server's count, ``client_progress``)."""
        return self.taken

    def __post_init__(self) -> None:
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.gone = False
        self.server_closed = False  # (the "closed" fault)

    def says(self, data: Data) -> None:
        key = "text" if isinstance(data, str) else "bytes"
        self._inbox.put_nowait({"type": "websocket.receive", key: data})

    def closes_with(self, code: int, reason: str = "") -> None:
        self._inbox.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})

    def drops_tcp(self, message: Message | None = None) -> None:
        self.gone = True
        self._inbox.put_nowait(message or {"type": "websocket.disconnect", "code": 1006})

    async def receive(self) -> Message:
        fault = self.faults.get("receive")
        if fault == "raise":
            raise Boom("receive failed")
        if fault == "hang":
            await asyncio.Event().wait()
        return await self._inbox.get()

    async def send(self, message: Message) -> None:
        kind = message["type"]
        fault = self.faults.get(kind)
        if fault == "raise":
            raise Boom(f"{kind} failed")
        if fault in ("closed", "closed quietly"):  # uvicorn's websockets-sansio and wsproto once they closed the
            # client themselves: for a protocol error, with its disconnect queued (unread by the relay yet); at their
            # keepalive timeout, none until the transport is lost ("closed quietly")
            if fault == "closed" and not self.server_closed:
                self.server_closed = True
                self.closes_with(1002, "invalid opcode")
            raise RuntimeError(f"Unexpected ASGI message '{kind}', after sending 'websocket.close'.")
        if fault == "hang":
            await asyncio.Event().wait()
        for _ in range((1 + (self.backlog if kind == "websocket.close" else 0)) if self.pace else 0):
            await asyncio.sleep(self.pace)  # Load, not synchronisation: a slow reader's pace
            self.taken += 1
        if self.gone:
            raise OSError("client disconnected")
        if kind == "websocket.close":
            self.closes.append((message["code"], message.get("reason", "")))
            self._inbox.put_nowait({"type": "websocket.disconnect", "code": message["code"], "reason": ""})
        else:
            self.messages.append(message.get("text") or message.get("bytes") or b"")


class FakeTransport:
    """The transport calls the splice makes, recorded."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False
        self.aborted = False
        self.reading = True
        self.eof = False  # write_eof() was called: the splice's end of TCP is done

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.written += data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = self.aborted = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        assert not self.closed, "write_eof after close"
        self.eof = True

    # Tests read state through methods: mypy would narrow ``closed`` after one assert and take the
    # opposite assert, later, for unreachable.
    def is_closing(self) -> bool:
        return self.closed

    def is_reading(self) -> bool:
        return self.reading

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol
