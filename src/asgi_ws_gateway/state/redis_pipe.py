"""The limits store's scripts on one connection of their own, pipelined: the per-handshake Redis call.

Through redis-py's asyncio client one ``EVALSHA`` cost ~106 µs of the gateway's CPU (its pool,
retry and observability layers, its command packing and RESP parser, one send system call), for a
reply of a few bytes. Here a call packs its command from a prefix made once, appends a future to
the connection's queue and writes; replies are parsed as they arrive (``data_received``) and given
to the queue's futures in order, so concurrent calls share the connection without waiting for each
other (Redis answers in the order it was asked), and what arrives in one read is parsed in one go.

Failure semantics are redis-py's as the store configures it: a call waits at most ``timeout`` for
its reply; a reply that late, or a connection lost, closes the connection, fails every call
waiting on it (each with its own :class:`redis.exceptions.TimeoutError` or ``ConnectionError``)
and each of them is sent once more on a fresh connection (the scripts count an attempt sent twice
once). An error reply is its caller's alone, mapped to redis-py's exception classes; ``NOSCRIPT``
(a Redis restarted or flushed) sends that call again as ``EVAL``, which caches the script; ``READONLY``
(a master demoted to a replica behind the same address) closes the connection and sends the call
once more on a fresh one, which may reach the new master.

Only for plain ``redis://`` and ``unix://`` URLs without query options (:func:`pipe_for`); TLS,
Cluster and Sentinel keep redis-py's clients, which find nodes and follow failovers.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, cast

from redis._parsers.base import BaseParser
from redis.asyncio.connection import UnixDomainSocketConnection, parse_url
from redis.exceptions import ConnectionError, NoScriptError, ReadOnlyError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

Arg = int | str | bytes


def pipe_for(url: str, timeout: float) -> ScriptPipe | None:
    """A :class:`ScriptPipe` for ``url`` if it is a plain server's URL this module can serve, else None."""
    scheme = url.partition("://")[0]
    if scheme not in ("redis", "unix"):
        return None
    try:
        options = parse_url(url)
    except ValueError:
        return None
    path = options.pop("path", None) if options.get("connection_class") is UnixDomainSocketConnection else None
    options.pop("connection_class", None)
    host, port, db = options.pop("host", "localhost"), options.pop("port", 6379), options.pop("db", 0)
    username, password = options.pop("username", None), options.pop("password", None)
    if options:  # query options (protocol, timeouts, client name...): left to redis-py, which reads them
        return None
    return ScriptPipe(host=host, port=port, path=path, db=db, username=username, password=password, timeout=timeout)


class Script:
    """A Lua script: its ``EVALSHA`` command's head, packed once."""

    def __init__(self, source: str) -> None:
        self.source = source.encode()
        self.sha = hashlib.sha1(self.source, usedforsecurity=False).hexdigest()
        self._evalsha = b"$7\r\nEVALSHA\r\n$40\r\n" + self.sha.encode() + b"\r\n"
        self._eval = b"$4\r\nEVAL\r\n" + _bulk(self.source)
        self._keyed: dict[tuple[Arg, ...], tuple[bytes, bytes]] = {}

    def keyed_command(self, key: str, constants: tuple[Arg, ...], last: str) -> bytes:
        """:meth:`command` of ``([key], [*constants, last])``, the same bytes: the head and ``constants``
        (a limit and its window, alike on every call of a policy) packed once, then one format a call.
        The general packing was ~21 k instructions a rate-limit check, this ~6 k."""
        packed = self._keyed.get(constants)
        if packed is None:
            packed = (b"*%d\r\n%b$1\r\n1\r\n" % (5 + len(constants), self._evalsha),
                      b"".join(_bulk(_encode(item)) for item in constants))  # fmt: skip
            if len(self._keyed) < _KEYED_KEPT:
                self._keyed[constants] = packed
        head, middle = packed
        data, tail = key.encode("utf-8", "surrogatepass"), last.encode("utf-8", "surrogatepass")
        return b"%b$%d\r\n%b\r\n%b$%d\r\n%b\r\n" % (head, len(data), data, middle, len(tail), tail)

    def command(self, keys: Sequence[str], args: Sequence[Arg], *, full: bool = False) -> bytes:
        """``EVALSHA`` (``EVAL`` if ``full``) of this script with ``keys`` and ``args``, in RESP."""
        items = (*keys, *args)
        parts = [b"*%d\r\n%b$%d\r\n%d\r\n" % (
            3 + len(items), self._eval if full else self._evalsha, len(str(len(keys))), len(keys),
        )]  # fmt: skip
        for item in items:
            # _encode inline (a call per item), and a format that copies no data: a fifth of the packing.
            if type(item) is str:
                data = item.encode("utf-8", "surrogatepass")
            elif type(item) is int:
                data = b"%d" % item
            else:
                data = _encode(item)
            parts += (b"$%d\r\n" % len(data), data, b"\r\n")
        return b"".join(parts)


