"""Redis unreachable as ``asgi-ws-gateway run`` starts: one WARNING naming the store (no password) and why.

A wrong URL or password used to start a gateway that served without a word until the first handshake
that needed the store. A real ``run`` against a closed port, against a private ``redis-server`` with
``requirepass`` given the wrong password (never the shared server), and against the shared Redis
(nothing said, a DEBUG line once it answered).

The management API's own store (``run --management ... --redis URL``) is checked at start-up already, and
strictly: without its stored changes the gateway would serve APIs deleted through the API, so it does not
start (exit 7). Its one ERROR now names that Redis (credentials hidden) and says why as the data plane's
WARNING does; before, it quoted redis-py alone ("invalid username-password pair ..."), naming no store.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path

from redis.exceptions import AuthenticationError, ConnectionError, ResponseError, TimeoutError

from asgi_ws_gateway.state.startup_check import why
from support.configs import build_config, write_config
from support.processes import EXE, GatewayProcess, cli_env, ready_server
from support.redis import RedisServer, unique_prefix
from support.servers import free_port

PASSWORD = "sEcr3t-pw-h12"
CHECKED = "cannot be reached at start-up"


def _wait_for(log: Path, text: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert time.monotonic() < deadline, f"no {text!r} in {timeout} s:\n{log.read_text()}"
        time.sleep(0.05)


async def _run(tmp_path: Path, url: str, wait_for: str, log_level: str = "info") -> str:
    """The whole output of a one-worker ``run`` whose store is ``url``, stopped once ``wait_for`` was logged."""
    store = {"type": "redis", "url": url, "prefix": unique_prefix(), "timeout": 0.5}
    config = str(write_config(tmp_path, build_config(store=store)))
    log = tmp_path / "gateway.log"
    async with GatewayProcess([config], cwd=tmp_path, workers=1, log=log, log_level=log_level) as gateway:
        await asyncio.to_thread(_wait_for, log, wait_for)
    assert gateway.process is not None and gateway.process.returncode == 0
    return log.read_text()


def _warnings(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(("WARNING", "ERROR"))]


def _clean_shutdown(output: str) -> None:
    assert "Traceback" not in output, output
    assert "Task was destroyed" not in output, output
    assert "Unclosed" not in output, output


async def test_a_closed_port_is_one_warning_without_the_password(tmp_path: Path) -> None:
    """A store URL on a port nothing listens on: one WARNING, "connection refused", the password hidden."""
    url = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"
    output = await _run(tmp_path, url, CHECKED)
    warnings = _warnings(output)
    assert len(warnings) == 1, output
    assert "redis://:REDACTED@127.0.0.1:" in warnings[0], warnings
    assert "connection refused" in warnings[0], warnings
    assert "on_store_error" in warnings[0], warnings
    assert PASSWORD not in output
    _clean_shutdown(output)


async def test_a_wrong_password_is_one_warning_saying_authentication_failed(tmp_path: Path) -> None:
    """A private ``redis-server --requirepass``, the URL's password another: one WARNING, "authentication"."""
    with RedisServer("--requirepass", "the-right-one") as redis:
        output = await _run(tmp_path, f"redis://:{PASSWORD}@127.0.0.1:{redis.port}/0", CHECKED)
    warnings = _warnings(output)
    assert len(warnings) == 1, output
    assert f"redis://:REDACTED@127.0.0.1:{redis.port}/0" in warnings[0], warnings
    assert "authentication failed" in warnings[0], warnings
    assert PASSWORD not in output
    _clean_shutdown(output)


async def test_a_reachable_redis_is_no_warning(tmp_path: Path) -> None:
    """The shared Redis answers: no WARNING, a DEBUG line once the check has its answer."""
    output = await _run(tmp_path, "redis://127.0.0.1:6379/0", "Redis store redis://127.0.0.1:6379/0 answers", "debug")
    assert _warnings(output) == [], output
    assert CHECKED not in output
    _clean_shutdown(output)


