"""Render docs/trace.png: the spans of one real connection through the gateway, as a waterfall.

A session on 127.0.0.1: the gateway under uvicorn, an API whose first backend is down (failover to
the second), a ``websockets`` upstream that continues the ``traceparent`` it receives with a span
of its own (another service), and a client that exchanges a few messages and closes. The spans
are the ones the SDK hands to its exporter (in memory here); the picture draws the handshake's
trace and the connection's trace, linked. Needs Pillow (a dev dependency).

Usage: ``python scripts/trace_picture.py [docs/trace.png]``
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import uvicorn
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from PIL import Image, ImageDraw, ImageFont
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from asgi_ws_gateway import WebSocketGateway  # noqa: E402
from asgi_ws_gateway.standalone import not_found  # noqa: E402
from asgi_ws_gateway.telemetry import names as n  # noqa: E402

HOST = "127.0.0.1"
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
FONT_BOLD = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"
FONT_MONO = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf"


def _provider(service: str) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}), shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


async def session() -> list[ReadableSpan]:
    """Run the scripted session; return every finished span of both services."""
    gateway_tp, gateway_spans = _provider("asgi-ws-gateway")
    upstream_tp, upstream_spans = _provider("chat-backend")
    upstream_tracer = upstream_tp.get_tracer("chat-backend")
    started: dict[int, int] = {}

    def process_request(connection: ServerConnection, request: Request) -> None:
        started[id(connection)] = time.time_ns()

    def process_response(connection: ServerConnection, request: Request, response: Response) -> None:
        parent = propagate.extract(dict(request.headers.raw_items()))
        span = upstream_tracer.start_span(
            "GET /rooms/{room}", parent, trace.SpanKind.SERVER, {"http.response.status_code": 101},
            start_time=started.pop(id(connection)),
        )  # fmt: skip
        span.end()

    async def chat(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    down, up, port = _port(), _port(), _port()
    config = {
        "apis": [{"name": "chat", "path": "/ws/chat/{room}", "upstreams":
                  [f"ws://{HOST}:{down}/rooms/{{room}}", f"ws://{HOST}:{up}/rooms/{{room}}"]}],
        "telemetry": {"message_events": 1.0},
    }  # fmt: skip
    gateway = WebSocketGateway(not_found, config=config, tracer_provider=gateway_tp)
    server = uvicorn.Server(uvicorn.Config(gateway, host=HOST, port=port, ws="websockets-sansio",
                                           log_level="warning", lifespan="off"))  # fmt: skip
    serving = asyncio.create_task(server.serve())
    async with serve(chat, HOST, up, process_request=process_request, process_response=process_response):
        while not server.started:  # noqa: ASYNC110 - uvicorn offers no event
            await asyncio.sleep(0.01)
        headers = {"User-Agent": "console/1.0"}
        async with connect(f"ws://{HOST}:{port}/ws/chat/lobby", additional_headers=headers, proxy=None) as ws:
            for text in ("hello", "anyone here?", "bye"):
                await ws.send(text)
                await ws.recv()
                await asyncio.sleep(0.15)
        while len(gateway_spans.get_finished_spans()) < 4:  # noqa: ASYNC110 - the span ends after the close
            await asyncio.sleep(0.01)
    server.should_exit = True
    await serving
    return [*gateway_spans.get_finished_spans(), *upstream_spans.get_finished_spans()]


# -- drawing ---------------------------------------------------------------------------------------

COLOURS = {"asgi-ws-gateway": (66, 133, 244), "chat-backend": (52, 168, 83)}
ERROR_RED = (219, 68, 55)
INK, GREY, LIGHT = (32, 33, 36), (95, 99, 104), (232, 234, 237)


def _label(span: ReadableSpan) -> str:
    a = span.attributes or {}
    if span.name.startswith(n.SPAN_HANDSHAKE):
        return f"{a.get(n.HTTP_STATUS)} {a.get(n.OUTCOME)}  route {a.get(n.HTTP_ROUTE)}"
    if span.name.startswith(n.SPAN_UPSTREAM_CONNECT):
        result = a.get(n.ERROR_TYPE) or a.get(n.HTTP_STATUS)
        return f"attempt {a.get(n.ATTEMPT)}: {a.get(n.BACKEND)} -> {result}"
    if span.name.startswith(n.SPAN_CONNECTION):
        return (
            f"closed by {a.get(n.CLOSE_SIDE)} with {a.get(n.CLOSE_CODE)}; "
            f"in {a.get(n.MESSAGES_IN)} msg/{a.get(n.BYTES_IN)} B, "
            f"out {a.get(n.MESSAGES_OUT)} msg/{a.get(n.BYTES_OUT)} B"
        )
    return "continues the traceparent the gateway injected"


def _depth(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> int:
    depth = 0
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        depth += 1
    return depth


def _panel(
    draw: ImageDraw.ImageDraw,
    spans: Sequence[ReadableSpan],
    top: int,
    title: str,
    width: int,
    fonts: dict[str, ImageFont.FreeTypeFont],
) -> int:
    by_id = {s.context.span_id: s for s in spans if s.context is not None}
    ordered = sorted(spans, key=lambda s: (s.start_time or 0, _depth(s, by_id)))
    t0 = min(s.start_time or 0 for s in spans)
    t1 = max(s.end_time or 0 for s in spans)
    scale = (width - 560) / max(t1 - t0, 1)
    draw.text((30, top), title, font=fonts["bold"], fill=INK)
    top += 30
    left = 520
    for tick in range(5):  # time axis
        x = left + (width - 560) * tick / 4
        draw.line([(x, top), (x, top + 6 + 46 * len(ordered))], fill=LIGHT)
        draw.text((x - 18, top - 2), f"{(t1 - t0) * tick / 4 / 1e6:.1f} ms", font=fonts["small"], fill=GREY)
    top += 18
    for span in ordered:
        service = str(span.resource.attributes.get("service.name"))
        depth = _depth(span, by_id)
        draw.text((30 + 18 * depth, top), span.name, font=fonts["mono"], fill=INK)
        draw.text((30 + 18 * depth, top + 18), service, font=fonts["small"], fill=GREY)
        x0 = left + ((span.start_time or 0) - t0) * scale
        x1 = max(x0 + 3, left + ((span.end_time or 0) - t0) * scale)
        error = span.status.status_code == trace.StatusCode.ERROR
        draw.rectangle([(x0, top + 4), (x1, top + 22)], fill=ERROR_RED if error else COLOURS.get(service, GREY))
        for event in span.events:
            ex = left + (event.timestamp - t0) * scale
            draw.line([(ex, top + 1), (ex, top + 25)], fill=INK, width=2)
        draw.text((left, top + 25), _label(span), font=fonts["small"], fill=GREY)
        top += 46
    return top


def render(spans: list[ReadableSpan], out: Path) -> None:
    handshake = next(s for s in spans if s.name.startswith(n.SPAN_HANDSHAKE))
    connection = next(s for s in spans if s.name.startswith(n.SPAN_CONNECTION))
    assert handshake.context is not None and connection.context is not None
    first = [s for s in spans if s.context is not None and s.context.trace_id == handshake.context.trace_id]
    width, height = 1500, 520
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    fonts = {
        "bold": ImageFont.truetype(FONT_BOLD, 17), "mono": ImageFont.truetype(FONT_MONO, 14),
        "small": ImageFont.truetype(FONT, 12), "text": ImageFont.truetype(FONT, 14),
    }  # fmt: skip
    trace_id = trace.format_trace_id(handshake.context.trace_id)
    top = _panel(draw, first, 20, f"Trace {trace_id[:16]}…  the handshake (exported at accept)", width, fonts)
    link = trace.format_trace_id(connection.context.trace_id)
    top = _panel(
        draw, [connection], top + 20,
        f"Trace {link[:16]}…  the connection (exported at close; linked to GET /ws/chat/{{room}})", width, fonts,
    )  # fmt: skip
    draw.text(
        (30, top + 14),
        "Ticks on the connection bar: sampled message events (telemetry.message_events: 1.0 here; 0, the "
        "default, records none). Red: an error status (the first backend was down; failover to the second).",
        font=fonts["small"], fill=GREY,
    )  # fmt: skip
    image.crop((0, 0, width, top + 40)).save(out)


def main(argv: Sequence[str]) -> int:
    out = Path(argv[0]) if argv else ROOT / "docs" / "trace.png"
    spans = asyncio.run(session())
    render(spans, out)
    print(f"{out}: {len(spans)} spans")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
