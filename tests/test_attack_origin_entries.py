"""``check-origin`` entries that loaded silently and admitted every site, or matched nothing.

``https://*.com``, ``https://*.co.uk`` and ``https://*.`` admitted every site under them (and counted
as a check-origin: the cookie-token warning was silenced); ``https://bücher.example`` never matched,
since browsers send ``https://xn--bcher-kva.example``; user info, a query or a fragment in an entry
were ignored or made it match nothing. Now each is a configuration problem by field path, and a
Unicode host is matched in the form browsers send.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.processes import EXE, ServerProcess, cli_env, ready_server
from support.rawhttp import handshake, status_of
from support.servers import free_port
from support.upstream import UpstreamServer

FIELD = "apis[0].policies[0].check-origin.allowed: "


def _config(upstream: str, allowed: list[str]) -> dict[str, Any]:
    api = {
        "name": "chat",
        "path": "/ws/chat",
        "upstreams": [upstream],
        "policies": [{"check-origin": {"allowed": allowed}}],
    }
    return {"apis": [api]}


def _write(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _check(tmp_path: Path, allowed: list[str]) -> tuple[int, str]:
    path = _write(tmp_path, _config("ws://127.0.0.1:9/", allowed))
    done = subprocess.run([str(EXE), "check", str(path)], capture_output=True, text=True, timeout=60, env=cli_env())
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("https://*.com", "*.com admits every site under the top-level domain .com"),
        ("http://*.dev:*", "*.dev admits every site under the top-level domain .dev"),
        ("https://*.", "a wildcard needs the domain it covers"),
        ("https://*.co.uk", "co.uk is a public suffix"),
        ("https://*.com.au", "com.au is a public suffix"),
        ("https://*.github.io", "github.io is a public suffix"),
        ("https://u:p@app.example.com", "an origin has no user name or password"),
        ("https://app.example.com?x#y", "an origin has no path, query or fragment"),
        ("https://app.example.com#y", "an origin has no path, query or fragment"),
        ("https://app.example.com/chat", "an origin has no path, query or fragment"),
        ("https://app.example.com:99999", "the port must be a number from 1 to 65535"),
        ("https://app.example.com:https", "the port must be a number from 1 to 65535"),
        ("https://app..example.com", "is not a host name"),
        ("https://straße.example", "write it as browsers send it, xn--"),
    ],
)
def test_check_refuses_an_entry_that_admits_every_site_or_matches_nothing(
    tmp_path: Path, entry: str, problem: str
) -> None:
    """Exit 2, the field path, the entry and what is wrong with it."""
    code, output = _check(tmp_path, ["https://app.example.com", entry])
    assert code == 2, output
    assert f"{FIELD}'{entry}'" in output and problem in output, output


@pytest.mark.parametrize(
    "entry",
    [
        "https://*.example.com",
        "https://*.example.co.uk",
        "https://me.github.io",
        "http://*.localhost:*",
        "https://bücher.example",
        "https://app.example.com/",
        "http://[::1]:8080",
    ],
)
def test_check_accepts_an_entry_naming_one_site(tmp_path: Path, entry: str) -> None:
    code, output = _check(tmp_path, [entry])
    assert code == 0, output


@pytest.fixture
def upstream() -> Iterator[UpstreamServer]:
    with UpstreamServer() as server:
        yield server


def _run(tmp_path: Path, config: dict[str, Any]) -> ServerProcess:
    path = _write(tmp_path, config)
    return ready_server(lambda port: ["-m", "asgi_ws_gateway", "run", str(path), "--port", str(port)])


async def _status(port: int, origin: str) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(handshake("/ws/chat", f"Origin: {origin}\r\nCookie: session=s3cr3t\r\n".encode()))
        return status_of(await reader.readuntil(b"\r\n\r\n"))
    finally:
        writer.close()


async def test_run_matches_a_unicode_host_as_browsers_send_it(tmp_path: Path, upstream: UpstreamServer) -> None:
    """``https://bücher.example`` admits the ``Origin`` browsers send for it, and nothing else."""
    with _run(tmp_path, _config(upstream.url("/echo"), ["https://bücher.example"])) as server:
        assert await _status(server.port, "https://xn--bcher-kva.example") == 101
        assert await _status(server.port, "https://xn--bcher-kva.example.evil.com") == 403
        assert await _status(server.port, "https://evil.example") == 403


def test_run_refuses_to_start_with_an_entry_over_a_top_level_domain(tmp_path: Path) -> None:
    """``run`` with ``https://*.com`` exits 2 naming the field; it admitted ``https://evil.com`` before."""
    path = _write(tmp_path, _config("ws://127.0.0.1:9/", ["https://*.com"]))
    done = subprocess.run(
        [str(EXE), "run", str(path), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(),
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"{FIELD}'https://*.com'" in done.stdout + done.stderr