class ScriptPipe:
    """Runs scripts on one connection, opened on first use and again after a failure."""

    def __init__(
        self,
        *,
        host: str = "localhost",
        port: int = 6379,
        path: str | None = None,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 0.5,
    ) -> None:
        self.host, self.port, self.path, self.db = host, port, path, db
        self.username, self.password = username, password
        self.timeout = timeout
        self._connection: _Connection | None = None
        self._closed = False
        self._connecting: asyncio.Future[_Connection] | None = None
        self._opening: asyncio.Future[_Connection] | None = None

    async def run(self, script: Script, keys: Sequence[str], args: Sequence[Arg], command: bytes | None = None) -> Any:
        """The script's reply; raises redis-py's exceptions, as its client would. ``command``: the
        ``EVALSHA`` of ``keys`` and ``args`` already packed (:meth:`Script.keyed_command`)."""
        if command is None:
            command = script.command(keys, args)
        for attempt in (1, 2):  # once more on a fresh connection: the one used may predate a Redis restart
            connection = self._connection
            try:
                if connection is None or connection.closed:
                    connection = await self._connect()
                try:
                    return await connection.call(command)
                except NoScriptError:  # Redis lost its scripts (a restart, SCRIPT FLUSH): EVAL caches it again
                    return await connection.call(script.command(keys, args, full=True))
            except ReadOnlyError:
                # The server this connection reaches is a replica now: failed over behind this address
                # (a DNS name, a virtual IP), as redis-py's Sentinel client reads it. The connection
                # was kept, and every call answered READONLY for good though a fresh connection
                # reached the new master. Nothing was written (a replica refuses the first write).
                self._drop(connection, ConnectionError("the server is a read-only replica now"))
                if attempt == 2:
                    raise
            except (ConnectionError, RedisTimeoutError, OSError):
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _drop(self, connection: _Connection | None, reason: Exception) -> None:
        """Close ``connection`` (the calls still on it fail with ``reason`` and are sent again); the next
        call opens another."""
        if connection is None:
            return
        if self._connection is connection:
            self._connection = None
        if not connection.closed:
            connection.close(reason)

    async def aclose(self) -> None:
        self._closed = True
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close(ConnectionError("the store was closed"))

    async def _connect(self) -> _Connection:
        """The open connection, opening one if there is none: concurrent callers share one attempt."""
        if self._connecting is None:
            self._connecting = asyncio.get_running_loop().create_future()
            self._opening = asyncio.ensure_future(self._open())  # referenced until done
            self._opening.add_done_callback(self._opened)
        return await asyncio.shield(self._connecting)

    def _opened(self, task: asyncio.Task[_Connection]) -> None:
        waiting, self._connecting = self._connecting, None
        assert waiting is not None
        if task.cancelled():
            waiting.set_exception(ConnectionError("connecting was cancelled"))
        elif (exc := task.exception()) is not None:
            waiting.set_exception(exc)
        elif self._closed:  # opened for calls made before aclose(): they get it, nothing later does
            task.result().close(ConnectionError("the store was closed"))
            waiting.set_exception(ConnectionError("the store was closed"))
        else:
            self._connection = task.result()
            waiting.set_result(self._connection)
        waiting.exception()  # retrieved: nobody may be waiting any more

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        connection = _Connection(self.timeout)
        try:
            async with asyncio.timeout(self.timeout):
                if self.path is not None:
                    await loop.create_unix_connection(lambda: connection, self.path)
                else:
                    await loop.create_connection(lambda: connection, self.host, self.port)
                if self.username or self.password:  # as redis-py authenticates
                    password = self.password or ""
                    await connection.call(_pack("AUTH", *((self.username, password) if self.username else (password,))))
                if self.db:
                    await connection.call(_pack("SELECT", self.db))
        except TimeoutError as exc:  # asyncio's
            connection.close(exc)
            raise RedisTimeoutError("Timeout connecting to server") from exc
        except BaseException as exc:
            connection.close(exc)
            if isinstance(exc, OSError):
                raise ConnectionError(f"Error connecting to Redis: {exc}") from exc
            raise
        return connection


