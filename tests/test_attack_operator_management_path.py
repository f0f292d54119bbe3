"""A management API path no client can reach is refused at start-up, not served as nothing.

The mount matches the decoded path, then the path as sent, byte for byte: ``run --management
'/_gateway?x=1'`` (and ``/gw#x``, ``/ gw``, ``/_g%61teway``, ``/\uff47\uff57`` (fullwidth), ``/gw/{x}``, ``/_gw/../x``)
started and served, and its management API answered nothing (404, or 400 for a spelling it took for
a disguise) to any request a client or proxy sends. Now each is a usage error (exit 2) naming the
option and what is wrong, and ``GatewayManagement(path=...)`` a ``ValueError``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.management import GatewayManagement
from asgi_ws_gateway.management.mount_path import management_path_problem
from asgi_ws_gateway.standalone import not_found

TOKEN = "a-long-enough-admin-token-for-tests"
UNREACHABLE = [
    "/_gateway?x=1",
    "/gw#x",
    "/ gw",
    "/_g%61teway",
    "/\uff47\uff57",
    "/gw/{x}",
    "/_gw/../x",
    "/a//b",
    "/a/.",
]
REACHABLE = ["/_gateway", "_gateway", "/_gateway/", "//gw", "/admin/v1", "/_gw:v1@x", "/a-b.c~d!$&'()*+,;=e"]


@pytest.mark.parametrize("path", UNREACHABLE)
def test_gateway_management_refuses_a_path_no_client_reaches(path: str) -> None:
    gateway = WebSocketGateway(not_found, config={"apis": []})
    with pytest.raises(ValueError, match="the management API's path"):
        GatewayManagement(gateway, admin_token=TOKEN, path=path)


@pytest.mark.parametrize("path", REACHABLE)
def test_each_path_it_accepts_answers_as_written(path: str) -> None:
    gateway = WebSocketGateway(not_found, config={"apis": []})
    management = GatewayManagement(gateway, admin_token=TOKEN, path=path)
    with TestClient(management, base_url="http://127.0.0.1") as client:
        answer = client.get(management.path + "/healthz")
        assert answer.status_code == 200 and answer.json() == {"status": "ok"}


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(codec="utf-8", exclude_characters="/"), min_size=1, max_size=6))
def test_a_segment_it_accepts_is_one_a_url_carries_unchanged(segment: str) -> None:
    """Whatever the rule accepts, a URL parser leaves as it is (nothing to encode, nothing to resolve)."""
    from urllib.parse import quote

    if management_path_problem("/gw/" + segment) is None:
        assert quote(segment, safe="!$&'()*+,;=:@~") == segment
        assert segment not in (".", "..")


def _run(path: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "gateway.yaml"
    config.write_text("apis: []\n")
    env = {**os.environ, "ASGI_WS_GATEWAY_ADMIN_TOKEN": TOKEN}
    return subprocess.run(
        [sys.executable, "-m", "asgi_ws_gateway", "run", str(config), "--port", "0", "--management", path],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize("path", ["/_gateway?x=1", "/_gw/../x", "/\uff47\uff57"])
def test_run_exits_2_naming_the_option(path: str, tmp_path: Path) -> None:
    result = _run(path, tmp_path)
    assert result.returncode == 2, result.stderr
    assert "argument --management:" in result.stderr and "Traceback" not in result.stderr
