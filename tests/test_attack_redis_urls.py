"""A malformed Redis URL is refused at start-up, with its field path, never quoting the password.

``redis://``, ``rediss://`` and ``unix://`` URLs went to redis-py unchecked: ``check`` called
``store: {url: "redis://user:pw@h:notaport/0"}`` valid, and ``run`` printed "Uvicorn running on ..."
before an 80-line traceback (exit 1); ``/abc`` as the database started silently on database 0. And
``run --redis URL`` without ``--management`` was ignored without a word: the limits an operator
meant to share were counted per process.

Each URL is answered by ``cli.main`` (the console script's function) called in this process; the
cases of ``IN_A_PROCESS`` run the real command line too, for its wiring.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from asgi_ws_gateway import cli
from asgi_ws_gateway.server import serving
from support.processes import cli_env
from support.servers import free_port

SECRET = "s3cretpw-f7"

MALFORMED = [
    # (url, what the message says after the field path)
    (f"redis://user:{SECRET}@h:notaport/0", "expected host:port, not 'h:notaport'"),
    (f"redis://user:{SECRET}@h:99999/0", "expected host:port, not 'h:99999'"),
    (f"redis://user:{SECRET}@h:0/0", "expected host:port, not 'h:0'"),
    (f"redis://:{SECRET}@:6379/0", "expected host:port, not ':6379'"),
    (f"redis://:{SECRET}@[::1/0", "expected host:port, with an IPv6 address in brackets"),
    (f"redis://user:{SECRET}@h:6379/abc", "the database must be a number, not 'abc'"),
    (f"redis://user:{SECRET}@h:6379/1/2", "the database must be a number, not '1/2'"),
    (f"redis://user:{SECRET}@h:6379/0?db=-1", "the database must be a number, not '-1'"),
    (f"redis://user:{SECRET}@h:6379/0?no_such_option=1", "unknown query option 'no_such_option'"),
    (f"redis://user:{SECRET}@h:6379/0?socket_timeout=soon", "invalid value for the query option 'socket_timeout'"),
    (f"redis://user:{SECRET}@h:6379/0?ssl_cert_reqs=none", "a redis:// URL takes no query option 'ssl_cert_reqs'"),
    (f"redis://user:{SECRET[:4]}/{SECRET[4:]}@h:6379/0", "the user info holds a '/'"),
    (f"rediss://user:{SECRET}@h:notaport/0", "expected host:port, not 'h:notaport'"),
    (f"rediss://user:{SECRET}@h:6380/x", "the database must be a number, not 'x'"),
    (f"rediss://user:{SECRET}@h:6380/0?ssl_cert_reqs=sometimes", "redis-py refused the query options 'ssl_cert_reqs'"),
    (f"unix://:{SECRET}@redis.sock", "a unix:// URL names the socket's absolute path"),
    (
        f"unix://:{SECRET}@/run/redis.sock?socket_keepalive=true",
        "a unix:// URL takes no query option 'socket_keepalive'",
    ),
    (f"redis+cluster://user:{SECRET}@h:1,h:notaport", "expected host:port, not 'h:notaport'"),
    (f"redis+cluster://user:{SECRET}@[]:7000", "expected host:port, not '[]:7000'"),
    (f"redis+sentinel://user:{SECRET}@h:26379/gw/x", "the database must be a number, not 'x'"),
    # Numbers redis-py took as they were (all valid to check before): NaN failed every handshake of a
    # limited API with a 500; the others failed every Redis call, or those past one connection, and
    # each limit let the handshake through unchecked (fail-open).
    *(
        (f"redis://user:{SECRET}@h:6379/0?{option}={value}", f"the query option '{option}' must be a number from {r}")
        for option, value, r in [
            ("socket_timeout", "nan", "0.01 to 300"),
            ("socket_timeout", "0", "0.01 to 300"),
            ("socket_timeout", "-1", "0.01 to 300"),
            ("socket_timeout", "inf", "0.01 to 300"),
            ("socket_connect_timeout", "nan", "0.01 to 300"),
            ("health_check_interval", "-5", "0 to 86,400"),
            ("max_connections", "1", "100 to 1,000,000"),
            # read by redis-py's hiredis parser (redis[hiredis]): 0 failed every call, -1 every call after
            # socket_timeout (limits unchecked, measured with a rate-limited API); 1 read a reply a byte a time
            ("socket_read_size", "0", "1,024 to 16,777,216"),
            ("socket_read_size", "-1", "1,024 to 16,777,216"),
            ("socket_read_size", "1", "1,024 to 16,777,216"),
            ("socket_read_size", "1000000000000", "1,024 to 16,777,216"),
        ]
    ),
    # A database no server has (its databases setting is at most INT_MAX, the indexes below it): valid
    # to check before, then every Redis call failed at run time, each limit unchecked.
    (f"redis://user:{SECRET}@h:6379/2147483647", "the database must be a number from 0 to 2,147,483,646"),
    (f"redis://user:{SECRET}@h:6379/0?db=99999999999", "the database must be a number from 0 to 2,147,483,646"),
    (f"unix://:{SECRET}@/run/redis.sock?db=4294967296", "the database must be a number from 0 to 2,147,483,646"),
    (f"redis+sentinel://user:{SECRET}@h:26379/gw/2147483647", "the database must be a number from 0 to 2,147,483,646"),
]

VALID = [
    f"redis://user:{SECRET}@127.0.0.1:6379/0",
    "redis://localhost",
    "redis://[::1]:6379/3?protocol=3&client_name=gateway&socket_timeout=0.5",
    "rediss://h:6380/1?ssl_cert_reqs=none",
    "unix:///run/redis.sock?db=2",
    "unix:///run/redis.sock?db=2&password=pw",  # redis-py's documented form (a re-attack: refused at first)
    "redis://h:6379/0?username=u&password=pw",
    "redis+cluster://h1:7000,[::1]:7001",
    "redis+sentinel://s1:26379,s2:26379/gateway/2",
    "redis://h:6379/0?socket_timeout=300&socket_connect_timeout=0.01&health_check_interval=0&max_connections=100",
    "redis://h:6379/0?socket_read_size=1024",
    "redis://h:6379/0?socket_read_size=16777216",
]


IN_A_PROCESS = {MALFORMED[0][0], MALFORMED[10][0], VALID[2]}
"""The cases also run as a process (one more with a query: redis-py read in a fresh process)."""
Gateway = Callable[..., subprocess.CompletedProcess[str]]


def _cases(cases: list[Any]) -> list[Any]:
    """Every case answered in this process (``as_process`` False), those of ``IN_A_PROCESS`` by a process too."""
    rows = [case if isinstance(case, tuple) else (case,) for case in cases]
    return [pytest.param(*row, False, id=str(i)) for i, row in enumerate(rows)] + [
        pytest.param(*row, True, id=f"{i}-process") for i, row in enumerate(rows) if row[0] in IN_A_PROCESS
    ]


def _gateway(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "asgi_ws_gateway", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=cli_env(**env), timeout=60)


def _never_serves(*args: Any, **kwargs: Any) -> int:
    raise AssertionError("run would have started serving")


@pytest.fixture
def in_process(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> Gateway:
    """``_gateway`` answered by ``cli.main`` in this process: its exit code (``SystemExit``'s for a usage
    error) and what it printed (and logged). ``run`` never serves here: ``serve`` fails the test."""
    monkeypatch.setattr(sys, "path", list(sys.path))  # main puts the working directory first, as uvicorn does
    monkeypatch.setattr(serving, "serve", _never_serves)
    for name in ("ASGI_WS_GATEWAY_REDIS", "ASGI_WS_GATEWAY_URL"):  # as cli_env: a clean environment
        monkeypatch.delenv(name, raising=False)

    def gateway(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        capsys.readouterr()
        try:
            code = cli.main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(list(args), code, out, err + caplog.text)

    return gateway


def _config(tmp_path: Path, url: str) -> Path:
    config = tmp_path / "gateway.yaml"
    config.write_text(f'apis: []\nstore: {{type: redis, url: "{url}"}}\n')
    return config


@pytest.mark.parametrize(("url", "message", "as_process"), _cases(MALFORMED))
def test_check_refuses_a_malformed_store_url_with_its_field_path(
    tmp_path: Path, in_process: Gateway, url: str, message: str, as_process: bool
) -> None:
    """``check``: exit 2, ``store.url: <reason>``, the password nowhere."""
    done = (_gateway if as_process else in_process)("check", str(_config(tmp_path, url)), cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"store.url: {message}" in done.stderr
    assert SECRET not in done.stdout + done.stderr


@pytest.mark.parametrize(("url", "message", "as_process"), _cases(MALFORMED))
def test_run_refuses_a_malformed_store_url_before_it_listens(
    tmp_path: Path, in_process: Gateway, url: str, message: str, as_process: bool
) -> None:
    """``run``: exit 2 with the field path, before uvicorn starts; the password nowhere."""
    gateway = _gateway if as_process else in_process
    done = gateway("run", str(_config(tmp_path, url)), "--port", str(free_port()), cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"store.url: {message}" in done.stderr
    assert "Uvicorn running" not in done.stdout + done.stderr
    assert SECRET not in done.stdout + done.stderr


@pytest.mark.parametrize(("url", "message", "as_process"), _cases(MALFORMED))
def test_run_refuses_a_malformed_redis_option_before_it_listens(
    tmp_path: Path, in_process: Gateway, url: str, message: str, as_process: bool
) -> None:
    """``run --management ... --redis URL``: a usage error naming ``--redis``; the password nowhere."""
    config = tmp_path / "gateway.yaml"
    config.write_text("apis: []\n")
    args = ("run", str(config), "--management", "/_gateway", "--redis", url, "--port", str(free_port()))
    done = (_gateway if as_process else in_process)(*args, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"argument --redis: {message}" in done.stderr
    assert "Uvicorn running" not in done.stdout + done.stderr
    assert SECRET not in done.stdout + done.stderr


@pytest.mark.parametrize(("url", "as_process"), _cases(VALID))
def test_check_accepts_a_well_formed_store_url(tmp_path: Path, in_process: Gateway, url: str, as_process: bool) -> None:
    """Every accepted form stays valid (nothing connects: ``check`` builds a memory store)."""
    done = (_gateway if as_process else in_process)("check", str(_config(tmp_path, url)), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stdout + done.stderr


def test_run_refuses_redis_without_the_management_api(tmp_path: Path) -> None:
    """``--redis`` without ``--management``: exit 2 pointing at ``store:``, not ignored."""
    config = tmp_path / "gateway.yaml"
    config.write_text("apis: []\n")
    url = f"redis://:{SECRET}@127.0.0.1:6379/0"
    done = _gateway("run", str(config), "--port", str(free_port()), "--redis", url, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "error: --redis (or $ASGI_WS_GATEWAY_REDIS) is the management API's store and bus" in done.stderr
    assert "needs --management or --management-port" in done.stderr
    assert "store: {type: redis, url: ...}" in done.stderr
    assert "Uvicorn running" not in done.stdout + done.stderr
    assert SECRET not in done.stdout + done.stderr


def test_run_warns_when_only_the_redis_variable_is_set_without_the_management_api(tmp_path: Path) -> None:
    """``$ASGI_WS_GATEWAY_REDIS`` may be exported for the management commands, shell-wide: a warning, and the
    gateway serves (a re-attack: an error here stopped every gateway started from such a shell)."""
    config = tmp_path / "gateway.yaml"
    config.write_text("apis: []\n")
    command = [sys.executable, "-m", "asgi_ws_gateway", "run", str(config), "--port", str(free_port())]
    env = cli_env(ASGI_WS_GATEWAY_REDIS=f"redis://:{SECRET}@127.0.0.1:6379/0")
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env) as gateway:
        try:
            lines = []
            assert gateway.stderr is not None
            for line in gateway.stderr:
                lines.append(line)
                if "Uvicorn running" in line:
                    break
        finally:
            gateway.terminate()
            gateway.wait(30)
    text = "".join(lines)
    assert "warning: --redis (or $ASGI_WS_GATEWAY_REDIS) is the management API's store and bus" in text
    assert "Uvicorn running" in text and SECRET not in text


def test_the_redis_flag_is_an_error_without_the_management_api_even_when_the_variable_says_the_same(
    tmp_path: Path,
) -> None:
    """A re-attack: the flag given with the same URL as the variable counted as "not given" (a warning)."""
    config = tmp_path / "gateway.yaml"
    config.write_text("apis: []\n")
    url = f"redis://:{SECRET}@127.0.0.1:6379/0"
    args = ("run", str(config), "--port", str(free_port()), "--redis", url)
    done = _gateway(*args, cwd=tmp_path, ASGI_WS_GATEWAY_REDIS=url)
    assert done.returncode == 2 and "error: --redis" in done.stderr, done.stderr
