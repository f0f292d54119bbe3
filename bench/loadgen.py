"""The load generator: picows on uvloop, run as its own pinned process by the bench.

``python -m bench.loadgen MODE --url URL ...`` writes one JSON object per line on stdout:

* ``{"event": "start"}`` when warm-up is over and the measurement window opens (the bench reads
  the other processes' CPU time then), and one ``{"event": "result", ...}`` when it closes;
* in ``idle`` mode, ``{"event": "ready", "open": N, ...}`` at each level; it then waits for a
  line on stdin before opening more (or closing everything after the last level).

Modes (every loop is bounded by a deadline and, for opening, by a count):

* ``echo``: ``--conns`` connections in a closed loop, each sending ``--size`` bytes and waiting for
  the echo before sending again; counts echoes in the window.
* ``latency``: the same with one connection, recording each round trip.
* ``handshake``: ``--conns`` concurrent openers doing open / one echo / close, timing each opening
  handshake.
* ``idle``: open ``--levels`` connections in turn (one echo each, then silence) and hold them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import uvloop
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

_DATA = (WSMsgType.BINARY, WSMsgType.TEXT, WSMsgType.CONTINUATION)
OPEN_TIMEOUT = 10.0


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


class EchoClient(WSListener):
    """One connection of a closed loop: sends ``payload`` again each time the echo arrives.

    With ``record`` set, each round trip's duration (ns) is appended to ``rtts``.
    """

    def __init__(self, payload: bytes, *, loop: bool = True, record: bool = False) -> None:
        self.payload = payload
        self.loop = loop
        self.record = record
        self.count = 0
        self.rtts: list[int] = []
        self.running = loop
        self.transport: WSTransport | None = None
        self.echoed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sent_at = 0

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def send(self) -> None:
        assert self.transport is not None
        self._sent_at = time.perf_counter_ns()
        self.transport.send(MESSAGE_TYPE, self.payload)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind in _DATA:
            if not frame.fin:
                return
            self.count += 1
            if self.record:
                self.rtts.append(time.perf_counter_ns() - self._sent_at)
            if not self.echoed.done():
                self.echoed.set_result(None)
            if self.running:
                self.send()
        elif kind == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.echoed.done():
            self.echoed.set_exception(ConnectionError("disconnected before the echo"))


HEADERS: dict[str, str] = {}
"""Request headers every connection sends (``--header name:value``), e.g. a bearer token."""

MESSAGE_TYPE = WSMsgType.BINARY
"""``--payload bytes``: binary ``x`` bytes; ``--payload json``: a text JSON chat message of the same size."""


def make_payload(size: int) -> bytes:
    """What every message carries: ``size`` bytes of ``x``, or a JSON chat message of ``size`` bytes
    (the one ``bench/message_policies.py`` sends at 64 B, its text padded to the size)."""
    if MESSAGE_TYPE == WSMsgType.BINARY:
        return b"x" * size
    empty = b'{"type":"chat","room":"lobby","text":"","seq":1234567}'
    if size < len(empty):
        raise SystemExit(f"--payload json needs --size >= {len(empty)}")
    at = empty.index(b'"text":"') + 8
    return empty[:at] + b"x" * (size - len(empty)) + empty[at:]


def bearer(mode: str | None, opener: int) -> Callable[[], dict[str, str]]:
    """The headers an opener sends per handshake: :data:`HEADERS`, plus a token for ``--bearer``
    (``pool``: the opener's own token on every reconnect; ``fresh``: a new one per handshake)."""
    if mode is None:
        return lambda: HEADERS
    # Imported only here: the key (and jwt, cryptography) cost each generator's start ~55 ms, and only
    # the policy paths' handshakes send tokens.
    from .credentials import mint

    if mode == "pool":
        held = {**HEADERS, "Authorization": f"Bearer {mint(f'bench-user-{opener}')}"}
        return lambda: held
    return lambda: {**HEADERS, "Authorization": f"Bearer {mint(f'bench-user-{opener}')}"}


async def connect(
    url: str, factory: Callable[[], EchoClient], headers: dict[str, str] | None = None
) -> tuple[WSTransport, EchoClient]:
    headers = HEADERS if headers is None else headers
    transport, listener = await ws_connect(
        factory,
        url,
        websocket_handshake_timeout=OPEN_TIMEOUT,
        max_frame_size=64 * 1024 * 1024,
        extra_headers=headers or None,
    )
    assert isinstance(listener, EchoClient)
    return transport, listener


async def close_all(transports: list[WSTransport], wait: float = 10.0) -> None:
    for transport in transports:
        if not transport.is_disconnected:
            transport.send_close(WSCloseCode.OK)
    waits = [asyncio.ensure_future(t.wait_disconnected()) for t in transports]
    if waits:
        _, pending = await asyncio.wait(waits, timeout=wait)
        for fut in pending:
            fut.cancel()
    for transport in transports:
        if not transport.is_disconnected:
            transport.disconnect(graceful=False)


async def open_many(
    url: str, count: int, payload: bytes, concurrency: int, deadline: float
) -> tuple[list[WSTransport], int]:
    """Open up to ``count`` connections, ``concurrency`` at a time, each with one echo, before ``deadline``."""
    opened: list[WSTransport] = []
    errors = 0
    remaining = count

    async def opener() -> None:
        nonlocal remaining, errors
        while remaining > 0 and time.monotonic() < deadline:
            remaining -= 1
            try:
                transport, client = await connect(url, lambda: EchoClient(payload, loop=False))
            except Exception:
                errors += 1
                continue
            opened.append(transport)
            client.send()
            try:
                await asyncio.wait_for(client.echoed, OPEN_TIMEOUT)
            except (TimeoutError, OSError):
                errors += 1

    await asyncio.gather(*(opener() for _ in range(max(1, min(concurrency, count)))))
    return opened, errors


async def run_echo(url: str, conns: int, size: int, warmup: float, duration: float, record: bool) -> None:
    payload = make_payload(size)
    clients: list[EchoClient] = []
    transports: list[WSTransport] = []
    for _ in range(conns):
        transport, client = await connect(url, lambda: EchoClient(payload, record=record))
        transports.append(transport)
        clients.append(client)
    for client in clients:
        client.send()
    await asyncio.sleep(warmup)
    for client in clients:
        client.count, client.rtts = 0, []
    cpu0, t0 = time.process_time(), time.perf_counter()
    emit("start")
    await asyncio.sleep(duration)
    counts = [c.count for c in clients]
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    rtts = [r for c in clients for r in c.rtts]
    for client in clients:
        client.running = False
    lost = sum(1 for t in transports if t.is_disconnected)
    emit("result", wall=wall, cpu=cpu, messages=sum(counts), size=size, conns=conns, errors=lost,
         min_conn_messages=min(counts), rtt_ns=rtts if record else None)  # fmt: skip
    await asyncio.sleep(0.05)  # the last echoes in flight arrive and are not answered
    await close_all(transports)


async def _handshake_once(url: str, payload: bytes, headers: dict[str, str]) -> int:
    started = time.perf_counter_ns()
    transport, client = await connect(url, lambda: EchoClient(payload, loop=False), headers)
    opened = time.perf_counter_ns() - started
    try:
        client.send()
        await asyncio.wait_for(client.echoed, OPEN_TIMEOUT)
    finally:
        await close_all([transport], wait=OPEN_TIMEOUT)
    return opened


async def run_handshake(
    url: str, conns: int, size: int, warmup: float, duration: float, bearer_mode: str | None = None
) -> None:
    payload = make_payload(size)
    window: dict[str, Any] = {"open": False, "times": [], "errors": 0}
    stop_at = time.monotonic() + warmup + duration

    async def opener(number: int) -> None:
        headers = bearer(bearer_mode, number)
        while time.monotonic() < stop_at:
            counting = window["open"]
            try:
                elapsed = await _handshake_once(url, payload, headers())
            except Exception:  # refused, reset, timed out: count it and go on
                if counting:
                    window["errors"] += 1
                await asyncio.sleep(0.01)
                continue
            if counting and window["open"]:
                window["times"].append(elapsed)

    tasks = [asyncio.ensure_future(opener(number)) for number in range(conns)]
    await asyncio.sleep(warmup)
    window["open"] = True
    cpu0, t0 = time.process_time(), time.perf_counter()
    emit("start")
    await asyncio.sleep(duration)
    window["open"] = False
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    times = list(window["times"])
    emit("result", wall=wall, cpu=cpu, handshakes=len(times), errors=window["errors"], conns=conns,
         connect_ns=times)  # fmt: skip
    await asyncio.wait(tasks, timeout=OPEN_TIMEOUT * 2)


async def run_idle(url: str, levels: list[int], concurrency: int, budget: float) -> None:
    payload = make_payload(64)
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    held: list[WSTransport] = []
    errors = 0
    for level in levels:
        started = time.monotonic()
        opened, failed = await open_many(url, level - len(held), payload, concurrency, started + budget)
        held += opened
        errors += failed
        alive = sum(1 for t in held if not t.is_disconnected)
        emit("ready", level=level, open=alive, errors=errors, seconds=time.monotonic() - started)
        await asyncio.wait_for(reader.readline(), 600)
    await close_all(held, wait=30)
    emit("result", errors=errors)


def main() -> None:
    parser = argparse.ArgumentParser(description="picows WebSocket load generator for the bench")
    parser.add_argument("mode", choices=["echo", "latency", "handshake", "idle"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--conns", type=int, default=50)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--levels", default="1000,5000,9000")
    parser.add_argument("--budget", type=float, default=120.0, help="seconds allowed to open one idle level")
    parser.add_argument("--header", action="append", default=[], help="name:value sent with every handshake")
    parser.add_argument("--bearer", help="handshake: a bench token per opener (pool) or per handshake (fresh)")
    parser.add_argument("--payload", choices=["bytes", "json"], default="bytes", help="binary x bytes, or JSON text")
    args = parser.parse_args()
    if args.bearer is not None:
        from .credentials import BEARER_MODES  # only then (see bearer())

        if args.bearer not in BEARER_MODES:
            parser.error(f"--bearer: choose from {', '.join(BEARER_MODES)}")
    global MESSAGE_TYPE
    MESSAGE_TYPE = WSMsgType.TEXT if args.payload == "json" else WSMsgType.BINARY
    for header in args.header:
        name, _, value = header.partition(":")
        HEADERS[name.strip()] = value.strip()
    if args.mode in ("echo", "latency"):
        conns = 1 if args.mode == "latency" else args.conns
        job = run_echo(args.url, conns, args.size, args.warmup, args.duration, record=args.mode == "latency")
    elif args.mode == "handshake":
        job = run_handshake(args.url, args.conns, args.size, args.warmup, args.duration, args.bearer)
    else:
        levels = [int(n) for n in args.levels.split(",")]
        job = run_idle(args.url, levels, args.conns, args.budget)
    uvloop.run(job)


if __name__ == "__main__":
    main()


__all__ = ["EchoClient", "close_all", "connect", "open_many"]
