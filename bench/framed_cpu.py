"""The frame relay's own CPU per 64 B echo, in process: no sockets, fake transports, called
from one coroutine as the event loop would.

Drives :class:`~asgi_ws_gateway.passthrough.framed.FramedRelay` with the bench's message-policy set
(bench/message_policies.py: size limit, in-memory rate limit never reached, JSON Schema on client
messages; size limit on the upstream's): each echo is one masked client frame read and written to
the upstream, then the upstream's unmasked answer read and written to the client. ``--policies
none`` measures the same reads without policies (the frame relay's floor).

Counting instructions is the repeatable way to compare two trees (the machine's load does not move
it); run it twice, with ``--messages 0`` and with N, and divide the difference by N::

    valgrind --tool=callgrind --callgrind-out-file=/tmp/f.out python -m bench.framed_cpu --messages 20000
    callgrind_annotate /tmp/f.out | head

Without valgrind it prints the wall-clock microseconds per echo (noisy on a busy machine).
``PYTHONPATH=<other tree>/src`` measures another revision with the same script.

``--splice`` measures the splice (:class:`~asgi_ws_gateway.passthrough.splice.Splice`, the default path for
an API without message policies) the same way, with binary frames of ``--size`` bytes as the bench's echo
scenarios send: each read one whole frame, scanned and written on, as on the wire.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any, cast

from asgi_ws_gateway.forwarded import Networks
from asgi_ws_gateway.handshake.context import HandshakeContext
from asgi_ws_gateway.handshake.request_view import RequestView
from asgi_ws_gateway.messages.pipeline import MessagePolicySet
from asgi_ws_gateway.passthrough.frame_encoding import encode_frame
from asgi_ws_gateway.passthrough.framed import FramedRelay
from asgi_ws_gateway.passthrough.raw_upstream import RawUpstream, _HandshakeReader
from asgi_ws_gateway.passthrough.splice import Splice
from asgi_ws_gateway.policies.build import load_policies
from asgi_ws_gateway.state.memory import MemoryState

from .message_policies import MESSAGE, message_policies


class _Sink:
    """A transport that takes writes and keeps only the last (the relay's output, checked once)."""

    def __init__(self) -> None:
        self.last = b""
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.last = data
        self.writes += 1

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...

    def set_protocol(self, protocol: Any) -> None: ...


def _policies(kind: str) -> MessagePolicySet:
    if kind == "none":
        return MessagePolicySet([], [])
    api = {"name": "echo", "path": "/ws/echo", "upstreams": ["ws://127.0.0.1:9/"],
           "message_policies": message_policies(limit=65536, text_limit=65536)}  # fmt: skip
    built = load_policies({"apis": [api]}, store=lambda config: MemoryState())
    found = built.messages.for_connection(_handshake())
    assert found is not None
    return found


def _handshake() -> HandshakeContext:
    scope = {"type": "websocket", "path": "/ws/echo", "query_string": b"", "headers": [(b"host", b"gw")],
             "client": ("127.0.0.1", 50000), "scheme": "ws", "subprotocols": []}  # fmt: skip
    return HandshakeContext("echo", RequestView(scope, {}, Networks(())))


async def run(messages: int, policies: str) -> float:
    """Seconds for ``messages`` echoes through one frame relay (after one warm-up echo); no await in the loop."""
    client, upstream = _Sink(), _Sink()
    raw = RawUpstream(cast(asyncio.Transport, upstream), None, None, [], b"", _HandshakeReader())
    framed = FramedRelay(raw, policies=_policies(policies), handshake=_handshake(), max_message_size=1 << 20,
                         close_timeout=30.0)  # fmt: skip
    framed.client.connection_made(client)
    framed._start()
    request = encode_frame(0x1, MESSAGE.encode(), mask=True)
    answer = encode_frame(0x1, MESSAGE.encode(), mask=False)
    from_client, from_upstream = framed.client.data_received, framed.upstream.data_received
    from_client(request)
    from_upstream(answer)
    started = time.perf_counter()
    for _ in range(messages):
        from_client(request)
        from_upstream(answer)
    elapsed = time.perf_counter() - started
    if upstream.last != request or client.last != answer or upstream.writes != messages + 1:
        raise RuntimeError("the frame relay did not forward every frame as it came")
    return elapsed


async def run_splice(messages: int, size: int) -> float:
    """Seconds for ``messages`` echoes of ``size``-byte binary frames through one splice (keepalive on, as
    by default), after one warm-up echo; no await in the loop."""
    client, upstream = _Sink(), _Sink()
    raw = RawUpstream(cast(asyncio.Transport, upstream), None, None, [], b"", _HandshakeReader())
    splice = Splice(raw, max_message_size=1 << 20, close_timeout=30.0, ping_interval=20.0, ping_timeout=20.0)
    splice.client.connection_made(client)
    splice._start()
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    request, answer = encode_frame(0x2, payload, mask=True), encode_frame(0x2, payload, mask=False)
    from_client, from_upstream = splice.client.data_received, splice.upstream.data_received
    from_client(request)
    from_upstream(answer)
    started = time.perf_counter()
    for _ in range(messages):
        from_client(request)
        from_upstream(answer)
    elapsed = time.perf_counter() - started
    stats = splice.stats
    if upstream.last != request or client.last != answer or upstream.writes != messages + 1:
        raise RuntimeError("the splice did not forward every frame as it came")
    if stats.messages_in != messages + 1 or stats.binary_bytes_out != (messages + 1) * size:
        raise RuntimeError("the splice did not count every message")
    splice._stop_timers()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--policies", choices=("bench", "none"), default="bench")
    parser.add_argument("--splice", action="store_true", help="the splice instead of the frame relay")
    parser.add_argument("--size", type=int, default=64, help="--splice: payload bytes per message")
    args = parser.parse_args()
    if args.splice:
        elapsed = asyncio.run(run_splice(args.messages, args.size))
        if args.messages:
            print(f"{1e6 * elapsed / args.messages:.3f} us per echo ({args.messages} echoes, splice, {args.size} B)")
        return
    elapsed = asyncio.run(run(args.messages, args.policies))
    if args.messages:
        print(f"{1e6 * elapsed / args.messages:.2f} us per echo ({args.messages} echoes, policies: {args.policies})")


if __name__ == "__main__":
    main()