def _management_start(tmp_path: Path, url: str) -> tuple[int, str]:
    """``run --management /_gateway`` with ``url`` as its store (``$ASGI_WS_GATEWAY_REDIS``, as the docs advise
    for a URL with a password): its exit code and output, once it gave up starting."""
    config = tmp_path / "gateway.yaml"
    config.write_text("apis:\n  - {name: echo, path: /ws/echo, upstreams: ['ws://127.0.0.1:9/']}\n")
    argv = [str(EXE), "run", str(config), "--port", str(free_port()), "--management", "/_gateway"]
    env = cli_env(ASGI_WS_GATEWAY_REDIS=url)  # this checkout's package, the admin token
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    return done.returncode, done.stdout + done.stderr


def test_the_management_store_on_a_closed_port_stops_start_up_naming_it(tmp_path: Path) -> None:
    """Exit 7, one ERROR naming the management store without its password, "connection refused"."""
    port = free_port()
    code, output = _management_start(tmp_path, f"redis://:{PASSWORD}@127.0.0.1:{port}/0")
    assert code == 7, output
    failed = [line for line in output.splitlines() if "cannot read the stored changes" in line]
    assert len(failed) == 1, output
    assert f"from redis://:REDACTED@127.0.0.1:{port}/0: connection refused (ConnectionError:" in failed[0], failed
    assert failed[0].startswith("ERROR") and failed[0].endswith("; not starting"), failed
    assert PASSWORD not in output
    assert "Traceback" not in output, output


def test_the_management_store_refusing_the_password_stops_start_up_saying_so(tmp_path: Path) -> None:
    """A private ``redis-server --requirepass``, the URL's password another: exit 7, "authentication failed"."""
    with RedisServer("--requirepass", "the-right-one") as redis:
        code, output = _management_start(tmp_path, f"redis://:{PASSWORD}@127.0.0.1:{redis.port}/0")
    assert code == 7, output
    failed = [line for line in output.splitlines() if "cannot read the stored changes" in line]
    assert len(failed) == 1, output
    assert f"from redis://:REDACTED@127.0.0.1:{redis.port}/0: authentication failed" in failed[0], failed
    assert PASSWORD not in output
    assert "Traceback" not in output, output


MIDDLEWARE_APP = """
from starlette.applications import Starlette

from asgi_ws_gateway import WebSocketGateway

app = WebSocketGateway(Starlette(), config="gateway.yaml")
"""


def test_the_middleware_under_stock_uvicorn_warns_once(tmp_path: Path) -> None:
    """``WebSocketGateway`` served by ``python -m uvicorn``: the same one line, on its lifespan start-up."""
    store = {"type": "redis", "url": f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0", "prefix": unique_prefix()}
    write_config(tmp_path, build_config(store=store))
    (tmp_path / "middleware_app.py").write_text(MIDDLEWARE_APP)
    command = ["-m", "uvicorn", "middleware_app:app", "--log-level", "info", "--port"]
    with ready_server(lambda port: [*command, str(port)], cwd=tmp_path) as gateway:
        gateway.wait_for_line(CHECKED)
        gateway.stop(signal.SIGTERM)
        output = gateway.output()
    assert output.count(CHECKED) == 1, output
    assert "redis://:REDACTED@127.0.0.1:" in output, output
    assert PASSWORD not in output
    _clean_shutdown(output)


def test_the_reasons_an_operator_acts_on() -> None:
    """redis-py's errors as the warning names them; a password in their text is hidden."""
    assert why(TimeoutError("Timeout connecting to server")).startswith("no answer within the store's timeout")
    assert why(AuthenticationError("invalid username-password pair")).startswith("authentication failed")
    assert why(ResponseError("WRONGPASS invalid username-password pair")).startswith("authentication failed")
    assert why(ResponseError("DB index is out of range")).startswith("the server refuses the URL's database")
    refused = why(ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused."))
    assert refused.startswith("connection refused"), refused
    assert PASSWORD not in why(ConnectionError(f"cannot reach redis://:{PASSWORD}@h:1/0"))
