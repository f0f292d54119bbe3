"""The example's upstream: a plain Starlette app with two WebSocket endpoints.

* ``/echo`` sends every message back unchanged (text stays text, binary stays binary).
* ``/chat/{room}`` broadcasts each text message to everyone in the same room, sender included.

Both select the ``chat.v1`` subprotocol when the client offers it. The gateway runs this app
in-process (``asgi:example_app.upstream:app`` in ``gateway.yaml``); it knows nothing of the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

SUBPROTOCOL = "chat.v1"
SEND_QUEUE_SIZE = 32
"""Messages a chat member may fall behind by before it is dropped with 1013 (try again later)."""


def _subprotocol(websocket: WebSocket) -> str | None:
    return SUBPROTOCOL if SUBPROTOCOL in websocket.scope.get("subprotocols", ()) else None


async def echo(websocket: WebSocket) -> None:
    """Echo each message until the client closes."""
    await websocket.accept(subprotocol=_subprotocol(websocket))
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await websocket.send_text(message["text"])
        else:
            await websocket.send_bytes(message.get("bytes") or b"")


class Member:
    """One chat connection and its bounded outbox, written by its own task."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self.outbox: asyncio.Queue[str | None] = asyncio.Queue(maxsize=SEND_QUEUE_SIZE)

    def offer(self, text: str) -> bool:
        """Queue ``text`` without waiting; on a full outbox, schedule the drop and return False."""
        try:
            self.outbox.put_nowait(text)
        except asyncio.QueueFull:
            while not self.outbox.empty():
                self.outbox.get_nowait()
            self.outbox.put_nowait(None)  # tells the writer to close with 1013
            return False
        return True

    async def write(self) -> None:
        """Send queued messages in order; close with 1013 when told the member fell too far behind."""
        while (text := await self.outbox.get()) is not None:
            await self.websocket.send_text(text)
        await self.websocket.close(1013, "too slow: messages were dropped")


class Rooms:
    """Chat rooms by name; a room exists while it has members."""

    def __init__(self) -> None:
        self._rooms: defaultdict[str, set[Member]] = defaultdict(set)

    def join(self, room: str, member: Member) -> None:
        self._rooms[room].add(member)

    def leave(self, room: str, member: Member) -> None:
        members = self._rooms.get(room)
        if members is not None:
            members.discard(member)
            if not members:
                del self._rooms[room]

    def broadcast(self, room: str, text: str) -> None:
        """Offer ``text`` to every member; a member that cannot keep up is removed from the room."""
        for member in list(self._rooms.get(room, ())):
            if not member.offer(text):
                self.leave(room, member)

    def members(self, room: str) -> int:
        return len(self._rooms.get(room, ()))


def create_app() -> Starlette:
    """Build the upstream app with its own, empty, set of chat rooms."""
    rooms = Rooms()

    async def chat(websocket: WebSocket) -> None:
        room: str = websocket.path_params["room"]
        await websocket.accept(subprotocol=_subprotocol(websocket))
        member = Member(websocket)
        rooms.join(room, member)
        writer = asyncio.create_task(member.write())
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect" or writer.done():
                    return
                if message.get("text") is None:
                    await websocket.close(1003, "chat messages must be text")
                    return
                rooms.broadcast(room, message["text"])
        except (WebSocketDisconnect, OSError):
            return  # the writer closed the socket or the connection failed: drop this member
        finally:
            rooms.leave(room, member)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer

    app = Starlette(routes=[WebSocketRoute("/echo", echo), WebSocketRoute("/chat/{room}", chat)])
    app.state.rooms = rooms
    return app


app = create_app()

__all__ = ["SEND_QUEUE_SIZE", "SUBPROTOCOL", "Member", "Rooms", "app", "create_app", "echo"]
