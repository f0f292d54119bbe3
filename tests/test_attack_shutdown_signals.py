"""SIGTERM, SIGINT and SIGHUP to ``asgi-ws-gateway run`` while connections are open or being opened.

uvicorn's own shutdown closed the gateway's connections before the gateway's drain ran, and closed
them badly: a relayed client that read nothing held the process for ever (its close waited for
the unread data to drain), a client still sending was reset (1006, not 1012), and a handshake in
flight got a bare 500 while the gateway went on with it. With ``--workers``, a SIGHUP to the process
group killed every worker at once, and a forced quit exited 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection

from asgi_ws_gateway.server.serving import EXIT_FORCED
from support.clients import connect
from support.configs import build_config, write_config
from support.plugins import write_plugin
from support.processes import ServerProcess, ready_server
from support.rawhttp import accept_upstream
from support.upstream import SilentUpstream, UpstreamServer

RUN = ["-m", "asgi_ws_gateway", "run"]


def _upgrade(port: int, path: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def _workers(pid: int) -> list[int]:
    """The supervisor's worker processes (its children but the resource tracker, which runs no server)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in children if b"uvicorn" in Path(f"/proc/{child}/cmdline").read_bytes()
            or b"multiprocessing.spawn" in Path(f"/proc/{child}/cmdline").read_bytes()]  # fmt: skip


def _to_the_group(server: ServerProcess, sig: int) -> None:
    """``sig`` to the supervisor and its workers, as a terminal (Ctrl+C) or ``kill -- -PGID`` sends it."""
    for pid in [server.process.pid, *_workers(server.process.pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


class _HungUpstream(SilentUpstream):
    """A TCP server that reads an upgrade request and never answers it (not even with a 101)."""

    requests = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            self.requests += 1
            while await reader.read(65536):
                pass


class _DeafUpstream(SilentUpstream):
    """A TCP server that answers the upgrade with a 101 and then reads nothing (a frozen backend): what the
    gateway sends it fills the buffers, and a send to it waits."""

    async def __aenter__(self) -> _DeafUpstream:
        self.served: list[asyncio.Task[object]] = []
        return await super().__aenter__()

    async def __aexit__(self, *exc: object) -> None:
        for writer in self.writers:
            writer.transport.abort()
        await asyncio.gather(*self.served, return_exceptions=True)  # each sees its end before the loop's
        await super().__aexit__(*exc)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.served.append(task)
        self.writers.append(writer)
        await accept_upstream(reader, writer)
        await writer.wait_closed()  # never read: ends when the test closes it, or the gateway's abort is seen


@contextlib.asynccontextmanager
async def _gateway(tmp_path: Path, config: dict[str, object], *extra: str) -> AsyncIterator[ServerProcess]:
    path = write_config(tmp_path, config)
    with ready_server(lambda port: [*RUN, str(path), "--port", str(port), "--log-level", "info", *extra]) as server:
        yield server


async def test_sigterm_ends_while_a_relayed_client_reads_nothing(
    tmp_path: Path, upstream_server: UpstreamServer
) -> None:
    """The upstream floods a client that never reads: SIGTERM waited for its unread data for ever."""
    config = build_config(upstream_server.url("/flood/65536"), path="/flood",
                          api={"passthrough": False, "close_timeout": 1}, drain_grace_period=2)  # fmt: skip
    async with _gateway(tmp_path, config) as server:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(_upgrade(server.port, "/flood"))
        assert sock.recv(12) == b"HTTP/1.1 101"
        server.wait_for_line("Application startup complete.")
        await asyncio.sleep(1)  # the buffers fill: the gateway's writes to the client are paused
        try:
            assert server.stop(signal.SIGTERM, timeout=30) == 0  # before: still running 150 s later
        finally:
            sock.close()
        output = server.output()
    assert '"WebSocket /flood" 101 echo closed by gateway with 1012' in output, output
    assert "Traceback" not in output


async def test_sigterm_ends_a_relayed_connection_whose_upstream_reads_nothing(tmp_path: Path) -> None:
    """The client's messages wait for an upstream that reads nothing. The client got its 1012, but the relay,
    its pump held in the send to the upstream, read the server's disconnect only after that send: it held
    the shutdown until uvicorn's graceful timeout cancelled it (``ERROR: Cancel 1 running task(s)``), and the
    drain then closed it with 1001, which the access line and ``ws_gateway.connection.closes`` recorded.
    The splice and the frame relay mirror the 1012 upstream at once."""
    async with _DeafUpstream() as upstream:
        config = build_config(f"ws://127.0.0.1:{upstream.port}/", path="/deaf",
                              api={"passthrough": False, "close_timeout": 1, "ping_interval": None},
                              drain_grace_period=2)  # fmt: skip  # no keepalive: nothing else ends it
        async with _gateway(tmp_path, config) as server:
            ws = await connect(f"ws://127.0.0.1:{server.port}/deaf", compression=None)  # its bytes fill the buffers

            sent = 0

            async def upload() -> None:
                nonlocal sent
                with contextlib.suppress(Exception):
                    while True:
                        await ws.send(b"u" * 65536)
                        sent += 1

            sending = asyncio.create_task(upload())
            before = -1
            while sent != before:  # until the buffers are full: its send waits
                before = sent
                await asyncio.sleep(0.5)
            server.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.wait_closed(), 30)
            sending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sending
            assert server.wait_exit(30) == 0
            output = server.output()
    assert ws.close_code == 1012, output
    assert '"WebSocket /deaf" 101 echo closed by gateway with 1012' in output, output
    assert "ERROR" not in output and "Traceback" not in output, output


async def test_sigterm_answers_a_handshake_in_flight_with_the_draining_503(tmp_path: Path) -> None:
    """The upstream never answers the gateway's connect: the client got uvicorn's bare 500 at SIGTERM
    while the gateway went on connecting, and its access line later said 504 or "abandoned"."""
    async with _HungUpstream() as upstream:
        config = build_config(f"ws://127.0.0.1:{upstream.port}/", path="/hung", api={"connect_timeout": 60})
        async with _gateway(tmp_path, config) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(_upgrade(server.port, "/hung"))
            for _ in range(300):
                if upstream.requests:
                    break
                await asyncio.sleep(0.05)
            assert upstream.requests == 1
            server.process.send_signal(signal.SIGTERM)
            head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)).decode().lower()
            writer.close()
            await writer.wait_closed()  # close() only schedules the FIN: wait_exit() blocks this loop
            assert server.wait_exit(30) == 0  # before: 29 s, the connect's own timeout
            output = server.output()
    assert head.startswith("http/1.1 503 "), head
    assert "retry-after: 5\r\n" in head and "connection: close\r\n" in head
    assert output.count('"WebSocket /hung" 503 echo denied (draining)') == 1, output
    assert " 500" not in output and " 504 " not in output and "abandoned" not in output
    assert "Traceback" not in output


