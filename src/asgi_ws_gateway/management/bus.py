"""Commands to every worker: apply a new configuration, list, message or close connections.

A command is a JSON object with an ``op``. :meth:`Bus.publish` tells every worker and waits for
no answer; :meth:`Bus.gather` collects the answers. :class:`LocalBus` is the single-process bus.
:class:`RedisBus` publishes on the channel ``<prefix>:{mgmt}:bus``; ``PUBLISH`` returns how many
workers received the command, so the caller knows how many answers to wait for, and each worker
answers by pushing onto a list of the caller's (``BLPOP``), which outlives a missed subscription.

On Redis Cluster a plain ``PUBLISH`` counts only the subscribers of the node it ran on, so the bus
uses sharded pub/sub there: ``SPUBLISH``/``SSUBSCRIBE`` both go to the master of the channel's slot,
whose count is every worker. Reply lists share the ``{mgmt}`` hash tag, so they live on that slot too.

A master demoted to a replica behind the bus's address (a managed Redis failing over) keeps its
clients: a subscriber there still hears what the new master publishes (replicas get ``PUBLISH``), but
the new master's ``PUBLISH`` does not count it, so no answer of its was awaited; and a publisher whose
pooled connection reached it published to it alone, then had ``READONLY`` for every reply list. Each
worker checks every ``check_interval`` seconds that the server its pool reaches takes writes and counts
its subscription (a write a replica refuses, and a ``PUBLISH`` on a channel of its own): if not, it
empties the pool and subscribes again. After any new subscription (a Redis restarted, a failover)
the worker runs a ``resync``: what was published meanwhile is lost, the configuration is caught up.

Lost, not queued: a command published while a worker was off the bus never reaches it, then or later.
``PUBLISH`` does not count such a worker, so :meth:`RedisBus.gather` also reads the roster of the
workers that should be on the bus (:mod:`.bus_roster`) and names those that did not answer
(:attr:`Answers.missing`): the caller can tell "nobody holds it" from "someone did not hear". A
command delivered twice (redis-py sends a ``PUBLISH`` again after a connection lost mid-call) runs once.

A Redis that refuses the roster for good (an ACL granting the rest of what the gateway uses, not the
roster's commands) made every gathering command a 503, and the refused renewals were logged at DEBUG
only. Now the renewal's refusal is a WARNING naming the command (one at once, then one per
``ROSTER_REFUSED_LOG_INTERVAL``), and :meth:`RedisBus.gather` counts on ``PUBLISH`` alone while the
roster cannot be read, as before the roster existed (said once at WARNING).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from logging import DEBUG, WARNING
from typing import Any, Protocol, TypeVar

import redis.asyncio as redis
from redis.exceptions import AuthenticationError, OutOfMemoryError, ReadOnlyError, ResponseError

from ..log_throttle import OutageLog
from ..redact import printable
from ..redis_client import REDIS_FAILURES, AnyRedis, stop_task
from .bus_roster import Roster
from .errors import Unavailable

logger = logging.getLogger(__name__)
T = TypeVar("T")

Command = dict[str, Any]
Handler = Callable[[Command], Awaitable[Command | None]]
"""Runs one command on this worker; returns the answer (``None``: no answer)."""


ROSTER_LAPSE_CHECKS = 6
"""A worker's roster entry lapses this many renewals (``check_interval``) after the last: one that died."""
REMEMBERED_COMMANDS = 1024
"""Commands (by their reply list) a worker remembers having run, so that one delivered again runs once."""
LEAVE_TIMEOUT = 2.0
"""Seconds a stopping worker waits for Redis to remove its roster entry: one that does not answer (paused,
unreachable, a client without a socket timeout) held the shutdown for ever; the entry then lapses."""
ROSTER_REFUSED_LOG_INTERVAL = 300.0
"""Seconds between two lines saying Redis refuses to renew the roster: renewed every few seconds, it
would be a line each time, for as long as the ACL stays."""
ROSTER_HELP = "grant the roster's commands: docs/management.md, 'When a worker is off the bus'"
FULL_ANSWERS = (
    "Redis is full (OOM, maxmemory) and refused to store their answers: %d received the command and most "
    "likely ran it, unconfirmed"
)
"""What the bus says of the late answers of a command while Redis refuses writes for memory."""
ROSTER_FULL_HELP = (
    "Redis is full (maxmemory): raise it or free memory: docs/management.md, 'When a worker is off the bus'"
)


