"""A ``validate-jwt`` reading its token from a cookie, on an API where no ``check-origin`` always runs.

A browser sends the cookie with a handshake whatever page opens it (cross-site WebSocket
hijacking): docs/policies.md says such a token must be combined with ``check-origin``, and an API
that was not passed ``check`` silently and admitted ``Origin: https://evil.example`` with the victim's
cookie. It is a start-up warning now, in ``check`` and under ``run``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from asgi_ws_gateway.policies.build import load_policies
from support.processes import EXE

JWT = {"validate-jwt": {"algorithms": ["HS256"], "secret": "s" * 32, "token": [{"cookie": "access_token"}]}}
ORIGIN = {"check-origin": {"allowed": ["https://app.example"]}}


def _warnings(config: dict[str, Any]) -> list[str]:
    return load_policies(config).warnings


def _api(*policies: Any, **more: Any) -> dict[str, Any]:
    return {"name": "chat", "path": "/ws/chat", "upstreams": ["ws://127.0.0.1:9/"], "policies": list(policies), **more}


@pytest.mark.parametrize(
    "config",
    [
        {"apis": [_api(JWT)]},
        {"policies": [JWT], "apis": [_api()]},  # global
        {"apis": [_api({"validate-jwt": {**JWT["validate-jwt"], "token": [{"header": "Cookie", "scheme": ""}]}})]},
        {"apis": [_api({"choose": {"when": [{"if": {"ref": "query.v", "equals": "2"}, "policies": [JWT]}]}})]},
        # a check-origin that only sometimes runs does not count
        {"apis": [_api(JWT, {"choose": {"when": [{"if": {"ref": "query.v", "equals": "2"}, "policies": [ORIGIN]}]}})]},
        {
            "policies": [{"check-origin": {**ORIGIN["check-origin"], "name": "origins"}}],
            "apis": [_api(JWT, skip_policies=["origins"])],
        },
    ],
    ids=["api", "global", "cookie-header", "in-a-branch", "origin-in-a-branch", "origin-skipped"],
)
def test_a_cookie_token_without_an_origin_check_is_warned_about(config: dict[str, Any]) -> None:
    warnings = [w for w in _warnings(config) if "cross-site WebSocket hijacking" in w]
    assert len(warnings) == 1 and warnings[0].startswith("apis[0]: validate-jwt"), warnings


@pytest.mark.parametrize(
    "config",
    [
        {"apis": [_api(JWT, ORIGIN)]},
        {"policies": [ORIGIN], "apis": [_api(JWT)]},
        {"products": [{"name": "p", "apis": ["chat"], "policies": [ORIGIN]}], "apis": [_api(JWT)]},
        {"apis": [_api({"validate-jwt": {**JWT["validate-jwt"], "token": [{"header": "Authorization"}]}})]},
    ],
    ids=["api", "global", "product", "header-token"],
)
def test_with_an_origin_check_or_without_a_cookie_nothing_is_said(config: dict[str, Any]) -> None:
    assert not [w for w in _warnings(config) if "cross-site" in w], _warnings(config)


def test_check_prints_it(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump({"apis": [_api(JWT)]}))
    done = subprocess.run([EXE, "check", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "cross-site WebSocket hijacking" in done.stdout + done.stderr