async def test_sigterm_sends_1012_to_relayed_clients_still_sending(
    tmp_path: Path, upstream_server: UpstreamServer
) -> None:
    """uvicorn closed the socket right after the close frame with the client's data unread: the kernel
    reset the connection and the client saw 1006 (9 runs in 12)."""
    config = build_config(upstream_server, api={"passthrough": False})
    async with _gateway(tmp_path, config) as server:
        clients = [await connect(f"ws://127.0.0.1:{server.port}/ws/echo") for _ in range(4)]

        async def stream(ws: ClientConnection) -> None:
            with contextlib.suppress(Exception):
                while True:
                    await ws.send("x" * 100)
                    await asyncio.sleep(0)  # the other clients' turn: a send that does not wait never yields

        async def drain(ws: ClientConnection) -> None:
            with contextlib.suppress(Exception):
                async for _ in ws:
                    pass

        tasks = [asyncio.create_task(job(ws)) for ws in clients for job in (stream, drain)]
        await asyncio.sleep(0.5)
        server.process.send_signal(signal.SIGTERM)
        await asyncio.wait(tasks, timeout=30)
        assert server.wait_exit(30) == 0
        output = server.output()
    assert [ws.close_code for ws in clients] == [1012] * 4, output
    assert output.count("echo closed by gateway with 1012") == 4, output


