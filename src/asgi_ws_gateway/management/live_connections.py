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
import re
from dataclasses import dataclass
from typing import Any

from ..middleware import WebSocketGateway
from ..redact import CONTROL_CHARACTERS
from ..relay.close_codes import wire_code
from .bus import Answers, Bus, Command
from .errors import Conflict, Invalid, NotFound, Unavailable

DEFAULT_LISTED = 1000
"""Open connections ``GET /connections`` lists when it is not given a ``limit``."""
MAX_LISTED = 10_000
"""The most it lists at once."""

SEND_ANSWER_WAIT = 1.0
"""Seconds a worker waits for a message it was told to send before it answers: well within the 3 s
the asking worker waits for answers (:meth:`.bus.Bus.gather`). A client that reads nothing holds a send
until the relay drops it (20 s); the worker answered once it was done, too late, and the API said
404 ``no open connection``. Each such send kept its message in memory: 400 sends of 1 MB to one
client that read nothing took a worker from 94 to 565 MB. One send per connection is in flight now."""

logger = logging.getLogger(__name__)


_UNREADABLE = re.compile(f"[{CONTROL_CHARACTERS}]")
"""What a close reason the gateway sends may not hold: control, line-breaking and bidi characters."""


@dataclass(frozen=True)
class Listed:
    """A page of open connections over every worker: the oldest ``found``, ``total`` open in all;
    ``answered`` of ``expected`` workers did, ``missing`` names those of the bus's roster that did not."""

    found: list[dict[str, Any]]
    total: int
    answered: int
    expected: int
    missing: tuple[str, ...] = ()


