"""The loading gate as pure logic: what it admits, refuses, records and defers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from asgi_ws_gateway import ConfigError, WebSocketGateway
from asgi_ws_gateway.loading import (
    Gate,
    LoadRefused,
    allowed_modules,
    deferred_imports,
    import_object,
    parse_target,
    read_env,
    read_file,
    recording,
    restricted,
)
from asgi_ws_gateway.management import FileStore, Manager
from asgi_ws_gateway.management.overlay import Overlay
from asgi_ws_gateway.standalone import not_found


@pytest.mark.parametrize("target", ["os", "os:", ":system", "os:sys tem", "../x:y", "a..b:c", "a:b:c", ""])
def test_malformed_targets_are_refused(target: str) -> None:
    with pytest.raises(ValueError, match="must name an object as module:attribute"):
        parse_target(target)


def test_a_gate_admits_exact_targets_and_whole_modules_only() -> None:
    gate = Gate(modules={"pkg.mod:app", "other"})
    with restricted(gate):
        with pytest.raises(LoadRefused):
            import_object("json:dumps")
        with pytest.raises(LoadRefused):
            import_object("pkg.mod:other_app")
        with pytest.raises(LoadRefused):
            import_object("other.sub:app")  # a whole module does not cover its submodules
        with pytest.raises(ValueError, match="cannot import 'other:app'"):
            import_object("other:app")  # admitted, then not found


def test_files_and_env_need_admission(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    allowed, other = tmp_path / "a.pem", tmp_path / "b.pem"
    allowed.write_bytes(b"A")
    other.write_bytes(b"B")
    monkeypatch.setenv("OK_VAR", "1")
    monkeypatch.setenv("SECRET_VAR", "2")
    with restricted(Gate(files={str(allowed)}, env={"OK_VAR"})):
        assert read_file(str(allowed)) == b"A"
        assert read_env("OK_VAR") == "1"
        with pytest.raises(LoadRefused, match="reading file"):
            read_file(str(other))
        with pytest.raises(LoadRefused, match="reading environment variable 'SECRET_VAR'"):
            read_env("SECRET_VAR")
    assert read_file(str(other)) == b"B"  # outside the gate: the operator's configuration


def test_recording_admits_and_remembers() -> None:
    with recording() as gate:
        import_object("json:dumps")
        read_env("HOME")
    assert gate.modules == {"json:dumps"} and gate.env == {"HOME"}


def test_deferred_imports_import_nothing() -> None:
    sys.modules.pop("tabnanny", None)
    with deferred_imports() as pending:
        stand_in = import_object("tabnanny:check")
    assert pending == ["tabnanny:check"] and "tabnanny" not in sys.modules
    assert stand_in is not import_object("tabnanny:check")


def test_allowed_modules_syntax() -> None:
    assert allowed_modules(["asgi:pkg.mod:app", "pkg"]) == {"pkg.mod:app", "pkg"}
    with pytest.raises(ValueError):
        allowed_modules(["pkg/mod"])


async def test_stored_changes_that_load_unallowed_code_fail_start_up(tmp_path: Path) -> None:
    """A state file edited to hold an asgi: API (or written when it was allowed) fails start-up by field path."""
    state = tmp_path / "state.json"
    api = {"name": "evil", "path": "/evil", "upstreams": ["asgi:os:system"]}
    state.write_text(Overlay(revision=1, apis={"evil": api}).to_json())
    gateway = WebSocketGateway(not_found, config={"apis": []})
    manager = Manager(gateway, store=FileStore(state))
    with pytest.raises(ConfigError) as info:
        await manager.start()
    assert info.value.problems[:2] == [
        "the stored changes do not fit the configuration file:",
        "API 'evil' upstreams[0]: importing 'os:system' is not allowed through the management API "
        "(the operator must allow it)",
    ]
    assert info.value.problems[2].startswith("to start: ")
    await manager.stop()