class _Connection(asyncio.Protocol):
    """One connection's calls in flight: a future per command sent, answered in order.

    One timer watches the oldest call only: calls are answered in order and all wait as long, so
    when the oldest is late the connection is, and every call on it fails.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.closed = False
        self._transport: asyncio.Transport | None = None
        self._waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        self._buffer = b""
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports are not its subclasses

    def call(self, command: bytes) -> asyncio.Future[Any]:
        """Send ``command``; its reply (or error) is the future's. A future, not a coroutine: one frame
        less for every call to carry through its await."""
        if self.closed or self._transport is None:
            raise ConnectionError("Connection closed by server.")
        future: asyncio.Future[Any] = self._loop.create_future()
        deadline = self._loop.time() + self.timeout
        self._waiting.append((future, deadline))
        if self._timer is None:
            self._timer = self._loop.call_at(deadline, self._check_late)
        try:
            self._transport.write(command)
        except Exception as exc:  # closed under us, its connection_lost not yet called: fails this call too
            self.close(ConnectionError(f"Error writing to Redis: {exc}"))
        return future

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        position = 0
        try:
            while position < len(buffer):
                # The usual reply, a limit's decision (an array of integers): read whole by one match and
                # split in C, without _parse's steps (~2 k instructions a reply).
                whole = _INTEGER_ARRAY.match(buffer, position)
                if whole is not None:
                    reply: Any = list(map(int, whole[0][5:-2].split(b"\r\n:")))
                    position = whole.end()
                else:
                    parsed = _parse(buffer, position)
                    if parsed is None:
                        break
                    reply, position = parsed
                if not self._waiting:
                    raise ConnectionError("Redis answered a command that was not sent")
                future, _ = self._waiting.popleft()
                if not future.done():  # its caller was cancelled: the reply is read and dropped
                    if isinstance(reply, RedisError):  # an error reply (parse_error's classes)
                        future.set_exception(reply)
                    else:
                        future.set_result(reply)
        except ConnectionError as exc:  # a reply that is not RESP, or one too many
            self.close(exc)
            return
        except ValueError:  # an integer the one match took and int() cannot read (past 4,300 digits): as _parse
            self.close(_protocol_error(buffer, position))
            return
        self._buffer = buffer[position:]

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError(f"Connection closed by server ({exc})" if exc else "Connection closed by server."))

    def close(self, exc: BaseException) -> None:
        self._fail(exc)
        if self._transport is not None:
            self._transport.abort()  # a reply late or out of step: nothing more on this connection is to be trusted

    def _fail(self, exc: BaseException) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiting:
            future, _ = self._waiting.popleft()
            if not future.done():
                # An exception of its own for each caller: one raised in many tasks gathers their tracebacks.
                future.set_exception(_copy(exc))
                future.exception()  # retrieved: a caller cancelled meanwhile never reads it

    def _check_late(self) -> None:
        self._timer = None
        if not self._waiting:
            return
        now = self._loop.time()
        _, deadline = self._waiting[0]
        if deadline <= now:
            self.close(RedisTimeoutError("Timeout reading from server"))
        else:
            self._timer = self._loop.call_at(deadline, self._check_late)


def _parse(buffer: bytes, position: int) -> tuple[Any, int] | None:
    """One RESP2 reply at ``position``: ``(reply, next position)``, or None if it is not all there."""
    end = buffer.find(b"\r\n", position)
    if end < 0:
        return None
    kind = buffer[position]
    try:
        if kind == _INTEGER:
            return int(buffer[position + 1 : end]), end + 2
        if kind == _ARRAY:
            # A limit script's decision, the usual reply: all its integers read by one match, in C.
            count = buffer[position + 1] - _ZERO
            if 0 < count < len(_INTEGER_ARRAYS) and (whole := _INTEGER_ARRAYS[count].match(buffer, position)):
                return list(map(int, whole.groups())), whole.end()
            count = int(buffer[position + 1 : end])
            position = end + 2
            if count < 0:
                return None, position
            items: list[Any] = []
            for _ in range(count):
                end = buffer.find(b"\r\n", position)
                if end < 0:
                    return None
                if buffer[position] == _INTEGER:  # the limit scripts' replies are integers: read in place
                    items.append(int(buffer[position + 1 : end]))
                    position = end + 2
                    continue
                parsed = _parse(buffer, position)
                if parsed is None:
                    return None
                item, position = parsed
                items.append(item)
            return items, position
        if kind == _BULK:
            size = int(buffer[position + 1 : end])
            position = end + 2
            if size < 0:
                return None, position
            if len(buffer) < position + size + 2:
                return None
            return buffer[position : position + size], position + size + 2
        if kind == _SIMPLE:
            return buffer[position + 1 : end], end + 2
        if kind == _ERROR:
            return _error_reply(buffer[position + 1 : end].decode("utf-8", "replace")), end + 2
    except ValueError:
        pass
    raise ConnectionError(f"Protocol error: {buffer[position : end + 2][:40]!r} is not a reply")


def _protocol_error(buffer: bytes, position: int) -> ConnectionError:
    """What a reply at ``position`` that Python cannot read fails its calls with (:func:`_parse`'s words for it)."""
    end = buffer.find(b"\r\n", position)
    return ConnectionError(f"Protocol error: {buffer[position : end + 2][:40]!r} is not a reply")


_KEYED_KEPT = 64
"""Sets of constants a script keeps packed: one per policy's limit and window; more are packed each call."""

_INTEGER, _ARRAY, _BULK, _SIMPLE, _ERROR = b":*$+-"
"""The first byte of each kind of RESP2 reply."""
_ZERO = ord("0")
_INTEGER_ARRAYS = [re.compile(rb"\*%d\r\n" % count + rb":(-?[0-9]+)\r\n" * count) for count in range(10)]
"""An array of ``count`` integers, each as the item-by-item reading reads one when it is a sign and
digits (anything else is left to that reading): a reply in one match wherever it lies in the buffer,
where reading its items one by one was ~15 k instructions for a limit's three (~21 k after another reply)."""

_INTEGER_ARRAY = re.compile(b"|".join(rb"\*%d\r\n" % count + rb":-?[0-9]+\r\n" * count for count in range(1, 10)))
"""Any of :data:`_INTEGER_ARRAYS` (1 to 9 integers): its first 5 bytes are ``*N\\r\\n:``, its last 2 ``\\r\\n``."""


def _copy(exc: BaseException) -> Exception:
    """A new exception like ``exc`` (a redis-py one keeps its class and message)."""
    try:
        copy = type(exc)(*exc.args)
    except Exception:
        copy = None
    return copy if isinstance(copy, Exception) else ConnectionError(str(exc))


_error_reply = cast(Callable[[str], RedisError], BaseParser.parse_error)
"""The exception redis-py raises for an error reply (``NoScriptError``, ``ReadOnlyError``, ...)."""


def _encode(item: Arg) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return item.encode("utf-8", "surrogatepass")
    return b"%d" % item


def _bulk(data: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(data), data)


def _pack(*parts: Arg) -> bytes:
    return b"*%d\r\n" % len(parts) + b"".join(_bulk(_encode(part)) for part in parts)


__all__ = ["Script", "ScriptPipe", "pipe_for"]