class LiveConnections:
    """The open connections of ``gateway`` and, through ``bus``, of every other worker's."""

    def __init__(self, gateway: WebSocketGateway, bus: Bus) -> None:
        self.gateway = gateway
        self.bus = bus
        self._closing: set[asyncio.Task[Any]] = set()
        self._sending: dict[str, asyncio.Task[bool]] = {}  # by connection id: one message in flight each

    async def connections(self, api: str | None = None, limit: int = DEFAULT_LISTED) -> Listed:
        """The ``limit`` oldest open connections over every worker, and how many are open in all.

        Each worker sends at most ``limit`` (through Redis in the shared mode): a gateway holding
        100,000 connections answers a listing, or the live console's poll, with a page, not megabytes.
        """
        answers = await self.bus.gather({"op": "list", "api": api, "limit": limit})
        found = [c for reply in answers.replies for c in reply.get("connections", [])]
        total = sum(int(reply.get("total", len(reply.get("connections", [])))) for reply in answers.replies)
        oldest = heapq.nsmallest(limit, found, key=lambda c: c["opened_at"])
        return Listed(oldest, total, len(answers.replies), answers.expected, tuple(answers.missing))

    async def send(self, connection_id: str, data: str | bytes) -> str:
        """Send to the connection's client on whichever worker holds it; returns that worker's id."""
        payload = {"text": data} if isinstance(data, str) else {"binary": base64.b64encode(data).decode()}
        return await self._command({"op": "send", "id": connection_id, **payload}, "sent")

    async def kick(self, connection_id: str, code: int = 1000, reason: str = "") -> str:
        """Close the connection on whichever worker holds it; returns that worker's id.

        Raises :class:`~.errors.Conflict` when it is closing already (its close is not this one's, and
        nothing is sent), :class:`~.errors.NotFound` when no worker holds it."""
        if wire_code(code) != code or code == 1005:
            raise Invalid("invalid close code", [f"code: {code} may not be sent in a close frame"])
        if len(reason.encode()) > 123:
            raise Invalid("invalid close reason", ["reason: longer than the 123 bytes a close frame holds"])
        if (bad := _UNREADABLE.search(reason)) is not None:  # the client shows it, the access log quotes it
            problem = f"reason: {bad.group()!a} has no place in a close reason (one line of text)"
            raise Invalid("invalid close reason", [problem])
        return await self._command({"op": "close", "id": connection_id, "code": code, "reason": reason}, "closed")

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

    async def _command(self, command: Command, done: str) -> str:
        """Run a command on the worker holding the connection; returns that worker's id. ``done``: what it
        does (``closed``), for the answer that says where it may not have been done."""
        answers = await self.bus.gather(command, until=lambda reply: bool(reply.get("found")))
        reply = next((r for r in answers.replies if r.get("found")), None)
        if reply is None and len(answers.replies) < answers.expected:
            raise _not_all_answered(answers, str(command["id"]), done)
        if reply is None:
            raise NotFound(f"no open connection '{command['id']}'")
        if reply.get("busy"):
            raise Conflict(f"connection '{command['id']}' has not yet read the last message sent to it: one at a time")
        if reply.get("closing"):
            raise Conflict(
                f"connection '{command['id']}' is already closing (its client or upstream closed it, or the gateway "
                f"is: a drain, a policy, a shutdown, an earlier close): not {done} with this code",
                [f"worker {reply.get('worker', self.bus.worker)}: already closing"],
            )
        if not reply.get("done"):
            # (Only a send is not done.) A spliced connection takes the gateway's message between messages
            # only: while its upstream is part way through one, the answer was "is closing", which it was not.
            raise Conflict(
                f"connection '{command['id']}' is closing, or its upstream is part way through a message: try again"
            )
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
            return await self._send_here(str(connection_id), command)
        if op == "close":
            # The closing handshake may take the upstream's close_timeout: answer once it started. Whether this
            # close is the one its sides get is decided at the task's first step, which runs before the wait's
            # timeout can: a task still running closes the connection; one done said whether it did.
            closing = self.start_closing(str(connection_id), int(command["code"]), str(command["reason"]))
            await asyncio.wait({closing}, timeout=0.5)
            if closing.done() and not closing.cancelled() and closing.exception() is None and not closing.result():
                # Closing already (or closed meanwhile): "done" false too, for an asking worker of an older version.
                return {"found": True, "done": False, "closing": True}
            return {"found": True, "done": True}
        return None

    def _sent(self, connection_id: str, task: asyncio.Task[bool]) -> None:
        if self._sending.get(connection_id) is task:
            del self._sending[connection_id]
        if not task.cancelled() and (failure := task.exception()) is not None:  # retrieved: no "never retrieved"
            logger.warning("management: sending to a connection failed: %r", failure)

    async def _send_here(self, connection_id: str, command: Command) -> Command:
        """Send to a connection of this worker's, answering within :data:`SEND_ANSWER_WAIT`: ``done`` once
        sent (False: it is closing), also while it still waits for the client to read; ``busy`` while an
        earlier message to it does."""
        if connection_id in self._sending:
            return {"found": True, "busy": True}
        text = command.get("text")
        data = text if isinstance(text, str) else base64.b64decode(command.get("binary", ""))
        sending = asyncio.create_task(self.gateway.send_to_connection(connection_id, data))
        self._sending[connection_id] = sending
        sending.add_done_callback(lambda task: self._sent(connection_id, task))
        done, _ = await asyncio.wait({sending}, timeout=SEND_ANSWER_WAIT)
        if not done:
            return {"found": True, "done": True}  # taken: it goes out once the client reads
        # A send that failed (logged by _sent) is as one to a connection that is closing.
        return {"found": True, "done": sending.exception() is None and sending.result()}


def _not_all_answered(answers: Answers, connection_id: str, done: str) -> Unavailable:
    """The 503 of a command that found nothing while some workers did not answer: one may hold it.

    Those off the bus (lost Redis, not subscribed again yet) never get the command, now or later: it is
    not queued. Those that received it and answered late may have run it."""
    parts = []
    if answers.unreached > 0:
        parts.append(f"{answers.unreached} not on the management bus (lost Redis?): not {done} there, nor later")
    if answers.late > 0 and answers.full:
        parts.append(f"{answers.late} received it, but Redis is full (OOM, maxmemory) and refused to store their "
                     f"answers: it may have been {done} there")  # fmt: skip
    elif answers.late > 0:
        parts.append(f"{answers.late} received it but did not answer in time: it may have been {done} there")
    silent = answers.expected - len(answers.replies)
    return Unavailable(
        f"{silent} of {answers.expected} worker(s) did not answer: one may hold connection '{connection_id}'; "
        + "; ".join(parts),
        [f"worker {worker}: no answer" for worker in answers.missing],
    )


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
