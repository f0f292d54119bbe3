"""An admin-token holder using the gateway's upstream connects to map the operator's network.

A holder may point an API at any host (docs/security.md, the management API), then open a handshake
to it and read ``GET /refusals``: its ``detail`` named the exact cause (``[Errno 111] Connection
refused``, ``Connection reset``, ``Name or service not known``) and quoted the first bytes of what
answered (a Redis error line, an SSH version banner): which internal hosts exist, which ports are
open and what runs there. Now an upstream's failure shows its status and reason only; the cause
stays in the operator's log line. And an API that inherits the operator's credential, PUT for a
host outside ``allowed_upstream_hosts``, is refused before anything connects to it or looks it up.
Real uvicorn, the management API, raw TCP listeners on 127.0.0.1 counting their connections.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from asgi_ws_gateway.handshake.refusals import RefusalLog
from asgi_ws_gateway.upstream.resolver import RESOLVER
from support.clients import connect, expect_status
from support.management import api, managed_gateway
from support.servers import free_port
from support.upstream import UpstreamServer

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Listener:
    """A TCP server on 127.0.0.1 answering each connection with ``handler``; counts connections."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except OSError:
            pass
        finally:
            writer.close()

    async def start(self) -> Listener:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@pytest.fixture
async def listeners() -> AsyncIterator[Callable[[Handler], Awaitable[Listener]]]:
    started: list[Listener] = []

    async def start(handler: Handler) -> Listener:
        started.append(await Listener(handler).start())
        return started[-1]

    yield start
    for listener in started:
        await listener.stop()


def _says(line: bytes) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(line)
        await writer.drain()

    return handler


async def _banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n")  # before the request, as sshd does
    await writer.drain()
    await reader.read(65536)


async def _reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST, not FIN
    writer.transport.abort()


TARGETS: dict[str, Handler | None] = {
    "redis": _says(b"-ERR unknown command 'GET', with args beginning with: '/probe' 'HTTP/1.1'\r\n"),
    "ssh": _banner,
    "reset": _reset,
    "http": _says(b"HTTP/1.1 200 OK\r\nServer: internal-billing/4.2\r\nContent-Length: 0\r\n\r\n"),
    "closed": None,  # nothing listens
}
CAUSES = ("errno", "refused", "reset", "-err", "ssh-2.0", "openssh", "internal-billing", "200", "not known",
          "http/1", "did not answer with")  # fmt: skip