def roster_help(exc: BaseException | None) -> str:
    """What an operator does about Redis refusing the roster: a full Redis (``OOM``) needs memory, not the
    ACL grants the other refusals do (the OOM line told them to grant commands that were granted)."""
    return ROSTER_FULL_HELP if isinstance(exc, OutOfMemoryError) else ROSTER_HELP


@dataclass
class Answers:
    """What :meth:`Bus.gather` collected: the ``replies`` of ``expected`` workers, at least (those the
    command reached, or those that answered and the roster's others, whichever is more); ``missing``:
    the workers of the roster that did not answer (off the bus, or late); ``reached``: how many workers
    received the command (``PUBLISH``'s count; default ``expected``); ``full``: Redis refused to store
    answers (``OOM``, at its ``maxmemory``), so a worker that received the command and ran it could not say
    so: the late ones most likely ran it."""

    replies: list[Command]
    expected: int
    missing: list[str] = field(default_factory=list)
    reached: int | None = None
    full: bool = False

    @property
    def late(self) -> int:
        """Workers that received the command and did not answer (in time): they may have run it."""
        return (self.expected if self.reached is None else self.reached) - len(self.replies)

    @property
    def unreached(self) -> int:
        """Workers the command did not reach, at least (off the bus: they never get it, then or later)."""
        return 0 if self.reached is None else self.expected - self.reached


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

    def __init__(self, client: AnyRedis, *, prefix: str = "asgi-ws-gw", check_interval: float = 5.0) -> None:
        self.client = client
        self.check_interval = check_interval
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
        self._handler: Handler | None = None
        self._check_channel = f"{self.channel}:{self.worker}"  # what the check publishes: this worker's alone
        self._probe_key = f"{prefix}:{{mgmt}}:reply:probe"  # written by no one: the check's PEXPIRE finds nothing
        self._stale = False  # the subscription is on a server that is no longer the master: subscribe again
        self._checker: asyncio.Task[None] | None = None
        self._uncounted = 0  # checks in a row that found the subscription uncounted (a proxy may never count it)
        self._stale_lines = OutageLog()
        renewal = check_interval if check_interval > 0 else 5.0
        self.roster = Roster(client, prefix=prefix, worker=self.worker, ttl=ROSTER_LAPSE_CHECKS * renewal)
        self._renewal = renewal
        self._renew_now = asyncio.Event()
        self._renewer: asyncio.Task[None] | None = None
        self._roster_refused = False  # Redis refused the last read of the roster (gather counts PUBLISH's alone)
        self._ran: OrderedDict[str, None] = OrderedDict()  # reply lists of the commands run lately

    async def start(self, handler: Handler) -> None:
        self._handler = handler
        self._renewer = asyncio.create_task(self._renew(), name="management-bus-roster")
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
        await stop_task(self._listener)
        self._listener = None
        await self._stop_checker()
        await self._stop_renewer()
        raise Unavailable(f"cannot join the management bus: {problem}")

    async def publish(self, command: Command) -> None:
        await self._publish(json.dumps(command))

    async def _publish(self, data: str) -> int:
        if isinstance(self.client, redis.RedisCluster):
            return int(await self._call(self.client.spublish(self.channel, data)))
        return int(await self._call(self.client.publish(self.channel, data)))

    async def _call(self, call: Awaitable[T]) -> T:
        """:func:`_call`; a ``READONLY`` answer (a demoted master's connection, pooled) empties the pool and
        makes the subscription, which was opened as those connections were, subscribe again."""
        try:
            return await _call(call)
        except Unavailable as exc:
            if isinstance(exc.__cause__, ReadOnlyError):
                await self._forget_connections()
            raise

    async def _forget_connections(self) -> None:
        if type(self.client) is redis.Redis:  # Sentinel's client reconnects by itself; a cluster's follows MOVED
            with contextlib.suppress(*REDIS_FAILURES):
                await self.client.connection_pool.disconnect()
            self._stale = True

    async def _check(self) -> None:
        """Every ``check_interval`` while subscribed (plain and Sentinel clients): whether the server the pool
        reaches takes writes and counts this worker's subscription; if not, subscribe again (see the module)."""
        while True:
            await asyncio.sleep(self.check_interval)
            if self._stale or self._lost or not self._subscribed.is_set():
                continue
            try:
                async with self.client.pipeline(transaction=False) as pipe:
                    pipe.pexpire(self._probe_key, 1)  # a write: READONLY on a replica, nothing on the master
                    pipe.publish(self._check_channel, "")
                    written, counted = await pipe.execute(raise_on_error=False)
            except REDIS_FAILURES:  # Redis lost: the listener finds out and subscribes again
                continue
            if isinstance(written, ReadOnlyError):
                await self._forget_connections()
                self._stale_line("the server its connections reach is a read-only replica now")
            elif isinstance(counted, int) and counted == 0:
                self._uncounted += 1
                if self._uncounted == 2:  # twice in a row, the second right after subscribing: a proxy
                    logger.warning("management bus: PUBLISH does not count this worker's subscription (a proxy?); "
                                   "no longer checking that it is on the master")  # fmt: skip
                if self._uncounted <= 1:
                    self._stale = True
                    self._stale_line("the master does not count its subscription (failed over)")
            elif isinstance(counted, int):
                self._uncounted = 0

    def _stale_line(self, why: str) -> None:
        count = self._stale_lines.event()
        if count:
            logger.warning("management bus: %s; subscribing again (%d time(s) since the last such line)", why, count)

    async def _renew(self) -> None:
        """This worker's roster entry, renewed every ``check_interval`` while subscribed, and at once on
        subscribing (again)."""
        failures = OutageLog()
        refusals = OutageLog(ROSTER_REFUSED_LOG_INTERVAL)
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._renewal):
                    await self._renew_now.wait()
            self._renew_now.clear()
            if self._stale or self._lost or not self._subscribed.is_set():
                continue
            try:
                await self.roster.renew()
            except REDIS_FAILURES as exc:
                if (why := self.roster.refusal(exc)) is not None:  # an ACL: refused until the operator sees it
                    if count := refusals.event():
                        logger.warning("management bus: Redis refused to renew this worker's roster entry, %d time(s) "
                                       "(%s): a worker off the bus is not named in the answers; %s",
                                       count, printable(why), roster_help(exc))  # fmt: skip
                elif count := failures.event():  # Redis lost: renewed once subscribed again
                    logger.debug("management bus: roster not renewed (%s), %d time(s)", type(exc).__name__, count)

    async def _stop_renewer(self) -> None:
        renewer, self._renewer = self._renewer, None
        if renewer is not None:
            await stop_task(renewer)  # a cancellation lost in a renewal's send: aclose waited for ever

    async def _stop_checker(self) -> None:
        checker, self._checker = self._checker, None
        if checker is not None:
            await stop_task(checker)

    async def gather(
        self, command: Command, *, until: Callable[[Command], bool] | None = None, wait: float = 3.0
    ) -> Answers:
        reply_to = f"{self._prefix}:{{mgmt}}:reply:{uuid.uuid4().hex}"
        roster = await self._roster()  # read first: a failure here sent nothing
        expected = await self._publish(json.dumps({**command, "reply_to": reply_to}))
        replies: list[Command] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        try:
            while len(replies) < expected and (left := deadline - loop.time()) > 0:
                try:
                    item = await self._call(self.client.blpop([reply_to], timeout=left))
                except Unavailable as exc:  # sent: the workers it reached may have run it
                    raise Unavailable(
                        f"{exc.detail} after the command reached {expected} worker(s): it may have run there, "
                        f"{len(replies)} answered"
                    ) from exc.__cause__
                if item is None:
                    break
                replies.append(json.loads(item[1]))
                if until is not None and until(replies[-1]):
                    return Answers(replies, expected)
        finally:
            with contextlib.suppress(*REDIS_FAILURES):  # a list left behind expires in 60 s
                await self.client.delete(reply_to)
        answered = {str(reply.get("worker")) for reply in replies}
        self.roster.heard(answered)
        missing = sorted(roster - answered)
        answers = Answers(replies, max(expected, len(replies) + len(missing)), missing, expected)
        if len(replies) < answers.expected:
            # Under OOM a worker's answer (RPUSH) is refused though it ran the command: "did not answer"
            # alone read as if the command had failed there.
            answers.full = answers.late > 0 and await self._full(reply_to)
            logger.warning(
                "%d of %d worker(s) did not answer %r in %g s (%d not on the bus)%s: %s",
                answers.expected - len(replies),
                answers.expected,
                command.get("op"),
                wait,
                answers.unreached,
                f"; {FULL_ANSWERS % answers.late}" if answers.full else "",
                printable(", ".join(missing[:10]) or "(none in the roster)"),
            )
        return answers

    async def _full(self, reply_to: str) -> bool:
        """Whether Redis refuses to store an answer for being full: an answer's own write, on the reply list
        (the workers' slot on a cluster), which is deleted after (DEL is allowed under OOM)."""
        try:
            await self.client.rpush(reply_to, "")
        except OutOfMemoryError:
            return True
        except REDIS_FAILURES:
            return False
        finally:
            with contextlib.suppress(*REDIS_FAILURES):
                await self.client.delete(reply_to)
        return False

    async def _roster(self) -> set[str]:
        """The workers of the roster; none while Redis refuses to read it (an ACL): the command then waits
        for the workers ``PUBLISH`` reached, as before the roster, rather than being a 503 for ever."""
        try:
            roster = await self._call(self.roster.workers())
        except Unavailable as exc:
            why = self.roster.refusal(exc.__cause__) if exc.__cause__ is not None else None
            if why is None:
                raise
            if not self._roster_refused:
                self._roster_refused = True
                logger.warning("management bus: Redis refused to read the roster (%s): commands wait for the "
                               "workers PUBLISH reached, a worker off the bus is not named; %s",
                               printable(why), roster_help(exc.__cause__))  # fmt: skip
            return set()
        if self._roster_refused:
            self._roster_refused = False
            logger.warning("management bus: the roster is read again: a worker off the bus is named in the answers")
        return roster

    async def aclose(self) -> None:
        self._closing = True
        await self._stop_renewer()  # before leaving: a renewal after would write the entry back
        # Off the roster while still subscribed: the other way round, a command in between found this
        # worker on the roster and not on the channel, and called it missing.
        with contextlib.suppress(*REDIS_FAILURES, TimeoutError):  # else it lapses: the others wait for it until then
            async with asyncio.timeout(LEAVE_TIMEOUT):
                await self.roster.leave()
        if self._listener is not None:
            await stop_task(self._listener)
        await self._stop_checker()
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
        await self.client.aclose()

    async def _listen(self, handler: Handler) -> None:
        if not self.sharded and self.check_interval > 0:
            self._checker = asyncio.create_task(self._check(), name="management-bus-check")
        while True:
            pubsub = self.client.pubsub()
            try:
                async for data in self._messages(pubsub):
                    command = self._command(data)
                    if command is None or self._ran_before(command):
                        continue
                    task = asyncio.create_task(self._run(handler, command))
                    self._running.add(task)
                    task.add_done_callback(self._running.discard)
            except _Stale:  # on a demoted master: subscribe again at once, on a connection to the new one
                self._lost = True
                self.roster.lost()
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
                self.roster.lost()
                await asyncio.sleep(1)
                # Commands published meanwhile are lost; a resync once subscribed again catches up on
                # configuration (run before the subscription, it missed a change saved in between).
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # typed from redis 8.2

    def _ran_before(self, command: Command) -> bool:
        """Whether this worker has run ``command`` already: redis-py sends a ``PUBLISH`` again when its
        connection was lost before the answer, which Redis may have delivered (a message sent twice)."""
        reply_to = command.get("reply_to")
        if not isinstance(reply_to, str):
            return False
        if reply_to in self._ran:
            return True
        self._ran[reply_to] = None
        if len(self._ran) > REMEMBERED_COMMANDS:
            self._ran.popitem(last=False)
        return False

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
            self._stale = False
            await pubsub.subscribe(self.channel, self._check_channel)
            confirmed = False
            while not self._stale:
                message = await pubsub.get_message(ignore_subscribe_messages=False, timeout=1.0)
                if message is None or message["channel"] != self.channel:
                    continue
                if message["type"] == "subscribe":
                    # Again on this pubsub: redis-py reconnected and subscribed again by itself (a Redis
                    # restarted while it retried): what was published meanwhile was lost.
                    self._on_subscribed(again=confirmed)
                    confirmed = True
                elif message["type"] == "message":
                    yield message["data"]
            raise _Stale
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
            elif message["type"] == "sunsubscribe":  # Redis's, as its slot moved or its master was demoted
                raise ConnectionError("Redis ended the sharded subscription (the slot moved or failed over)")

    def _on_subscribed(self, *, again: bool = False) -> None:
        self._subscribed.set()
        self._settled.set()
        self._renew_now.set()  # on the roster at once (again): a Redis that lost its data lost it
        if self._lost:
            logger.info("management bus: subscribed again")
            self._lost = False
            again = True
        if again:  # the others may be subscribing again too: wait for those it knew
            self.roster.rejoined()
        if again and self._handler is not None:  # commands published meanwhile are lost: catch up
            task = asyncio.create_task(self._run(self._handler, {"op": "resync"}))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, handler: Handler, command: Command) -> None:
        ran = False
        try:
            answer = await handler(command)
            ran = True
            reply_to = command.get("reply_to")
            if answer is not None and isinstance(reply_to, str):
                async with self.client.pipeline(transaction=False) as pipe:
                    pipe.rpush(reply_to, json.dumps({**answer, "worker": self.worker}))
                    pipe.expire(reply_to, 60)
                    await self._call(pipe.execute())
        except Unavailable as exc:  # Redis failed (logged where it failed): the caller hears one answer less
            if ran and isinstance(exc.__cause__, OutOfMemoryError):  # the caller's line says why it heard none
                logger.warning("management bus: ran %r, but Redis is full (OOM, maxmemory): its answer was refused",
                               command.get("op"))  # fmt: skip
            else:
                what = "ran, its answer not sent" if ran else "not run"
                logger.debug("management bus: command %r %s: %s", command.get("op"), what, exc.__cause__ or exc)
        except Exception:
            logger.exception("management bus: command %r failed", command.get("op"))


class _Stale(Exception):
    """The subscription is on a server that is no longer the master: subscribe again."""


async def _call(call: Awaitable[T]) -> T:
    """One Redis call of the bus: a failure is :class:`Unavailable` (a 503, not a 500)."""
    try:
        return await call
    except REDIS_FAILURES as exc:
        raise Unavailable.of("management bus (Redis)", exc) from exc


__all__ = ["Answers", "Bus", "Command", "Handler", "LocalBus", "RedisBus", "worker_id"]