async def test_sighup_to_the_process_group_drains_each_worker(tmp_path: Path, upstream_server: UpstreamServer) -> None:
    """``kill -HUP -- -PGID`` (or a closing terminal): each worker had SIGHUP's default action, and died
    at once with every connection (1006, no close frame); the supervisor then replaced them."""
    config = build_config(upstream_server, api={"passthrough": False})
    async with _gateway(tmp_path, config, "--workers", "2") as server:
        server.wait_for_line("Application startup complete.", times=2)
        clients = [await connect(f"ws://127.0.0.1:{server.port}/ws/echo") for _ in range(4)]
        for ws in clients:
            await ws.send("before")
            assert await ws.recv() == "before"
        _to_the_group(server, signal.SIGHUP)
        # One 30 s wait for all four (not 30 s each: four times that was past the test's timeout, which hid
        # the gateway's output when a close never came).
        await asyncio.wait([asyncio.ensure_future(ws.wait_closed()) for ws in clients], timeout=30)
        assert [ws.close_code for ws in clients] == [1012] * 4, server.output()
        async with await connect(f"ws://127.0.0.1:{server.port}/ws/echo") as fresh:  # the new workers serve
            await fresh.send("after")
            assert await fresh.recv() == "after"
        assert server.stop(signal.SIGTERM) == 0


async def test_a_second_sigint_to_the_workers_exits_forced(tmp_path: Path) -> None:
    """Ctrl+C twice with ``--workers 2``: the drain was cut short but the supervisor exited 0."""
    async with SilentUpstream() as upstream:
        config = build_config(f"ws://127.0.0.1:{upstream.port}/", path="/silent", api={"close_timeout": 30})
        async with _gateway(tmp_path, config, "--workers", "2") as server:
            server.wait_for_line("Application startup complete.", times=2)
            async with await connect(f"ws://127.0.0.1:{server.port}/silent"):
                _to_the_group(server, signal.SIGINT)
                server.wait_for_line("Waiting for connections to close")
                _to_the_group(server, signal.SIGINT)
                code = server.wait_exit(30)
            output = server.output()
    assert code == EXIT_FORCED, output
    assert "WARNING:  forced to quit before the drain finished" in output, output
    assert "Traceback" not in output


_HOLDING_PLUGIN = """
import asyncio

from pydantic import BaseModel

from asgi_ws_gateway.policies import register_policy


@register_policy("never-done")
class NeverDone:
    \"\"\"Never answers the handshake, and takes no cancellation: a forced quit's end is held where it
    cancels the connections' tasks, as a slow one is under load.\"\"\"

    class Settings(BaseModel):
        model_config = {"extra": "forbid"}

    def __init__(self, settings, env):
        pass

    async def apply(self, context):
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                pass
"""


async def test_a_forced_worker_stays_forced_when_its_supervisor_acts_late(tmp_path: Path) -> None:
    """Ctrl+C twice with ``--workers 2``, the supervisor slower than the workers (as under load): its
    SIGTERM for the first SIGINT reached the forced worker while it cancelled its connections' tasks,
    where uvicorn had given SIGTERM back its default action; the worker died of it and ``run`` exited 0
    (3 times in full runs of the test above)."""
    name = write_plugin(tmp_path, _HOLDING_PLUGIN)
    path = write_config(
        tmp_path, build_config(plugins=[name], api={"close_timeout": 30, "policies": [{"never-done": {}}]})
    )
    command = [*RUN, str(path), "--log-level", "info", "--workers", "2"]
    with ready_server(lambda port: [*command, "--port", str(port)], cwd=tmp_path) as server:  # the plugin beside it
        server.wait_for_line("Application startup complete.", times=2)
        with socket.create_connection(("127.0.0.1", server.port)) as held:
            held.sendall(_upgrade(server.port, "/ws/echo"))  # held by the policy in one worker
            os.kill(server.process.pid, signal.SIGSTOP)  # the supervisor acts late
            try:
                _to_the_group(server, signal.SIGINT)
                server.wait_for_line("Waiting for connections to close")
                server.wait_for_line("Finished server process")  # the other worker, drained
                _to_the_group(server, signal.SIGINT)
                server.wait_for_line("forced to quit before the drain finished: 1 connection(s) cut")
                server.wait_for_line("Finished server process", times=2)  # its tasks being cancelled
            finally:
                os.kill(server.process.pid, signal.SIGCONT)  # its SIGTERM to each worker left
            code = server.wait_exit(30)
        output = server.output()
    assert code == EXIT_FORCED, output
    assert "Traceback" not in output, output


