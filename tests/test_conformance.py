"""Autobahn cases 1-10 through the gateway: nothing may fail that uvicorn serving an echo app passes.

The client leg of the gateway is uvicorn's own WebSocket implementation, so uvicorn serving a plain
echo app is the baseline: with ``websockets-sansio`` it fails 7.1.5 itself (a close in the middle of
a fragmented message gets 1002), with ``wsproto`` nothing. The gateway must add no failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import warnings
from pathlib import Path
from typing import Any

import pytest

from support.apps import echo_app
from support.conformance import run_autobahn, run_autobahn_overlapped
from support.gateway import ProbedGateway
from support.servers import UvicornServer, WSImpl
from support.upstream import UpstreamServer

# A case that missed a deadline among 15 others in flight and passes alone is named, not failed (the
# suite turns warnings into errors; a conformance fault fails again alone and is asserted).
pytestmark = [pytest.mark.conformance, pytest.mark.filterwarnings("default:Autobahn .* passed alone:UserWarning")]

MIB = 1024 * 1024
CASES = ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*"]


async def still_failing(url: str, extra: set[str], outdir: Path) -> set[str]:
    """The cases that failed only through the gateway, run again one at a time against it.

    The overlapped run has 16 cases in flight on a shared 2-core machine; a case that missed a
    deadline there passes alone (a warning names it), while a conformance fault fails again.
    """
    if not extra:
        return set()
    again = await run_autobahn(url, sorted(extra), [], outdir)
    if passed := extra - set(again.failed):
        warnings.warn(
            f"Autobahn {sorted(passed)} failed through the gateway beside 15 others, passed alone", stacklevel=2
        )
    return set(again.failed)


async def test_gateway_passes_what_the_baseline_passes(tmp_path: Path, ws_impl: WSImpl) -> None:
    with UvicornServer(echo_app, ws=ws_impl, ws_max_size=16 * MIB) as server:
        baseline = await run_autobahn_overlapped(server.url("/ws/echo"), CASES, tmp_path / "baseline")
    with UpstreamServer(max_size=16 * MIB) as upstream:
        api = {"name": "echo", "path": "/ws/echo", "upstreams": [upstream.url("/echo")], "max_message_size": 16 * MIB}
        gateway = ProbedGateway({"apis": [api]})
        with UvicornServer(gateway, ws=ws_impl, ws_max_size=16 * MIB) as server:
            through = await run_autobahn_overlapped(server.url("/ws/echo"), CASES, tmp_path / "gateway")
            extra = set(through.failed) - set(baseline.failed)
            failing = await still_failing(server.url("/ws/echo"), extra, tmp_path / "again")
    assert through.total == baseline.total > 290
    assert not failing, f"gateway-only failures: {failing}"


async def test_the_splice_and_the_frame_relay_pass_what_the_upstream_passes(tmp_path: Path) -> None:
    """Under the gateway's protocol the baseline is the upstream itself (one run for both paths):

    * the default path (no passthrough setting) splices. The websockets upstream refuses messages of
      over ~1,000 fragments with 1009, so 9.3.1, 9.3.2, 9.4.1 and 9.4.2 fail directly and spliced;
    * an API with message policies goes through the frame relay, which reads every message and
      forwards pings and close frames as the splice does; it reassembles fragmented messages, so
      9.3/9.4 pass through it.
    """
    gateway_protocol: Any = "asgi_ws_gateway.server:GatewayWebSocketProtocol"
    size = {"limit-message-size": {"max": 16 * MIB}}
    paths = {"splice": {}, "frame relay": {"message_policies": {"inbound": [size], "outbound": [size]}}}
    with UpstreamServer(max_size=16 * MIB) as upstream, contextlib.ExitStack() as servers:
        direct = await run_autobahn_overlapped(upstream.url("/echo"), CASES, tmp_path / "direct")
        gateways: dict[str, tuple[ProbedGateway, UvicornServer]] = {}
        for name, settings in paths.items():
            api = {"name": "echo", "path": "/ws/echo", "upstreams": [upstream.url("/echo")],
                   "max_message_size": 16 * MIB, **settings}  # fmt: skip
            gateway = ProbedGateway({"apis": [api]})
            server = servers.enter_context(UvicornServer(gateway, ws=gateway_protocol, ws_max_size=16 * MIB))
            gateways[name] = gateway, server
        # Both paths' runs at once (each gateway its own server): one's pauses are the other's CPU. The
        # baseline ran alone before them, and a case failing only through a gateway is run again alone.
        runs = await asyncio.gather(
            *(run_autobahn_overlapped(server.url("/ws/echo"), CASES, tmp_path / name)
              for name, (_, server) in gateways.items())
        )  # fmt: skip
        for (name, (gateway, server)), through in zip(gateways.items(), runs, strict=True):
            assert gateway.gateway.telemetry is not None
            await gateway.settle()  # the last cases' closes may still be finishing; a leak fails here
            assert not gateway.gateway.connections()
            extra = set(through.failed) - set(direct.failed)
            failing = await still_failing(server.url("/ws/echo"), extra, tmp_path / f"{name} again")
            assert through.total == direct.total > 290
            assert not failing, f"{name}-only failures: {failing}"


async def test_a_case_that_fails_alone_stays_failed_one_that_passes_alone_warns(tmp_path: Path) -> None:
    """The re-run of gateway-only failures: uvicorn's websockets-sansio fails 7.1.5 every time (see above)."""
    with (
        UvicornServer(echo_app, ws="websockets-sansio") as server,
        pytest.warns(UserWarning, match=r"\['1\.1\.1'\] failed through the gateway"),
    ):
        failing = await still_failing(server.url("/ws/echo"), {"1.1.1", "7.1.5"}, tmp_path)
    assert failing == {"7.1.5"}
