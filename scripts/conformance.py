"""Run the Autobahn fuzzingclient suite through the gateway and against the baselines, side by side.

Usage: python scripts/conformance.py [--cases '1.*' ...] [--exclude '12.*' ...] [--ws wsproto ...]

For each uvicorn WebSocket implementation it runs the selected cases against
  * ``uvicorn+echo``: uvicorn serving an echo ASGI app (what the gateway's client leg is built on),
  * ``upstream``: the websockets echo server alone (the gateway's upstream),
  * ``gateway``: the gateway under uvicorn in front of that websockets echo server,
  * ``gateway+asgi``: the gateway with the echo app as an in-process upstream,
  * ``gateway+messages``: the gateway with message policies (a size limit both ways): under
    ``--ws asgi_ws_gateway.server:GatewayWebSocketProtocol``, the frame relay,
and prints the verdict counts and the failed cases of each. Reports go to reports/conformance/.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support.apps import echo_app  # noqa: E402
from support.conformance import run_autobahn  # noqa: E402
from support.gateway import ProbedGateway  # noqa: E402
from support.servers import UvicornServer  # noqa: E402
from support.upstream import UpstreamServer  # noqa: E402

MIB = 1024 * 1024


def gateway_config(upstream: str | None, *, messages: bool = False) -> dict[str, object]:
    target: object = upstream if upstream else {"url": "asgi:support.apps:echo_app"}
    api = {"name": "echo", "path": "/ws/echo", "upstreams": [target], "max_message_size": 16 * MIB}
    if messages:
        size = {"limit-message-size": {"max": 16 * MIB}}
        api["message_policies"] = {"inbound": [size], "outbound": [size]}
    return {"apis": [api]}


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", nargs="*", default=["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*"])
    parser.add_argument("--exclude", nargs="*", default=[])
    parser.add_argument("--ws", nargs="*", default=["websockets-sansio", "wsproto"])
    parser.add_argument("--targets", nargs="*", default=["uvicorn+echo", "upstream", "gateway", "gateway+asgi"])
    args = parser.parse_args()
    out = ROOT / "reports" / "conformance"
    failures: dict[str, list[str]] = {}
    with UpstreamServer(max_size=16 * MIB) as upstream:
        for ws in args.ws:
            for target in args.targets:
                if target == "upstream" and ws != args.ws[0]:
                    continue
                app: object
                if target == "uvicorn+echo":
                    app = echo_app
                elif target == "gateway":
                    app = ProbedGateway(gateway_config(upstream.url("/echo")))
                elif target == "gateway+asgi":
                    app = ProbedGateway(gateway_config(None))
                elif target == "gateway+messages":
                    app = ProbedGateway(gateway_config(upstream.url("/echo"), messages=True))
                name = target if target == "upstream" else f"{target}[{ws}]"
                if target == "upstream":
                    report = await run_autobahn(upstream.url("/echo"), args.cases, args.exclude, out / name)
                else:
                    with UvicornServer(app, ws=ws, ws_max_size=16 * MIB) as server:  # type: ignore[arg-type]
                        report = await run_autobahn(server.url("/ws/echo"), args.cases, args.exclude, out / name)
                failures[name] = report.failed
                print(f"{name:32} {report.total:4} cases  {report.counts}  failed: {report.failed}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
