"""An OTLP/gRPC receiver that answers every export and discards it: ``python -m bench.otlp_sink --port N``.

What ``gateway-run+policies`` exports to, so the gateway pays for encoding and sending its spans
and metrics over a real connection, and not for a collector. Requests are never decoded.
"""

from __future__ import annotations

import argparse
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc

from .procs import HOST

SERVICES = (
    "opentelemetry.proto.collector.trace.v1.TraceService",
    "opentelemetry.proto.collector.metrics.v1.MetricsService",
    "opentelemetry.proto.collector.logs.v1.LogsService",
)


def _discard(request: bytes, context: grpc.ServicerContext) -> bytes:
    return b""  # an empty Export*ServiceResponse: everything accepted


def serve(port: int) -> None:
    """Serve on ``127.0.0.1:port`` until SIGTERM or SIGINT."""
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    # No (de)serializer: raw bytes both ways, nothing decoded.
    method: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(_discard)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(s, {"Export": method}) for s in SERVICES])
    server.add_insecure_port(f"{HOST}:{port}")
    server.start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop(None)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.otlp_sink", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    serve(parser.parse_args(argv).port)


if __name__ == "__main__":
    main()


__all__ = ["serve"]
