"""``asgi-ws-gateway run --uds PATH``: the gateway on a Unix socket behind a proxy on the same host (real
processes: ``run`` on a socket in a temporary directory, clients through ``unix_connect``, a real upstream).

Before, ``run`` had no ``--uds`` at all: only ``uvicorn app:app --uds`` served a socket, on uvicorn's
protocols, and a stale socket left by a killed gateway stopped the next start.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml
from websockets.asyncio.client import unix_connect
from websockets.exceptions import InvalidStatus

from asgi_ws_gateway.management import ManagementClient
from asgi_ws_gateway.telemetry import names as n
from support.otlp import OtlpReceiver
from support.processes import SRC, ServerProcess, main_in_process
from support.servers import free_port
from support.uds import claim_refusal
from support.upstream import UpstreamServer


def _config(tmp: Path, upstream: UpstreamServer | None, **top: Any) -> Path:
    url = upstream.url("/headers") if upstream is not None else "ws://127.0.0.1:9/"
    policies = [{"ip-filter": {"allow": ["203.0.113.0/24"]}}]
    apis = [{"name": "spliced", "path": "/ws/spliced", "upstreams": [url], "policies": policies},
            {"name": "framed", "path": "/ws/framed", "upstreams": [url], "policies": policies,
             "message_policies": {"inbound": [{"limit-message-size": {"max": 65536}}]}}]  # fmt: skip
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump({"apis": apis, "telemetry": {"access_log": "json"}, **top}))
    return path


def _run(tmp: Path, config: Path, *args: str) -> ServerProcess:
    return ServerProcess(["-m", "asgi_ws_gateway", "run", str(config), *args], port=0, cwd=tmp)


async def _forwarded(sock: Path, path: str, client: str) -> int | str:
    """What the upstream's ``/headers`` was sent as X-Forwarded-For, or the refusal's status."""
    try:
        async with unix_connect(str(sock), f"ws://gw.test{path}", additional_headers={"X-Forwarded-For": client}) as ws:
            headers = json.loads(await ws.recv())["headers"]
            await ws.send("hi")
            assert await ws.recv() == "hi"  # relayed both ways
            return ", ".join(headers["x-forwarded-for"])
    except InvalidStatus as exc:
        return exc.response.status_code


def _access_lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith('{"time"')]


@pytest.mark.parametrize("workers", [1, 2])
async def test_run_serves_on_a_unix_socket_behind_a_trusted_proxy(
    tmp_path: Path, socket_dir: Path, upstream: UpstreamServer, workers: int
) -> None:
    """Both connectors over the socket; the proxy's X-Forwarded-For names the client; the start-up line
    says where it listens; the socket is mode 0660 (not uvicorn's 0666) and goes when the gateway stops."""
    sock = socket_dir / "gw.sock"
    config = _config(tmp_path, upstream, trusted_proxies=["unix:"])
    with _run(tmp_path, config, "--uds", str(sock), "--workers", str(workers)) as server:
        server.wait_for_line("Application startup complete", times=workers)
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o660
        for path in ("/ws/spliced", "/ws/framed"):
            assert await _forwarded(sock, path, "203.0.113.7") == "203.0.113.7"
            assert await _forwarded(sock, path, "198.51.100.1") == 403
        assert server.stop() == 0
        output = server.output()
    assert f"running on unix socket {sock}" in output
    assert not sock.exists()
    assert "Traceback" not in output
    lines = _access_lines(output)
    assert sorted((line["api"], line["client"], line["status"]) for line in lines) == [
        ("framed", "198.51.100.1", 403), ("framed", "203.0.113.7", 101),
        ("spliced", "198.51.100.1", 403), ("spliced", "203.0.113.7", 101),
    ]  # fmt: skip
    assert {line["peer"] for line in lines} == {"unix:"}  # the trusted proxy they came through (it was "-")


async def test_run_on_an_untrusted_socket_refuses_as_no_client_address(
    tmp_path: Path, socket_dir: Path, upstream: UpstreamServer
) -> None:
    """Without ``unix:`` the access line names the reason and the client as ``-``, and one WARNING the fix."""
    sock = socket_dir / "gw.sock"
    with _run(tmp_path, _config(tmp_path, upstream), "--uds", str(sock)) as server:
        server.wait_for_line("Application startup complete")
        for path in ("/ws/spliced", "/ws/framed"):
            assert await _forwarded(sock, path, "203.0.113.7") == 403
        server.stop()
        output = server.output()
    assert [(line["client"], line["reason"]) for line in _access_lines(output)] == [("-", "no_client_address")] * 2
    assert output.count("a policy needs the client's address, but the connection has none") == 1
    assert "Traceback" not in output


def test_a_stale_socket_is_replaced(tmp_path: Path, socket_dir: Path) -> None:
    """A socket nothing listens on (a gateway killed with SIGKILL left it): replaced, not 'Address already in use'."""
    sock = socket_dir / "gw.sock"
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(sock))
    with _run(tmp_path, _config(tmp_path, None), "--uds", str(sock)) as server:
        server.wait_for_line("Application startup complete")
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(sock))


