"""``asgi-ws-gateway run`` as a real subprocess: its access log, its logging options and its exit codes.

Issue 11 items 7 (access log under ``run``) and 8 (exit codes).
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
from pathlib import Path
from typing import Any

import httpx2
import psutil
import pytest
import yaml

from support.clients import connect, expect_status
from support.configs import api_entry, build_config, write_config
from support.processes import GatewayProcess, ServerProcess, main_in_process, ready_server
from support.servers import free_port
from support.upstream import UpstreamServer

RUN = ["-m", "asgi_ws_gateway", "run"]


def _config(tmp: Path, upstream: UpstreamServer, **top: Any) -> Path:
    closed = api_entry(upstream, name="closed", path="/closed", policies=[{"ip-filter": {"deny": ["127.0.0.0/8"]}}])
    return write_config(tmp, build_config(upstream, path="/echo", more_apis=[closed], **top))


def _start(config: Path, *extra: str) -> ServerProcess:
    return ready_server(lambda port: [*RUN, str(config), "--port", str(port), *extra])


async def _one_accepted_one_refused(port: int) -> None:
    async with await connect(f"ws://127.0.0.1:{port}/echo?x=1") as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"
    assert (await expect_status(f"ws://127.0.0.1:{port}/closed"))[0] == 403


def _gateway_lines(stdout: str, marker: str) -> list[str]:
    return [line for line in stdout.splitlines() if marker in line]


async def test_text_access_log_has_one_line_per_connection_by_default(
    tmp_path: Path, upstream_server: UpstreamServer
) -> None:
    """Default ``run``: a text line for the accepted connection (101, close code) and one for the refusal (403)."""
    with _start(_config(tmp_path, upstream_server)) as server:
        await _one_accepted_one_refused(server.port)
        assert server.stop() == 0
        stdout = server.stdout()
    (accepted,) = _gateway_lines(stdout, '"WebSocket /echo" 101 echo closed by client with 1000')
    assert accepted.startswith("INFO:     127.0.0.1:")
    (refused,) = _gateway_lines(stdout, '"WebSocket /closed" 403 closed denied (ip_forbidden, policy ip-filter)')
    assert refused.startswith("INFO:     127.0.0.1:")


async def test_json_access_log_flag_overrides_the_config(tmp_path: Path, upstream_server: UpstreamServer) -> None:
    """``--access-log-format json`` beats ``telemetry.access_log: text``: each line is one JSON object."""
    config = _config(tmp_path, upstream_server, telemetry={"access_log": "text"})
    with _start(config, "--access-log-format", "json") as server:
        await _one_accepted_one_refused(server.port)
        assert server.stop() == 0
        stdout = server.stdout()
    records = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    by_api = {record["api"]: record for record in records}
    assert len(records) == 2
    assert (by_api["echo"]["status"], by_api["echo"]["close_code"], by_api["echo"]["path"]) == (101, 1000, "/echo")
    assert (by_api["closed"]["status"], by_api["closed"]["outcome"]) == (403, "denied")
    assert all(record["client"].startswith("127.0.0.1:") for record in records)


async def test_the_configs_json_access_log_is_written_as_bare_json_lines(
    tmp_path: Path, upstream_server: UpstreamServer
) -> None:
    """``telemetry.access_log: json`` with no flag or variable: each line one JSON object, as the docs say.
    ``run`` chose its handler's format from the flag alone, so each object came after ``INFO:     ``."""
    config = _config(tmp_path, upstream_server, telemetry={"access_log": "json"})
    with _start(config) as server:
        await _one_accepted_one_refused(server.port)
        assert server.stop() == 0
        stdout = server.stdout()
    records = [json.loads(line) for line in stdout.splitlines() if '"api":' in line]
    assert sorted(record["status"] for record in records) == [101, 403]


