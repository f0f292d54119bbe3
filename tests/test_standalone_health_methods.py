"""``/healthz`` and ``/readyz`` on ``asgi-ws-gateway run`` answer GET and HEAD; any other method is 405.

``POST /healthz`` used to answer 200 although the README lists ``GET /healthz`` and "anything else:
404". A real ``run`` process, raw HTTP/1.1 on 127.0.0.1.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.configs import write_config
from support.processes import ServerProcess, ready_server
from support.rawhttp import exchange, header_of, status_of

ANSWERS = {b"/healthz": {"status": "ok"}, b"/readyz": {"status": "ready"}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    api = {"name": "echo", "path": "/ws/echo", "upstreams": ["ws://127.0.0.1:9/echo"]}
    path = write_config(tmp_path_factory.mktemp("health"), {"apis": [api]})
    with ready_server(lambda port: ["-m", "asgi_ws_gateway", "run", str(path), "--port", str(port),
                                    "--log-level", "warning"]) as server:  # fmt: skip
        yield server


def _request(method: bytes, path: bytes) -> bytes:
    return method + b" " + path + b" HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


@pytest.mark.parametrize("path", sorted(ANSWERS))
async def test_get_answers_the_documented_status(server: ServerProcess, path: bytes) -> None:
    """GET: 200 and the JSON document the README shows."""
    response = await exchange(server.port, _request(b"GET", path))
    assert status_of(response) == 200
    assert json.loads(response.split(b"\r\n\r\n", 1)[1]) == ANSWERS[path]


@pytest.mark.parametrize("path", sorted(ANSWERS))
async def test_head_answers_as_get_without_a_body(server: ServerProcess, path: bytes) -> None:
    """HEAD: GET's status and content type, no body."""
    response = await exchange(server.port, _request(b"HEAD", path))
    assert status_of(response) == 200
    assert header_of(response, "Content-Type") == "application/json"
    assert response.split(b"\r\n\r\n", 1)[1] == b""


@pytest.mark.parametrize("path", sorted(ANSWERS))
@pytest.mark.parametrize("method", [b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"PROPFIND"])
async def test_any_other_method_is_405_with_allow(server: ServerProcess, path: bytes, method: bytes) -> None:
    """A method the README does not list: 405 Method Not Allowed, ``Allow: GET, HEAD``, no health answer."""
    response = await exchange(server.port, _request(method, path))
    assert status_of(response) == 405
    assert header_of(response, "Allow") == "GET, HEAD"
    assert b'"status"' not in response


def test_the_readme_lists_what_the_endpoints_answer() -> None:
    """The README's table names GET, HEAD and the 405 for other methods."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert "| `HEAD /healthz`, `HEAD /readyz` |" in readme
    assert "`405 Method Not Allowed`, `Allow: GET, HEAD`" in readme
