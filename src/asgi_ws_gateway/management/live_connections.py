"""The live connections over every worker: list them, send to one, close one.

Each worker holds its own connections; a command goes over the bus to every worker, and the one
holding the connection answers. :class:`~.service.Manager` creates one :class:`LiveConnections`
and hands it the bus commands that are not about the stored state.
"""

from __future__ import annotations

import asyncio
import base64
import heapq
import logging
from dataclasses import dataclass
from typing import Any

from ..middleware import WebSocketGateway
from ..relay.close_codes import wire_code
from .bus import Bus, Command
from .errors import Conflict, Invalid, NotFound

DEFAULT_LISTED = 1000
"""Open connections ``GET /connections`` lists when it is not given a ``limit``."""
MAX_LISTED = 10_000
"""The most it lists at once."""

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Listed:
    """A page of open connections over every worker: the oldest ``found``, ``total`` open in all."""

    found: list[dict[str, Any]]
    total: int
    answered: int
    expected: int


class LiveConnections:
    """The open connections of ``gateway`` and, through ``bus``, of every other worker's."""

    def __init__(self, gateway: WebSocketGateway, bus: Bus) -> None:
        self.gateway = gateway
        self.bus = bus
        self._closing: set[asyncio.Task[Any]] = set()

    async def connections(self, api: str | None = None, limit: int = DEFAULT_LISTED) -> Listed:
        """The ``limit`` oldest open connections over every worker, and how many are open in all.

        Each worker sends at most ``limit`` (through Redis in the shared mode): a gateway holding
        100,000 connections answers a listing, or the live console's poll, with a page, not megabytes.
        """
        answers = await self.bus.gather({"op": "list", "api": api, "limit": limit})
        found = [c for reply in answers.replies for c in reply.get("connections", [])]
        total = sum(int(reply.get("total", len(reply.get("connections", [])))) for reply in answers.replies)
        oldest = heapq.nsmallest(limit, found, key=lambda c: c["opened_at"])
        return Listed(oldest, total, len(answers.replies), answers.expected)

    async def send(self, connection_id: str, data: str | bytes) -> str:
        """Send to the connection's client on whichever worker holds it; returns that worker's id."""
        payload = {"text": data} if isinstance(data, str) else {"binary": base64.b64encode(data).decode()}
        return await self._command({"op": "send", "id": connection_id, **payload})

    async def kick(self, connection_id: str, code: int = 1000, reason: str = "") -> str:
        """Close the connection on whichever worker holds it; returns that worker's id."""
        if wire_code(code) != code or code == 1005:
            raise Invalid("invalid close code", [f"code: {code} may not be sent in a close frame"])
        if len(reason.encode()) > 123:
            raise Invalid("invalid close reason", ["reason: longer than the 123 bytes a close frame holds"])
        return await self._command({"op": "close", "id": connection_id, "code": code, "reason": reason})

    def start_closing(self, connection_id: str, code: int, reason: str) -> asyncio.Task[bool]:
        """Close a connection of this worker's in the background (a failure is a WARNING in the log)."""
        task = asyncio.create_task(self.gateway.close_connection(connection_id, code, reason))
        self._closing.add(task)
        task.add_done_callback(self._closed)
        return task

    def _closed(self, task: asyncio.Task[bool]) -> None:
        self._closing.discard(task)
        if not task.cancelled() and (failure := task.exception()) is not None:  # retrieved: no "never retrieved"
            logger.warning("management: closing a connection failed: %r", failure)

    async def _command(self, command: Command) -> str:
        """Run a command on the worker holding the connection; returns that worker's id."""
        answers = await self.bus.gather(command, until=lambda reply: bool(reply.get("found")))
        reply = next((r for r in answers.replies if r.get("found")), None)
        if reply is None:
            raise NotFound(f"no open connection '{command['id']}'")
        if not reply.get("done"):
            raise Conflict(f"connection '{command['id']}' is closing")
        return str(reply.get("worker", self.bus.worker))

    async def answer(self, command: Command) -> Command | None:
        """This worker's answer to another's ``list``, ``send`` or ``close`` (``None``: not one of them)."""
        op = command.get("op")
        if op == "list":
            api, limit = command.get("api"), command.get("limit")
            held = [c for c in self.gateway.connections() if api is None or c.api == api]
            total = len(held)
            if isinstance(limit, int) and total > limit:
                held = heapq.nsmallest(limit, held, key=lambda c: c.opened_at)
            return {"connections": [_describe(c, self.bus.worker) for c in held], "total": total}
        connection_id = command.get("id")
        if not any(c.id == connection_id for c in self.gateway.connections()):
            return {"found": False}
        if op == "send":
            text = command.get("text")
            data = text if isinstance(text, str) else base64.b64decode(command.get("binary", ""))
            return {"found": True, "done": await self.gateway.send_to_connection(str(connection_id), data)}
        if op == "close":
            # The closing handshake may take the upstream's close_timeout: answer once it started.
            closing = self.start_closing(str(connection_id), int(command["code"]), str(command["reason"]))
            await asyncio.wait({closing}, timeout=0.5)
            return {"found": True, "done": True}
        return None


def _describe(connection: Any, worker: str) -> dict[str, Any]:
    stats = connection.stats
    return {
        "id": connection.id,
        "api": connection.api,
        "client": connection.client,
        "peer": getattr(connection, "peer", connection.client),
        "subject": connection.subject,
        "subscription": connection.subscription,
        "opened_at": connection.opened_at,
        "messages_in": stats.messages_in,
        "bytes_in": stats.bytes_in,
        "messages_out": stats.messages_out,
        "bytes_out": stats.bytes_out,
        "backend": connection.backend,
        "worker": worker,
    }


__all__ = ["DEFAULT_LISTED", "MAX_LISTED", "Listed", "LiveConnections"]