_SLOW_WORKERS = """
import sys
import time

if "--multiprocessing-fork" in sys.argv:  # a worker spawned by the supervisor: its socket not yet served
    time.sleep(20)
"""


def test_a_gateway_still_starting_keeps_its_socket(tmp_path: Path, socket_dir: Path) -> None:
    """A second ``run --uds`` on the path of a gateway whose workers are still starting exits 7 (another
    server listens), the first's socket left alone: it took it for a stale one, removed it and served in
    its place, the first one running on, unreachable."""
    sock = socket_dir / "gw.sock"
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(_SLOW_WORKERS)
    path = os.pathsep.join([str(tmp_path / "site"), str(SRC), os.environ.get("PYTHONPATH", "")])
    config = _config(tmp_path, None)
    first = ServerProcess(["-m", "asgi_ws_gateway", "run", str(config), "--uds", str(sock), "--workers", "2"],
                          port=0, cwd=tmp_path, env={"PYTHONPATH": path})  # fmt: skip
    with first:
        first.wait_for_line(f"running on unix socket {sock}")
        inode = os.stat(sock).st_ino
        with _run(tmp_path, config, "--uds", str(sock)) as second:
            assert second.wait_exit(timeout=15) == 7
            assert f"error: --uds {sock}: another server listens on it" in second.stderr()
        assert "Application startup complete" not in first.output()  # the case: the first still starting
        assert os.stat(sock).st_ino == inode