async def test_the_access_log_variable_is_taken_as_the_flag_when_no_flag_is_given(
    tmp_path: Path, upstream_server: UpstreamServer
) -> None:
    """``ASGI_WS_GATEWAY_ACCESS_LOG=json`` exported for ``run`` was dropped without a word (text lines)."""
    config = _config(tmp_path, upstream_server, telemetry={"access_log": "text"})
    with ready_server(lambda port: [*RUN, str(config), "--port", str(port)],
                      env={"ASGI_WS_GATEWAY_ACCESS_LOG": "json"}) as server:  # fmt: skip
        await _one_accepted_one_refused(server.port)
        assert server.stop() == 0
        stdout = server.stdout()
    records = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    assert sorted(record["status"] for record in records) == [101, 403]
    assert not _gateway_lines(stdout, '"WebSocket /echo" 101 echo')  # no text line


async def test_no_access_log_silences_both_access_logs(tmp_path: Path, upstream_server: UpstreamServer) -> None:
    """``--no-access-log``: neither the gateway's lines nor uvicorn's HTTP access lines; the rest stays."""
    with _start(_config(tmp_path, upstream_server), "--no-access-log") as server:
        await _one_accepted_one_refused(server.port)
        with socket.create_connection(("127.0.0.1", server.port)) as http:
            http.sendall(b"GET /plain HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert http.recv(100).startswith(b"HTTP/1.1 404")
        assert server.stop() == 0
        output = server.output()
    assert '"WebSocket /echo" 101 echo' not in output
    assert '"WebSocket /closed" 403 closed' not in output
    assert '"GET /plain HTTP/1.1" 404' not in output
    assert "Application startup complete" in output  # the rest of the log is still there


@pytest.mark.parametrize("kind", ["json", "yaml", "ini"])
async def test_custom_log_config(tmp_path: Path, upstream_server: UpstreamServer, kind: str) -> None:
    """``--log-config`` (dictConfig JSON/YAML, fileConfig .ini) routes the access log where it says, redacted."""
    log_file = tmp_path / "access.log"
    fmt = "ACCESS %(name)s %(message)s"
    if kind == "ini":
        path = tmp_path / "logging.ini"
        path.write_text(
            "[loggers]\nkeys=root,access\n[handlers]\nkeys=file\n[formatters]\nkeys=plain\n"
            "[logger_root]\nlevel=WARNING\nhandlers=\n"
            "[logger_access]\nlevel=INFO\nhandlers=file\nqualname=asgi_ws_gateway.access\npropagate=0\n"
            f"[handler_file]\nclass=FileHandler\nformatter=plain\nargs=({str(log_file)!r},)\n"
            f"[formatter_plain]\nformat={fmt}\n"  # read raw: no %% escaping
        )
    else:
        document = {
            "version": 1, "disable_existing_loggers": False,
            "formatters": {"plain": {"format": fmt}},
            "handlers": {"file": {"class": "logging.FileHandler", "filename": str(log_file), "formatter": "plain"}},
            "loggers": {"asgi_ws_gateway.access": {"handlers": ["file"], "level": "INFO", "propagate": False},
                        "uvicorn.error": {"handlers": ["file"], "level": "INFO", "propagate": False}},
        }  # fmt: skip
        path = tmp_path / f"logging.{kind}"
        path.write_text(json.dumps(document) if kind == "json" else yaml.safe_dump(document))
    with _start(_config(tmp_path, upstream_server), "--log-config", str(path)) as server:
        async with await connect(f"ws://127.0.0.1:{server.port}/echo?access_token=s3cr3t-value") as ws:
            await ws.send("hi")
            await ws.recv()
        assert (await expect_status(f"ws://127.0.0.1:{server.port}/closed"))[0] == 403
        assert server.stop() == 0
        stdout = server.stdout()
    written = log_file.read_text()
    assert '"WebSocket /echo" 101' not in stdout  # the default handler is gone
    assert len(_gateway_lines(written, "ACCESS asgi_ws_gateway.access 127.0.0.1:")) == 2
    assert "s3cr3t-value" not in written + stdout  # the middleware redacts uvicorn's loggers even so


# --- exit codes -------------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_graceful_shutdown_exits_0(
    tmp_path: Path, upstream_server: UpstreamServer, workers: int, sig: signal.Signals
) -> None:
    """A SIGTERM/SIGINT drain, with an open connection, ends with status 0 (not 143/130), with 1 or 2 workers."""
    with _start(_config(tmp_path, upstream_server), "--workers", str(workers)) as server:
        async with await connect(f"ws://127.0.0.1:{server.port}/echo") as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
            # In a thread: the client must answer the server's close frame, or the drain waits it out.
            assert await asyncio.to_thread(server.stop, sig) == 0
        # uvicorn closes WebSockets itself (1012) before the lifespan shutdown would drain them (1001).
        assert ws.close_code in (1001, 1012)


