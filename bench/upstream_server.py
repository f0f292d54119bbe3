"""The upstream every path proxies to: a picows echo server on uvloop, fast enough not to matter.

``python -m bench.upstream_server --port P`` serves ``ws://127.0.0.1:P/<any path>``: every text or
binary frame is sent back as it came (fin and continuation frames included), pings are answered,
and a close frame is answered with the same code before the connection is dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import uvloop
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

_ECHOED = (WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CONTINUATION)


class EchoListener(WSListener):
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind in _ECHOED:
            transport.send(kind, frame.get_payload_as_memoryview(), frame.fin)
        elif kind == WSMsgType.CLOSE:
            code = frame.get_close_code()
            transport.send_close(code if code != WSCloseCode.NO_INFO else WSCloseCode.OK)
            transport.disconnect()


def _listener(request: WSUpgradeRequest) -> WSListener:
    return EchoListener()


async def serve(port: int) -> None:
    server = await ws_create_server(_listener, "127.0.0.1", port, backlog=4096, max_frame_size=64 * 1024 * 1024)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvloop.run(serve(args.port))


if __name__ == "__main__":
    main()


__all__ = ["EchoListener", "serve"]