_EXECUTOR_PLUGIN = """
import asyncio
import time

from pydantic import BaseModel

from asgi_ws_gateway.policies import register_policy


@register_policy("busy-executor")
class BusyExecutor:
    \"\"\"Leaves the loop's default executor busy for 8 s: the server returns, and asyncio.run's cleanup
    joins that thread, as a slow getaddrinfo or a plugin's blocking call holds it.\"\"\"

    class Settings(BaseModel):
        model_config = {"extra": "forbid"}

    def __init__(self, settings, env):
        pass

    async def apply(self, context):
        asyncio.get_running_loop().run_in_executor(None, time.sleep, 8)
"""


async def test_a_later_ctrl_c_ends_a_drained_process_at_once_without_a_traceback(
    tmp_path: Path, upstream_server: UpstreamServer
) -> None:
    """The drain complete, asyncio.run's cleanup joins the default executor's threads: a Ctrl+C then
    raised KeyboardInterrupt where uvicorn had given SIGINT back its default action, and the loop closed
    under the joining thread (a traceback, exit 1; in full runs a drained worker of ``--workers 2`` given a
    second Ctrl+C). Now it ends at once with 0, the drain having been complete."""
    name = write_plugin(tmp_path, _EXECUTOR_PLUGIN)
    path = write_config(
        tmp_path, build_config(upstream_server, plugins=[name], api={"policies": [{"busy-executor": {}}]})
    )
    with ready_server(
        lambda port: [*RUN, str(path), "--log-level", "info", "--port", str(port)], cwd=tmp_path
    ) as server:
        async with await connect(f"ws://127.0.0.1:{server.port}/ws/echo"):
            pass
        server.process.send_signal(signal.SIGINT)
        server.wait_for_line("Finished server process")
        await asyncio.sleep(0.5)  # the executor's thread has 7 s to go: the process is joining it
        assert server.process.poll() is None, server.output()
        server.process.send_signal(signal.SIGINT)
        code = server.wait_exit(30)
        output = server.output()
    assert code == 0, output
    assert "Traceback" not in output, output


async def test_a_forced_quit_logs_no_traceback_and_counts_closed_clients_apart(tmp_path: Path) -> None:
    """One process: each cancelled connection and the lifespan logged an ERROR with a CancelledError
    traceback after the WARNING, which counted clients already sent their 1012 as cut without one."""
    async with SilentUpstream() as upstream:
        config = build_config(f"ws://127.0.0.1:{upstream.port}/", path="/silent", api={"close_timeout": 30})
        async with _gateway(tmp_path, config) as server:
            async with await connect(f"ws://127.0.0.1:{server.port}/silent") as ws:
                server.process.send_signal(signal.SIGINT)
                server.wait_for_line("Waiting for connections to close")
                assert server.stop(signal.SIGINT) == EXIT_FORCED
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.recv(), 10)
            output = server.output()
    assert ws.close_code == 1012
    assert "forced to quit before the drain finished: 1 connection(s) cut, 0 of them without a close frame" in output
    assert "Traceback" not in output and "CancelledError" not in output and "ERROR" not in output, output


_DROPPED = "a response still being written at shutdown was dropped (the client reads nothing)"
_TIMED_OUT = "timeout graceful shutdown exceeded"  # uvicorn's ERROR when a connection held it to the end