@pytest.mark.parametrize("workers", [1, 2])
def test_bind_failure_exits_7(tmp_path: Path, upstream_server: UpstreamServer, workers: int) -> None:
    """The port is taken: exit 7 (could not start), not uvicorn's 3 (the CLI's "not found")."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = [*RUN, str(_config(tmp_path, upstream_server)), "--port", str(port), "--workers", str(workers)]
        with ServerProcess(args, port=port) as server:
            assert server.wait_exit() == 7
            assert "address already in use" in server.stderr().lower()


def test_management_port_bind_failure_exits_7(tmp_path: Path, upstream_server: UpstreamServer) -> None:
    """The management port is taken: exit 7 as well, the reason on stderr."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        args = [*RUN, str(_config(tmp_path, upstream_server)), "--port", str(free_port()),
                "--management-port", str(taken.getsockname()[1])]  # fmt: skip
        with ServerProcess(args, port=0, env={"ASGI_WS_GATEWAY_ADMIN_TOKEN": "t" * 32}) as server:
            assert server.wait_exit() == 7
            assert "could not bind the management port" in server.stderr()


def test_invalid_config_exits_2_with_the_field_path(tmp_path: Path) -> None:
    """``run`` on an invalid file: exit 2 and the field path on stderr, before anything listens."""
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump({"apis": [{"name": "x", "path": "/x", "upstreams": ["http://nope"]}]}))
    with ServerProcess([*RUN, str(path), "--port", str(free_port())], port=0) as server:
        assert server.wait_exit() == 2
        assert "apis[0].upstreams[0]" in server.stderr()


def test_help_epilog_documents_distinct_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    """The exit codes in ``--help`` are distinct: 3 is "not found", 7 is "could not start serving"."""
    from asgi_ws_gateway.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "3 not found" in text
    assert "7 (run) could not start serving" in text


@pytest.mark.parametrize("workers", [1, 2])
def test_failed_application_start_up_exits_7(tmp_path: Path, upstream_server: UpstreamServer, workers: int) -> None:
    """A valid file whose start-up fails (the management Redis is unreachable): 7, with 1 worker or 2.

    The supervisor sees a worker that exits as it exits, not once a health check's wait is over (an hour
    here: it waited out uvicorn's 5 s for the answer of a worker that had ended meanwhile).
    """
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connection refused
        args = [*RUN, str(_config(tmp_path, upstream_server)), "--port", str(free_port()), "--workers", str(workers),
                "--management", "/_gateway", "--redis", f"redis://127.0.0.1:{closed.getsockname()[1]}/0",
                "--timeout-worker-healthcheck", "3600"]  # fmt: skip
        with ServerProcess(args, port=0, env={"ASGI_WS_GATEWAY_ADMIN_TOKEN": "t" * 32}) as server:
            assert server.wait_exit() == 7
            assert "Application startup failed. Exiting." in server.stderr()


def test_a_server_whose_port_was_taken_meanwhile_starts_on_another(
    tmp_path: Path, upstream_server: UpstreamServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tests' ``ready_server``: a port chosen free and taken before the server binds it (another test
    worker's server) means another port, not a failed test; the server that could not bind is cleaned up."""
    import support.processes

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))  # bound, not listening: the server's bind fails, nothing answers there
        ports = iter([taken.getsockname()[1], free_port()])
        monkeypatch.setattr(support.processes, "free_port", lambda: next(ports))
        with _start(_config(tmp_path, upstream_server)) as server:
            assert server.port != taken.getsockname()[1]
            with socket.create_connection(("127.0.0.1", server.port)):
                pass


