"""What handshake policies add to a handshake: bare gateway vs validate-jwt + rate-limit-by-key + set-header.

One uvicorn gateway serves two APIs in front of the same ``websockets`` echo upstream: ``/ws/bare``
(no policies) and ``/ws/policies`` (``validate-jwt`` with an RS256 key from a JWKS served over HTTP,
fetched once and then cached; ``rate-limit-by-key`` on ``{jwt.sub}``; ``set-header X-User-Id``).
Handshakes alternate between the two in one run, so both see the same machine state; the time is
from the start of the client's connect to the end of the opening handshake (101 received).

    python bench/handshake_policies.py [--rounds 400] [--store memory|redis]

Prints the median (and p90) of each and the difference at the median in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import uvicorn
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.standalone import not_found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _jwks_server(key: rsa.RSAPrivateKey) -> tuple[ThreadingHTTPServer, str]:
    jwk = {**json.loads(RSAAlgorithm.to_jwk(key.public_key())), "kid": "bench", "alg": "RS256", "use": "sig"}
    body = json.dumps({"keys": [jwk]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}/jwks.json"


def _upstream() -> int:
    """A websockets echo server in its own thread; returns its port."""
    ready = threading.Event()
    port = _free_port()

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async def main() -> None:
        async with serve(echo, "127.0.0.1", port, compression=None):
            ready.set()
            await asyncio.Future()

    threading.Thread(target=asyncio.run, args=(main(),), daemon=True).start()
    ready.wait(10)
    return port


def _gateway(config: dict[str, Any]) -> tuple[uvicorn.Server, int]:
    port = _free_port()
    app = WebSocketGateway(not_found, config=config)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    return server, port


async def _handshake(url: str, headers: dict[str, str]) -> float:
    started = time.perf_counter()
    ws = await connect(url, additional_headers=headers, compression=None, proxy=None)
    elapsed = time.perf_counter() - started
    await ws.close()
    return elapsed


async def run(rounds: int, store: str) -> dict[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    httpd, jwks_url = _jwks_server(key)
    upstream = f"ws://127.0.0.1:{_upstream()}/"
    policies = [
        {"validate-jwt": {"algorithms": ["RS256"], "jwks_url": jwks_url, "audience": "bench"}},
        {"rate-limit-by-key": {"key": "{jwt.sub}", "limit": 100_000, "window": 60}},
        {"set-header": {"header": "X-User-Id", "value": "{jwt.sub}"}},
    ]
    config: dict[str, Any] = {
        "apis": [
            {"name": "bare", "path": "/ws/bare", "upstreams": [upstream], "compression": None},
            {"name": "policies", "path": "/ws/policies", "upstreams": [upstream], "compression": None,
             "policies": policies},
        ]
    }  # fmt: skip
    if store == "redis":
        config["store"] = {"type": "redis", "url": "redis://127.0.0.1:6379/0", "prefix": f"bench-{time.time_ns()}"}
    server, port = _gateway(config)
    now = int(time.time())
    token = jwt.encode({"sub": "bench-user", "aud": "bench", "iat": now, "exp": now + 3600}, key, algorithm="RS256",
                       headers={"kid": "bench"})  # fmt: skip
    auth = {"Authorization": f"Bearer {token}"}
    bare_url, policies_url = f"ws://127.0.0.1:{port}/ws/bare", f"ws://127.0.0.1:{port}/ws/policies"
    for _ in range(20):  # warm-up: imports, connection pools, the JWKS fetch
        await _handshake(bare_url, {})
        await _handshake(policies_url, auth)
    bare: list[float] = []
    with_policies: list[float] = []
    for i in range(rounds):
        pair = [(bare, bare_url, {}), (with_policies, policies_url, auth)]
        for samples, url, headers in pair if i % 2 == 0 else reversed(pair):
            samples.append(await _handshake(url, headers))
    server.should_exit = True
    httpd.shutdown()

    def ms(values: list[float], q: float) -> float:
        return round(statistics.quantiles(values, n=100)[int(q * 100) - 1] * 1000, 3)

    bare_median, policies_median = statistics.median(bare) * 1000, statistics.median(with_policies) * 1000
    return {
        "rounds": rounds,
        "store": store,
        "bare_median_ms": round(bare_median, 3),
        "policies_median_ms": round(policies_median, 3),
        "bare_p90_ms": ms(bare, 0.9),
        "policies_p90_ms": ms(with_policies, 0.9),
        "added_at_median_ms": round(policies_median - bare_median, 3),
        "ratio_at_median": round(policies_median / bare_median, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=400, help="handshakes of each kind (default: %(default)s)")
    parser.add_argument("--store", choices=["memory", "redis"], default="memory")
    args = parser.parse_args()
    result = asyncio.run(run(args.rounds, args.store))
    print(json.dumps(result, indent=2))
    verdict = "under" if result["added_at_median_ms"] < 1.0 else "OVER"
    print(f"policies add {result['added_at_median_ms']:.3f} ms at the median ({verdict} the 1 ms target)")


if __name__ == "__main__":
    main()