async def test_refusals_name_no_cause_of_an_upstream_failure(
    tmp_path: Path, upstream: UpstreamServer, listeners: Callable[[Handler], Awaitable[Listener]],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """Five internal targets, put behind APIs through the management API: each handshake is the 502
    a client gets, and ``GET /refusals`` shows the five alike (before: five different causes)."""
    ports = {name: (await listeners(handler)).port if handler else free_port() for name, handler in TARGETS.items()}
    caplog.set_level(logging.WARNING, "asgi_ws_gateway.middleware")
    with managed_gateway({"apis": [api("echo", "/ws/echo", upstream)]}, tmp_path / "state.json") as running:
        async with running.http() as http:
            for name, port in [*ports.items(), ("nxdomain", 80)]:
                host = "no-such-host.invalid" if name == "nxdomain" else "127.0.0.1"
                document = {"name": name, "path": f"/probe/{name}", "upstreams": [f"ws://{host}:{port}/probe"]}
                assert (await http.post("apis", json=document)).status_code == 201
            statuses = {name: (await expect_status(running.url(f"/probe/{name}")))[0] for name in [*ports, "nxdomain"]}
            refusals = (await http.get("refusals")).json()["refusals"]
    assert set(statuses.values()) == {502}
    details = {r["api"]: r["detail"] for r in refusals}
    assert set(details) == {*ports, "nxdomain"}
    assert len(set(details.values())) == 1, details  # one text for every kind of failure
    shown = next(iter(details.values())).lower()
    assert not [cause for cause in CAUSES if cause in shown], shown
    assert {r["reason"] for r in refusals} == {"upstream_unreachable"}
    # The operator's log line keeps the cause.
    logged = " ".join(r.getMessage() for r in caplog.records if "handshake denied with 502" in r.getMessage())
    assert "Connection refused" in logged and "-ERR unknown command" in logged


@pytest.mark.parametrize(
    ("reason", "detail", "shown"),
    [
        ("upstream_timeout", "ws://10.0.0.5:6379/ did not complete the handshake in 5 s",
         "the upstream did not complete the handshake in time"),
        ("upstream_dns_timeout", "the upstream host name db.internal did not resolve in 2.5 s (DNS lookup timed out)",
         "the upstream's host name did not resolve in time"),
        ("upstream_unreachable", "wss://10.0.0.5:22/ is unreachable: [SSL: WRONG_VERSION_NUMBER] wrong version number",
         "the upstream could not be reached, or did not answer as a WebSocket server"),
        ("upstream_anything_new", "ws://10.0.0.5:1/ said 'x'",
         "the upstream could not be reached, or did not answer as a WebSocket server"),
    ],
)  # fmt: skip
def test_every_upstream_failure_is_shown_by_its_kind(reason: str, detail: str, shown: str) -> None:
    log = RefusalLog()
    log.add(api="a", status=502, reason=reason, policy=None, detail=detail)
    assert log.recent()[0]["detail"].startswith(shown + "; why is in the gateway's log")


def test_what_is_not_an_upstream_failure_is_shown_as_it_was() -> None:
    """An upstream's own refusal (its status went to the client) and a policy's detail."""
    log = RefusalLog()
    log.add(
        api="a", status=403, reason="upstream_rejected", policy=None, detail="upstream rejected the handshake with 403"
    )
    log.add(api="a", status=401, reason="token_expired", policy="validate-jwt", detail="the token has expired")
    assert [r["detail"] for r in log.recent()] == ["the token has expired", "upstream rejected the handshake with 403"]


SECRET = "operator-upstream-key-0123456789"


async def test_a_put_outside_the_allowed_hosts_never_connects_nor_looks_the_host_up(
    tmp_path: Path, upstream: UpstreamServer, listeners: Callable[[Handler], Awaitable[Listener]]
) -> None:
    """The file's API, inheriting its ``X-Internal-Auth``, PUT for a host outside the file's and
    ``allowed_upstream_hosts`` (and a new one POSTed so): 422, no connection, no DNS lookup, the file's
    API unchanged. One that may go there (it skips the credential) connects only when a client's
    handshake asks, never when it is created."""
    target = await listeners(_says(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"))
    config = {"apis": [api("echo", "/ws/echo", upstream)],
              "policies": [{"set-header": {"header": "X-Internal-Auth", "value": SECRET}}]}  # fmt: skip
    lookups = RESOLVER.lookups
    with managed_gateway(config, tmp_path / "state.json", allowed_upstream_hosts=["chat.internal"]) as running:
        async with running.http() as http:
            for upstream_url in (f"ws://127.0.0.1:{target.port}/probe", "ws://probe-target.invalid:6379/"):
                moved = await http.put("apis/echo", json={"path": "/ws/echo", "upstreams": [upstream_url]})
                assert moved.status_code == 422, moved.text
                created = await http.post("apis", json={"name": "probe", "path": "/probe", "upstreams": [upstream_url]})
                assert created.status_code == 422, created.text
                assert (await expect_status(running.url("/probe")))[0] == 404
            async with await connect(running.url("/ws/echo")) as ws:  # still the file's upstream
                await ws.send("hi")
                assert await ws.recv() == "hi"
            assert (target.connections, RESOLVER.lookups - lookups) == (0, 0)
            skipping = {"name": "probe", "path": "/probe", "upstreams": [f"ws://127.0.0.1:{target.port}/probe"],
                        "skip_policies": ["set-header"]}  # fmt: skip
            assert (await http.post("apis", json=skipping)).status_code == 201
            await asyncio.sleep(0.2)  # a probe at PUT time would have connected by now
            assert target.connections == 0
            assert (await expect_status(running.url("/probe")))[0] == 404  # the upstream's own refusal
            assert target.connections == 1