async def test_a_gateway_process_whose_port_was_taken_meanwhile_starts_on_another(
    tmp_path: Path, upstream_server: UpstreamServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``GatewayProcess`` alike (a CI run lost a test to ``Address already in use``, exit 7): another port."""
    import support.processes

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))  # bound, not listening: the gateway's bind fails
        ports = iter([taken.getsockname()[1], free_port()])
        monkeypatch.setattr(support.processes, "free_port", lambda: next(ports))
        config = _config(tmp_path, upstream_server)
        async with GatewayProcess([str(config)], cwd=tmp_path, workers=1) as gateway:
            assert gateway.port != taken.getsockname()[1]
            assert gateway.process is not None and gateway.process.poll() is None


def _listening(pid: int, port: int) -> set[str]:
    """The addresses process ``pid`` listens on at ``port``."""
    return {
        c.laddr.ip for c in psutil.Process(pid).net_connections("tcp") if c.status == "LISTEN" and c.laddr.port == port
    }


def _other_address() -> str | None:
    """An IPv4 address of this machine that is not loopback, if it has one."""
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family == socket.AF_INET and not address.address.startswith("127."):
                return str(address.address)
    return None


def test_the_management_port_listens_on_loopback_whatever_the_host(
    tmp_path: Path, upstream_server: UpstreamServer
) -> None:
    """``--host 0.0.0.0 --management-port M``: M is bound on 127.0.0.1 only (``--management-host``'s default)."""
    management = free_port()
    config = _config(tmp_path, upstream_server)
    command = [*RUN, str(config), "--host", "0.0.0.0", "--management-port", str(management)]
    env = {"ASGI_WS_GATEWAY_ADMIN_TOKEN": "t" * 32}
    with ready_server(lambda port: [*command, "--port", str(port)], env=env) as server:
        with httpx2.Client(trust_env=False, timeout=10) as http:
            assert http.get(f"http://127.0.0.1:{management}/healthz").status_code == 200
        assert _listening(server.process.pid, management) == {"127.0.0.1"}
        assert _listening(server.process.pid, server.port) == {"0.0.0.0"}
        other = _other_address()
        if other is not None:  # from outside this host's loopback: the gateway answers, the management port does not
            socket.create_connection((other, server.port), timeout=5).close()
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection((other, management), timeout=5)


def test_management_host_chooses_where_the_management_port_listens(
    tmp_path: Path, upstream_server: UpstreamServer
) -> None:
    """``--management-host 0.0.0.0``: the operator asked for every address, and gets it."""
    management = free_port()
    command = [*RUN, str(_config(tmp_path, upstream_server)), "--management-port", str(management),
               "--management-host", "0.0.0.0"]  # fmt: skip
    env = {"ASGI_WS_GATEWAY_ADMIN_TOKEN": "t" * 32}
    with ready_server(lambda port: [*command, "--port", str(port)], env=env) as server:
        assert _listening(server.process.pid, management) == {"0.0.0.0"}
        assert _listening(server.process.pid, server.port) == {"127.0.0.1"}


def test_management_host_without_a_management_port_is_a_usage_error(
    tmp_path: Path, upstream_server: UpstreamServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A --management path is served on --host's port: an address for it alone would be silently ignored."""
    monkeypatch.setenv("ASGI_WS_GATEWAY_ADMIN_TOKEN", "t" * 32)
    code, _, err = main_in_process("run", str(_config(tmp_path, upstream_server)), "--port", str(free_port()),
                                   "--management", "/_gateway", "--management-host", "127.0.0.1")  # fmt: skip
    assert code == 2
    assert "--management-host needs --management-port" in err