def _unread_client(port: int) -> socket.socket:
    """A connection to ``port`` that reads nothing, with a small receive window and small segments.

    The segment size bounds the server's socket send buffer: the kernel sizes it from the segment size,
    and with loopback's 64 KiB segments it grew to ``tcp_wmem``'s 4 MiB, ~21,000 ``/healthz`` answers
    taken before a write waited (the server still answering at full speed when its SIGTERM came).
    """
    sock = socket.socket()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
        sock.connect(("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    return sock


def _pipeline_until_stuck(sock: socket.socket, server: ServerProcess) -> None:
    """Pipeline ``GET /healthz`` on ``sock`` until the server has neither read nor answered one for a
    full second: its answers fill the socket and wait in the protocol, a response still being written.

    A server that merely stopped reading (its answers queued) was not enough: with a large socket
    buffer it still had room for every answer, which the kernel took at SIGTERM.
    """
    requests = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * 2000
    sock.setblocking(False)
    deadline = time.monotonic() + 60  # a hang guard
    answered, moved = -1, time.monotonic()
    while time.monotonic() - moved < 1:
        assert time.monotonic() < deadline, f"the server never stopped answering:\n{server.output()[-2000:]}"
        with contextlib.suppress(BlockingIOError):
            sock.send(requests)
            moved = time.monotonic()
        count = server.output().count('"GET /healthz HTTP/1.1" 200')
        if count != answered:
            answered, moved = count, time.monotonic()
        time.sleep(0.05)


def test_an_http_client_that_reads_nothing_is_dropped_at_shutdown_without_a_traceback(
    tmp_path: Path, upstream_server: UpstreamServer
) -> None:
    """Pipelined ``GET /healthz`` that the client never reads (an attack pass on the shutdown above): the
    response stuck on the full socket held the SIGTERM for all of uvicorn's timeout, then its cancelled task
    was logged as an ``Exception in ASGI application`` with a traceback. It is dropped at half that timeout
    now, with one INFO line."""
    # uvicorn's timeout is drain_grace_period + 2 close_timeouts + 5 s: 6 s here, the drop at 3 s.
    config = build_config(upstream_server.url("/echo"), api={"close_timeout": 0.5}, drain_grace_period=0)
    path = write_config(tmp_path, config)
    with ready_server(lambda port: [*RUN, str(path), "--port", str(port)]) as server:
        sock = _unread_client(server.port)
        try:
            _pipeline_until_stuck(sock, server)
            assert server.stop(signal.SIGTERM, timeout=30) == 0
        finally:
            sock.close()
        output = server.output()
    assert output.count(_DROPPED) == 1, output[-2000:]
    assert _TIMED_OUT not in output, output[-2000:]
    assert "Exception in ASGI application" not in output and "Traceback" not in output, output[-3000:]


_DOWNLOAD_APP = """
BODY = b"x" * {size}


async def app(scope, receive, send):
    assert scope["type"] == "http"
    await send({{"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(BODY)).encode())]}})
    await send({{"type": "http.response.body", "body": BODY}})
"""


@pytest.mark.parametrize("protocol", ["GatewayHTTPProtocol", "GatewayH11Protocol"])
def test_a_complete_response_the_client_reads_nothing_of_is_dropped_at_shutdown(tmp_path: Path, protocol: str) -> None:
    """``uvicorn app:app`` with the gateway's protocol, one body larger than any socket buffer, unread: the
    response was complete, so the shutdown closed the connection, and the close waited for the client. The
    SIGTERM was held for all of ``--timeout-graceful-shutdown``, which ended with uvicorn's ``Cancel 0 running
    task(s)`` ERROR and no word of the client."""
    most = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])  # the most a socket buffer takes
    (tmp_path / "app.py").write_text(_DOWNLOAD_APP.format(size=most + 2**20))
    http = f"asgi_ws_gateway.server:{protocol}"
    command = ["-m", "uvicorn", "app:app", "--http", http, "--timeout-graceful-shutdown", "4"]  # the drop at 2 s
    with ready_server(lambda port: [*command, "--port", str(port)], cwd=tmp_path) as server:
        sock = _unread_client(server.port)
        try:
            sock.sendall(b"GET /download HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            # The access line is written as the response starts; its body follows in the same step.
            server.wait_for_line('"GET /download HTTP/1.1" 200')
            server.stop(signal.SIGTERM, timeout=30)
        finally:
            sock.close()
        output = server.output()
    assert output.count(_DROPPED) == 1, output
    assert _TIMED_OUT not in output, output
    assert "Traceback" not in output and "ERROR" not in output, output
