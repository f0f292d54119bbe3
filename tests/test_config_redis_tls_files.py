"""The files a rediss:// URL names (``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``, ``ssl_ca_path``) are
loaded when the configuration is checked, in ``store.url``, ``run --redis`` and ``$ASGI_WS_GATEWAY_REDIS``.

redis-py opens them at its first connection: a missing CA file passed ``check``, ``run`` served, and every
store call failed, each limit judged unchecked (fail-open) with a warning per handshake.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pytest

from asgi_ws_gateway.config.parsing import parse_config
from asgi_ws_gateway.errors import ConfigError
from support.configs import api_entry, write_config
from support.mtls import MutualCA, make_mutual_ca

PASSWORD = "redis-key-password-never-quoted-42"


def _url(**options: str | Path) -> str:
    query = "&".join(f"{name}={quote(str(value))}" for name, value in options.items())
    return f"rediss://127.0.0.1:6379/0?{query}"


def _problems(url: str) -> list[str]:
    config = {"store": {"type": "redis", "url": url}, "apis": [{"name": "a", "path": "/a", "upstreams": ["ws://h:1/"]}]}
    try:
        parse_config(config)
    except ConfigError as exc:
        return exc.problems
    return []


def _usable(pki: MutualCA, directory: Path) -> str:
    client = pki.client("redis")
    return _url(ssl_ca_certs=pki.ca_file, ssl_certfile=client.cert, ssl_keyfile=client.key, ssl_ca_path=directory)


def _encrypted(pki: MutualCA, _: Path) -> str:
    client = pki.client("redis-e", password=PASSWORD)
    return _url(ssl_certfile=client.cert, ssl_keyfile=client.key, ssl_password=PASSWORD)


@pytest.mark.parametrize("make", [_usable, _encrypted], ids=["files", "encrypted-key"])
def test_usable_files_are_accepted(tmp_path: Path, make: Callable[[MutualCA, Path], str]) -> None:
    assert _problems(make(make_mutual_ca(tmp_path), tmp_path)) == []


def _fifo(directory: Path) -> Path:
    os.mkfifo(directory / "ca.fifo")
    return directory / "ca.fifo"


def _encrypted_with(pki: MutualCA, password: str | None) -> str:
    client = pki.client("encrypted", password=PASSWORD)
    given = {} if password is None else {"ssl_password": password}
    return _url(ssl_certfile=client.cert, ssl_keyfile=client.key, **given)


CASES: dict[str, tuple[Callable[[MutualCA, Path], str], str]] = {
    "absent CA": (lambda _, d: _url(ssl_ca_certs=d / "absent.pem"), "ssl_ca_certs: cannot be read (No such file"),
    "FIFO CA": (lambda _, d: _url(ssl_ca_certs=_fifo(d)), "ssl_ca_certs: cannot be read (a FIFO, not a regular file)"),
    "key as CA": (lambda p, _: _url(ssl_ca_certs=p.client("k").key), "ssl_ca_certs: holds no PEM certificate"),
    "CA path a file": (lambda p, _: _url(ssl_ca_path=p.ca_file), "ssl_ca_path: not a directory"),
    "key alone": (lambda p, _: _url(ssl_keyfile=p.client("k").key), "ssl_keyfile needs ssl_certfile"),
    "absent cert": (lambda _, d: _url(ssl_certfile=d / "absent.pem"), "ssl_certfile: cannot be read (No such file"),
    "mismatched key": (
        lambda p, _: _url(ssl_certfile=p.client("a").cert, ssl_keyfile=p.client("b").key),
        "ssl_certfile/ssl_keyfile: no usable certificate and private key",
    ),
    "no key": (lambda p, _: _url(ssl_certfile=p.ca_file), "ssl_certfile/ssl_keyfile: no usable certificate"),
    "encrypted, no password": (
        lambda p, _: _encrypted_with(p, None),
        "ssl_keyfile: the private key is encrypted and ssl_password is not given",
    ),
    "wrong password": (
        lambda p, _: _encrypted_with(p, "not-" + PASSWORD),
        "ssl_certfile/ssl_keyfile: no usable certificate and private key",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_unusable_file_is_a_problem_of_store_url(tmp_path: Path, case: str) -> None:
    make, problem = CASES[case]
    problems = _problems(make(make_mutual_ca(tmp_path), tmp_path))
    assert len(problems) == 1 and problems[0].startswith("store.url: " + problem), problems
    assert PASSWORD not in problems[0] and "BEGIN" not in problems[0] and "(got" not in problems[0]


@pytest.mark.parametrize("given", ["flag", "environment"])
def test_run_refuses_a_management_redis_url_whose_files_do_not_load(tmp_path: Path, given: str) -> None:
    config = write_config(tmp_path, {"apis": [api_entry(name="m", path="/m")]})
    url = _url(ssl_ca_certs=tmp_path / "absent.pem")
    env = {**os.environ, "ASGI_WS_GATEWAY_ADMIN_TOKEN": "t" * 32}
    command = [sys.executable, "-m", "asgi_ws_gateway", "run", str(config), "--port", "0", "--management-port", "65001"]
    if given == "flag":
        command += ["--redis", url]
    else:
        env["ASGI_WS_GATEWAY_REDIS"] = url
    # refused before it binds: a run that served would wait for ever, and fail by the timeout
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL)
    assert done.returncode == 2, done.stderr
    assert "ssl_ca_certs: cannot be read (No such file or directory)" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