def _refused(sock: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(str(sock))
        except ConnectionRefusedError:
            return True
    return False


async def test_a_gateway_stopping_leaves_the_socket_of_the_one_that_replaced_it(
    tmp_path: Path, socket_dir: Path, upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rolling deploy on one host: the old gateway stops (its socket no longer listens; its telemetry
    flush waits on a collector that never answers), the new one replaces that socket and serves. The old
    one, exiting, removed the new one's socket: ext4 gave it the freed inode number of the old one, and
    only that number was compared. The new gateway served on, unreachable."""
    for name in ("OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER", "OTEL_TRACES_SAMPLER"):
        monkeypatch.delenv(name, raising=False)
    sock = socket_dir / "gw.sock"
    config = _config(tmp_path, upstream, trusted_proxies=["unix:"], telemetry={"shutdown_timeout": 10})
    with socket.create_server(("127.0.0.1", 0)) as collector:  # takes connections, never answers
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.getsockname()[1]}",
               "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}  # fmt: skip
        old = ServerProcess(["-m", "asgi_ws_gateway", "run", str(config), "--uds", str(sock)], port=0,
                            cwd=tmp_path, env=env)  # fmt: skip
        with old:
            old.wait_for_line("Application startup complete")
            assert await _forwarded(sock, "/ws/spliced", "203.0.113.7") == "203.0.113.7"  # a span to flush
            old.process.send_signal(signal.SIGTERM)
            while not _refused(sock):  # stopping: its socket no longer listens
                assert old.process.poll() is None, old.output()
                await asyncio.sleep(0.05)
            with _run(tmp_path, config, "--uds", str(sock)) as new:
                new.wait_for_line("Application startup complete")
                assert old.process.poll() is None, old.output()  # the case: the old one exits after
                assert old.wait_exit() == 0, old.output()
                assert await _forwarded(sock, "/ws/spliced", "203.0.113.7") == "203.0.113.7"


@pytest.mark.parametrize("case", ["live socket", "not a socket", "no directory", "too long"])
def test_an_unusable_path_is_an_error_naming_it(tmp_path: Path, socket_dir: Path, case: str) -> None:
    """Exit 7 (could not start serving) with the path and why; a live socket and a file are left alone. The
    live socket through ``run``, the others as ``claim_refusal`` reads them."""
    sock = socket_dir / "gw.sock"
    expected = {"live socket": "another server listens on it", "not a socket": "a file that is not a socket",
                "no directory": "its directory", "too long": "the path is longer than"}[case]  # fmt: skip
    listener = socket.socket(socket.AF_UNIX)
    if case == "live socket":
        listener.bind(str(sock))
        listener.listen()
    elif case == "not a socket":
        sock.write_text("keep me")
    elif case == "no directory":
        sock = socket_dir / "missing" / "gw.sock"
    else:
        sock = socket_dir / ("x" * 120)
    try:
        if case == "live socket":
            with _run(tmp_path, _config(tmp_path, None), "--uds", str(sock)) as server:
                assert server.wait_exit() == 7
                stderr = server.stderr()
        else:
            stderr = claim_refusal(sock)
    finally:
        listener.close()
    assert f"error: --uds {sock}: {expected}" in stderr
    assert "Traceback" not in stderr
    if case == "not a socket":
        assert sock.read_text() == "keep me"


@pytest.mark.parametrize("flag", [["--port", "8123"], ["--host", "127.0.0.1"]])
def test_uds_excludes_host_and_port(tmp_path: Path, socket_dir: Path, flag: list[str]) -> None:
    """``--uds`` with ``--host`` or ``--port`` is a usage error (exit 2), nothing bound."""
    sock = socket_dir / "gw.sock"
    code, _, err = main_in_process("run", str(_config(tmp_path, None)), "--uds", str(sock), *flag)
    assert code == 2
    assert "--uds listens on a Unix socket instead of --host and --port" in err
    assert not sock.exists()


def test_uds_takes_the_default_port_for_the_management_port(tmp_path: Path, socket_dir: Path) -> None:
    """``--uds`` with ``--management-port 8000`` is no clash with an unused ``--port`` (it was exit 2,
    '--management-port must differ from --port'): the run goes on to the socket's own check (exit 7 here)."""
    sock = socket_dir / "missing" / "gw.sock"
    args = [
        "-m",
        "asgi_ws_gateway",
        "run",
        str(_config(tmp_path, None)),
        "--uds",
        str(sock),
        "--management-port",
        "8000",
    ]
    token = {"ASGI_WS_GATEWAY_ADMIN_TOKEN": secrets.token_urlsafe(32)}
    with ServerProcess(args, port=0, cwd=tmp_path, env=token) as server:
        assert server.wait_exit() == 7, server.stderr()
        assert f"error: --uds {sock}: its directory" in server.stderr()


async def test_spans_and_metrics_name_the_client_or_the_reason(
    tmp_path: Path, socket_dir: Path, upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OTLP: ``client.address`` is the client the proxy on the socket named (no peer address: the socket has
    none; ``network.transport`` ``unix`` says which peer vouched); a handshake without one is counted and
    traced as ``no_client_address``, with no address."""
    for name in ("OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER", "OTEL_TRACES_SAMPLER"):
        monkeypatch.delenv(name, raising=False)
    sock = socket_dir / "gw.sock"
    config = _config(tmp_path, upstream, trusted_proxies=["unix:"])
    with OtlpReceiver() as otlp:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint("http/protobuf"),
               "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}  # fmt: skip
        server = ServerProcess(["-m", "asgi_ws_gateway", "run", str(config), "--uds", str(sock)], port=0,
                               cwd=tmp_path, env=env)  # fmt: skip
        with server:
            server.wait_for_line("Application startup complete")
            assert await _forwarded(sock, "/ws/spliced", "203.0.113.7") == "203.0.113.7"
            with pytest.raises(InvalidStatus):  # no header: no client named
                await unix_connect(str(sock), "ws://gw.test/ws/framed")
            assert server.stop() == 0  # the exporters flush at shutdown
        spans, handshakes = otlp.spans(), otlp.latest("ws_gateway.handshakes")
    handshake_spans = {s.attributes[n.URL_PATH]: s.attributes for s in spans if s.name.startswith("GET")}
    assert handshake_spans["/ws/spliced"][n.CLIENT_ADDRESS] == "203.0.113.7"
    assert n.NETWORK_PEER_ADDRESS not in handshake_spans["/ws/spliced"]
    assert handshake_spans["/ws/spliced"][n.NETWORK_TRANSPORT] == "unix"  # the trusted peer: the socket's
    assert handshake_spans["/ws/framed"][n.ERROR_TYPE] == "no_client_address"
    assert n.CLIENT_ADDRESS not in handshake_spans["/ws/framed"]
    refused = [p.value for attrs, p in handshakes.items() if ("error.type", "no_client_address") in attrs]
    assert refused == [1]


async def test_the_connection_listing_names_the_socket_as_the_peer(
    tmp_path: Path, socket_dir: Path, upstream: UpstreamServer
) -> None:
    """``GET /connections``: ``peer`` is ``unix:`` for a client that came over the socket (it was ``-``)."""
    sock, port, token = socket_dir / "gw.sock", free_port(), secrets.token_urlsafe(32)
    config = _config(tmp_path, upstream, trusted_proxies=["unix:"])
    args = ["-m", "asgi_ws_gateway", "run", str(config), "--uds", str(sock), "--management-port", str(port)]
    with ServerProcess(args, port=port, cwd=tmp_path, env={"ASGI_WS_GATEWAY_ADMIN_TOKEN": token}) as server:
        server.wait_for_line("Application startup complete")
        headers = {"X-Forwarded-For": "203.0.113.7"}
        async with unix_connect(str(sock), "ws://gw.test/ws/spliced", additional_headers=headers) as ws:
            await ws.recv()
            async with ManagementClient(f"http://127.0.0.1:{port}", token=token) as client:
                (listed,) = await client.list_connections()
    assert (listed["client"], listed["peer"]) == ("203.0.113.7", "unix:")
