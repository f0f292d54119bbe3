"""``run`` imports what its configuration uses: a gateway with no management API, no ``validate-jwt`` and no
``validate-message`` starts without Starlette, redis-py and the management API, PyJWT, cryptography, httpx2 and
jsonschema-rs (docs/performance.md, "Start-up").

Every ``run`` process imported all of them, each ``--workers`` worker again: the serving module imported the
management API for ``--management``'s factory, and the policy modules PyJWT (``validate-jwt``) and jsonschema-rs
(``validate-message``) whether or not a policy used them. A one-API file: 1,017 modules, now 758; 1.24 -> 0.89
CPU-s a one-worker start (medians of 7, interleaved).
"""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from pydantic import PydanticSchemaGenerationError

from asgi_ws_gateway.policies import REGISTRY, PolicySettings, register_policy
from support.configs import build_config, write_config
from support.jwts import HS_SECRET
from support.processes import cli_env, ready_server

# What a configuration that uses none of them must not import (a module counts with its submodules).
UNUSED = ("starlette", "redis", "jwt", "cryptography", "httpx2", "jsonschema_rs", "asgi_ws_gateway.management.app",
          "asgi_ws_gateway.management.mount", "asgi_ws_gateway.management.standalone",
          "asgi_ws_gateway.policies.jwks", "asgi_ws_gateway.policies.unique_items")  # fmt: skip


def _served(tmp_path: Path, document: dict[str, Any], *, workers: int = 1) -> set[str]:
    """Every module the ``run`` processes imported (``-X importtime``) by the time each worker served /healthz."""
    config = write_config(tmp_path, document)

    def command(port: int) -> list[str]:
        return ["-m", "asgi_ws_gateway", "run", str(config), "--port", str(port), "--workers", str(workers),
                "--log-level", "info"]  # fmt: skip

    # The variable, not -X importtime: the workers uvicorn spawns inherit it.
    server = ready_server(command, cwd=tmp_path, env={"PYTHONPROFILEIMPORTTIME": "1"})
    with server:
        server.wait_for_line("Application startup complete", times=workers, timeout=60)
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=10) as answer:
            assert answer.status == 200
        assert server.stop() == 0, server.output()
        lines = server.stderr().splitlines()
    modules = {line.rpartition("|")[2].strip() for line in lines if line.startswith("import time:")}
    assert "asgi_ws_gateway.middleware" in modules, server.output()[-2000:]  # -X importtime did report
    return modules


def _unused(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == name or m.startswith(f"{name}.") for name in UNUSED))


@pytest.mark.parametrize("workers", [1, 2])
def test_a_gateway_without_management_jwt_or_schemas_imports_none_of_them(tmp_path: Path, workers: int) -> None:
    """One API, every setting at its default: the supervisor and each worker serve without them."""
    assert _unused(_served(tmp_path, build_config(), workers=workers)) == []


def test_the_policies_a_configuration_uses_are_imported(tmp_path: Path) -> None:
    """``validate-jwt`` and ``validate-message`` bring their libraries, as they are built: the management API
    (not asked for) stays out."""
    jwt = {"validate-jwt": {"algorithms": ["HS256"], "secret": HS_SECRET}}
    schema = {"validate-message": {"schema": {"type": "object"}}}
    modules = _served(tmp_path, build_config(api={"policies": [jwt], "message_policies": {"inbound": [schema]}}))
    assert {"jwt", "cryptography", "httpx2", "jsonschema_rs", "asgi_ws_gateway.policies.jwks"} <= modules
    assert [m for m in _unused(modules) if m.startswith(("starlette", "redis", "asgi_ws_gateway.management"))] == []


# What run --workers N's supervisor serves nothing with: the workers import them.
SERVING = ("asgi_ws_gateway.middleware", "asgi_ws_gateway.relay", "asgi_ws_gateway.passthrough.splice",
           "asgi_ws_gateway.server.http", "asgi_ws_gateway.server.websocket", "asgi_ws_gateway.telemetry.core",
           "asgi_ws_gateway.telemetry.otlp_wire", "opentelemetry.sdk", "websockets.asyncio")  # fmt: skip
_SUPERVISOR = """
import sys
from asgi_ws_gateway.server import serving
from asgi_ws_gateway.cli import main

def serve(app, options, **kwargs):
    print("\\n".join(sorted(sys.modules)))
    return 0

serving.serve = serve
sys.exit(main(sys.argv[1:]))
"""


def test_the_supervisor_of_workers_imports_nothing_they_serve_with(tmp_path: Path) -> None:
    """``run --workers 2`` up to the supervisor's start: the file read and checked, the options, the
    environment's checks, without the relay, the protocols, the gateway and the span machinery (1,014 ->
    533 modules; each SIGHUP's reload starts the workers, not the supervisor)."""
    config = write_config(tmp_path, build_config())
    command = [sys.executable, "-c", _SUPERVISOR, "run", str(config), "--workers", "2", "--port", "0"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=cli_env(), timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    modules = set(done.stdout.split())
    assert {"asgi_ws_gateway.policies.build", "uvicorn"} <= modules  # the file was checked; run's own server
    assert sorted(m for m in modules if any(m == n or m.startswith(f"{n}.") for n in SERVING)) == []


_BUILT = """
import sys
from asgi_ws_gateway.policies import MESSAGE_REGISTRY, REGISTRY
from asgi_ws_gateway.policies.build import load_policies
from asgi_ws_gateway.state.memory import MemoryState

load_policies(sys.argv[1], store=lambda config: MemoryState())
types = {**REGISTRY, **MESSAGE_REGISTRY}
print(" ".join(sorted(name for name, cls in types.items() if cls.Settings.__pydantic_complete__)))
"""


def test_only_the_policy_types_a_configuration_uses_have_their_settings_built(tmp_path: Path) -> None:
    """The ~30 built-in policy types' settings models are built as they first validate: a configuration that
    uses ``rate-limit-by-key`` builds that one alone (each process of ``run``, ``check`` built them all)."""
    limit = {"rate-limit-by-key": {"key": "{client.ip}", "limit": 10, "window": 60}}
    config = write_config(tmp_path, build_config(api={"policies": [limit]}))
    command = [sys.executable, "-c", _BUILT, str(config)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=cli_env(), timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["rate-limit-by-key"]


def test_a_plugins_settings_model_is_still_checked_as_it_registers() -> None:
    """A plugin's mistake in its settings model stops its import, as it did: not the first request using it."""

    class Opaque:  # no pydantic schema, and arbitrary types not allowed
        pass

    with pytest.raises(PydanticSchemaGenerationError):

        class BrokenSettings(PolicySettings):
            value: Opaque

        @register_policy("test-broken-settings")
        class Broken:
            Settings = BrokenSettings

    assert "test-broken-settings" not in REGISTRY
