"""Commands to every worker: apply a new configuration, list, message or close connections.

A command is a JSON object with an ``op``. :meth:`Bus.publish` tells every worker and waits for
no answer; :meth:`Bus.gather` collects the answers. :class:`LocalBus` is the single-process bus.
:class:`RedisBus` publishes on the channel ``<prefix>:{mgmt}:bus``; ``PUBLISH`` returns how many
workers received the command, so the caller knows how many answers to wait for, and each worker
answers by pushing onto a list of the caller's (``BLPOP``), which outlives a missed subscription.

On Redis Cluster a plain ``PUBLISH`` counts only the subscribers of the node it ran on, so the bus
uses sharded pub/sub there: ``SPUBLISH``/``SSUBSCRIBE`` both go to the master of the channel's slot,
whose count is every worker. Reply lists share the ``{mgmt}`` hash tag, so they live on that slot too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from logging import DEBUG, WARNING
from typing import Any, Protocol, TypeVar

import redis.asyncio as redis
from redis.exceptions import AuthenticationError, ResponseError

from ..log_throttle import OutageLog
from ..redis_client import REDIS_FAILURES, AnyRedis
from .errors import Unavailable

logger = logging.getLogger(__name__)
T = TypeVar("T")

Command = dict[str, Any]
Handler = Callable[[Command], Awaitable[Command | None]]
"""Runs one command on this worker; returns the answer (``None``: no answer)."""


@dataclass
class Answers:
    """What :meth:`Bus.gather` collected: ``expected`` workers received the command."""

    replies: list[Command]
    expected: int


class Bus(Protocol):
    worker: str
    """This worker's id: ``host:pid``."""

    async def start(self, handler: Handler) -> None: ...

    async def publish(self, command: Command) -> None: ...

    async def gather(
        self, command: Command, *, until: Callable[[Command], bool] | None = None, wait: float = 3.0
    ) -> Answers:
        """Send ``command`` to every worker and collect answers, stopping early once ``until(answer)``."""
        ...

    async def aclose(self) -> None: ...


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class LocalBus:
    """One process: commands run here (``publish`` is a no-op: this worker applied the change itself)."""

    def __init__(self) -> None:
        self.worker = worker_id()
        self._handler: Handler | None = None

    async def start(self, handler: Handler) -> None:
        self._handler = handler

    async def publish(self, command: Command) -> None:
        return None

    async def gather(
        self, command: Command, *, until: Callable[[Command], bool] | None = None, wait: float = 3.0
    ) -> Answers:
        assert self._handler is not None, "the bus was not started"
        answer = await self._handler(command)
        return Answers([answer] if answer is not None else [], 1)

    async def aclose(self) -> None:
        self._handler = None


# Answers to a first SUBSCRIBE that retrying does not change (an ACL without pub/sub, a wrong password).
_REFUSALS = (ResponseError, AuthenticationError)


class RedisBus:
    """Every worker and host that shares a Redis.

    Args:
        client: a ``redis.asyncio`` client (plain, Sentinel or cluster) created with ``decode_responses=True``
            (and ``encoding_errors="replace"``: a message that is not UTF-8 is then ignored, not a lost subscription).
        prefix: namespace of the channel and keys (default ``asgi-ws-gw``).
    """

    def __init__(self, client: AnyRedis, *, prefix: str = "asgi-ws-gw") -> None:
        self.client = client
        self.sharded = isinstance(client, redis.RedisCluster)
        self.worker = f"{worker_id()}:{uuid.uuid4().hex[:6]}"
        self.channel = f"{prefix}:{{mgmt}}:bus"
        self._prefix = prefix
        self._listener: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._subscribed = asyncio.Event()
        self._refused: Exception | None = None  # why Redis refused the first subscription, if it did
        self._settled = asyncio.Event()  # subscribed, or refused
        self._lost = False  # Redis was lost and the bus has not subscribed again since
        self._ignored = OutageLog()  # messages on the channel that are not commands
        self._closing = False

    async def start(self, handler: Handler) -> None:
        self._listener = asyncio.create_task(self._listen(handler), name="management-bus")
        try:
            async with asyncio.timeout(10):
                await self._settled.wait()  # subscribed: commands published from now on reach this worker
        except TimeoutError:  # Redis answers commands but not SUBSCRIBE (a proxy): not started
            problem = "Redis did not subscribe it within 10 s"
        else:
            if self._refused is None:
                return
            # An ACL without pub/sub, a wrong password: retrying for 10 s would not change the answer.
            problem = f"Redis refused to subscribe it ({type(self._refused).__name__}: {self._refused})"
        self._listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._listener
        self._listener = None
        raise Unavailable(f"cannot join the management bus: {problem}")

    async def publish(self, command: Command) -> None:
        await self._publish(json.dumps(command))

    async def _publish(self, data: str) -> int:
        if isinstance(self.client, redis.RedisCluster):
            return int(await _call(self.client.spublish(self.channel, data)))
        return int(await _call(self.client.publish(self.channel, data)))

    async def gather(
        self, command: Command, *, until: Callable[[Command], bool] | None = None, wait: float = 3.0
    ) -> Answers:
        reply_to = f"{self._prefix}:{{mgmt}}:reply:{uuid.uuid4().hex}"
        expected = await self._publish(json.dumps({**command, "reply_to": reply_to}))
        replies: list[Command] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        try:
            while len(replies) < expected and (left := deadline - loop.time()) > 0:
                item = await _call(self.client.blpop([reply_to], timeout=left))
                if item is None:
                    break
                replies.append(json.loads(item[1]))
                if until is not None and until(replies[-1]):
                    break
        finally:
            with contextlib.suppress(*REDIS_FAILURES):  # a list left behind expires in 60 s
                await self.client.delete(reply_to)
        if len(replies) < expected and not (until is not None and replies and until(replies[-1])):
            logger.warning(
                "%d of %d worker(s) did not answer %r in %g s",
                expected - len(replies),
                expected,
                command.get("op"),
                wait,
            )
        return Answers(replies, expected)

    async def aclose(self) -> None:
        self._closing = True
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
        await self.client.aclose()

    async def _listen(self, handler: Handler) -> None:
        while True:
            pubsub = self.client.pubsub()
            try:
                async for data in self._messages(pubsub):
                    command = self._command(data)
                    if command is None:
                        continue
                    task = asyncio.create_task(self._run(handler, command))
                    self._running.add(task)
                    task.add_done_callback(self._running.discard)
            except Exception as exc:  # the listener must outlive whatever Redis sends
                # Redis lost, or an answer redis-py could not read: subscribe again. Had the listener
                # ended, this worker would have heard no command again, silently. One warning per
                # outage: retried every second, it would be a line a second.
                if self._closing:  # the cancellation of aclose() came back as a failed read: stop
                    return
                if not self._subscribed.is_set() and isinstance(exc, _REFUSALS):
                    self._refused = exc
                    self._settled.set()
                    return
                level = DEBUG if self._lost else WARNING
                logger.log(level, "management bus: lost Redis (%s: %s); resubscribing in 1 s", type(exc).__name__, exc)
                self._lost = True
                await asyncio.sleep(1)
                # Commands published meanwhile are lost; a resync catches up on configuration.
                task = asyncio.create_task(self._run(handler, {"op": "resync"}))
                self._running.add(task)
                task.add_done_callback(self._running.discard)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # typed from redis 8.2

    def _command(self, data: str) -> Command | None:
        """The command in a message, or None (logged, throttled) for one that is not a JSON object with an ``op``.

        Anyone who can write to Redis can publish on the channel: a message that is not a command
        (another program's, a truncated one, ``[1]``, nesting deep enough to exhaust the parser)
        is ignored. It used to raise out of the listener, which ended: that worker answered no
        command again, and nothing said so.
        """
        try:
            command = json.loads(data)
        except (ValueError, RecursionError) as exc:
            problem = f"not JSON ({type(exc).__name__})"
        else:
            if isinstance(command, dict) and isinstance(command.get("op"), str):
                return command
            problem = "not a JSON object with an 'op'"
        count = self._ignored.event()
        if count:
            logger.warning("management bus: ignored %d message(s) that are not commands (%d bytes: %s)",
                           count, len(data), problem)  # fmt: skip
        return None

    async def _messages(self, pubsub: Any) -> AsyncIterator[str]:
        """The commands published on the channel, from subscribing on (sharded on a cluster).

        Subscribed means Redis confirmed it: sending SUBSCRIBE does not wait for the answer, which may be
        a refusal (an ACL without pub/sub), and until the confirmation a command published may be missed.
        """
        if not self.sharded:
            await pubsub.subscribe(self.channel)
            async for message in pubsub.listen():
                if message["type"] == "subscribe":
                    self._on_subscribed()
                elif message["type"] == "message":
                    yield message["data"]
            return
        cluster: redis.RedisCluster = self.client  # type: ignore[assignment]
        await cluster.initialize()  # a cold cluster client does not know yet which node owns the slot
        if self._subscribed.is_set():
            # Resubscribing after a lost connection: the slot's master may have failed over, and the
            # client's map of the slots is only refreshed by a command that fails; ask the cluster now.
            await cluster.nodes_manager.initialize()
        await pubsub.ssubscribe(self.channel)
        while True:
            message = await pubsub.get_sharded_message(ignore_subscribe_messages=False, timeout=1.0)
            if message is None:
                continue
            if message["type"] == "ssubscribe":
                self._on_subscribed()
            elif message["type"] == "smessage":
                yield message["data"]

    def _on_subscribed(self) -> None:
        self._subscribed.set()
        self._settled.set()
        if self._lost:
            logger.warning("management bus: subscribed again")
            self._lost = False

    async def _run(self, handler: Handler, command: Command) -> None:
        try:
            answer = await handler(command)
            reply_to = command.get("reply_to")
            if answer is not None and isinstance(reply_to, str):
                async with self.client.pipeline(transaction=False) as pipe:
                    pipe.rpush(reply_to, json.dumps({**answer, "worker": self.worker}))
                    pipe.expire(reply_to, 60)
                    await _call(pipe.execute())
        except Unavailable as exc:  # Redis failed (logged where it failed): the caller hears one answer less
            logger.debug("management bus: command %r not run: %s", command.get("op"), exc.__cause__ or exc)
        except Exception:
            logger.exception("management bus: command %r failed", command.get("op"))


async def _call(call: Awaitable[T]) -> T:
    """One Redis call of the bus: a failure is :class:`Unavailable` (a 503, not a 500)."""
    try:
        return await call
    except REDIS_FAILURES as exc:
        raise Unavailable.of("management bus (Redis)", exc) from exc


__all__ = ["Answers", "Bus", "Command", "Handler", "LocalBus", "RedisBus", "worker_id"]
