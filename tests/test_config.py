"""Configuration loading: every problem reported with its field path, and the published schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest

from asgi_ws_gateway import ConfigError, GatewayConfig, json_schema, load_config
from asgi_ws_gateway.config.apis import UpstreamConfig
from asgi_ws_gateway.policies.base import REGISTRY
from asgi_ws_gateway.policies.message_base import MESSAGE_REGISTRY

SCHEMA_FILE = Path(__file__).parent.parent / "schema" / "gateway.schema.json"


def _problems(data: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(data)  # type: ignore[arg-type]
    return info.value.problems


def test_minimal_api_gets_documented_defaults() -> None:
    config = load_config({"apis": [{"name": "chat", "path": "/ws/chat", "upstreams": ["ws://127.0.0.1:9000/"]}]})
    api = config.apis[0]
    assert api.max_message_size == 1024 * 1024
    assert api.connect_timeout == 10.0
    assert api.balancing == "round-robin"
    assert api.title == "chat"
    assert api.upstreams[0].kind == "ws"


def test_bad_upstream_url_is_reported_with_its_field_path() -> None:
    problems = _problems(
        {
            "apis": [
                {"name": "a", "path": "/a", "upstreams": ["ws://x"]},
                {"name": "b", "path": "/b", "upstreams": ["htp://x"]},
            ]
        }
    )
    assert problems == ["apis[1].upstreams[0]: 'htp://x' is not a ws://, wss:// or asgi: URL"]


def test_every_structural_problem_is_listed() -> None:
    problems = _problems(
        {
            "apis": [
                {"name": "a", "path": "/a", "upstreams": [], "connect_timeout": -1},
                {"name": "bad name!", "path": "/b", "upstreams": ["ws://x"], "colour": "red"},
            ]
        }
    )
    assert any(p.startswith("apis[0].upstreams:") for p in problems)
    assert any(p.startswith("apis[0].connect_timeout:") for p in problems)
    assert any(p.startswith("apis[1].name:") for p in problems)
    assert "apis[1].colour: unknown field" in problems


def test_missing_required_fields_are_named() -> None:
    assert _problems({"apis": [{"name": "a"}]}) == ["apis[0].path: Field required", "apis[0].upstreams: Field required"]


def test_duplicate_names_and_overlapping_paths_are_errors() -> None:
    problems = _problems(
        {
            "apis": [
                {"name": "a", "path": "/ws/{room}", "upstreams": ["ws://x"]},
                {"name": "a", "path": "/ws/chat", "upstreams": ["ws://x"]},
                {"name": "c", "path": "/other", "upstreams": ["ws://x"]},
            ]
        }
    )
    assert problems == [
        "apis[1].name: duplicate API name 'a' (also apis[0])",
        "apis[1].path: '/ws/chat' overlaps apis[0].path '/ws/{room}'",
    ]


def test_upstream_placeholders_must_be_path_parameters() -> None:
    problems = _problems({"apis": [{"name": "a", "path": "/ws/{room}", "upstreams": ["ws://x/{room}/{user}"]}]})
    assert problems == ["apis[0].upstreams[0].url: placeholder(s) user not defined by path '/ws/{room}'"]


def test_malformed_path_template_is_reported() -> None:
    problems = _problems({"apis": [{"name": "a", "path": "ws/{room", "upstreams": ["ws://x"]}]})
    assert problems == ["apis[0].path: 'ws/{room' must start with '/'"]


def test_tls_options_only_for_wss() -> None:
    problems = _problems({"apis": [{"name": "a", "path": "/a", "upstreams": [{"url": "ws://x", "verify_tls": False}]}]})
    assert problems == ["apis[0].upstreams[0]: ca_bundle and verify_tls apply to wss:// upstreams only"]


def test_asgi_upstream_is_imported_at_load_time() -> None:
    config = load_config({"apis": [{"name": "a", "path": "/a", "upstreams": ["asgi:support.apps:echo_app"]}]})
    assert callable(config.apis[0].upstreams[0].app)
    problems = _problems({"apis": [{"name": "a", "path": "/a", "upstreams": ["asgi:no_such_module_xyz:app"]}]})
    assert problems[0].startswith("apis[0].upstreams[0]: cannot import 'no_such_module_xyz:app'")


def test_asgi_app_object_in_code() -> None:
    async def app(scope: object, receive: object, send: object) -> None: ...

    upstream = UpstreamConfig(app=app)  # type: ignore[call-arg]
    assert upstream.kind == "asgi" and upstream.app is app


def test_yaml_and_json_files_load_and_errors_name_the_file(tmp_path: Path) -> None:
    good = tmp_path / "gateway.yaml"
    good.write_text("apis:\n  - name: chat\n    path: /ws/chat\n    upstreams: [ws://127.0.0.1:9000/chat]\n")
    assert load_config(good).apis[0].name == "chat"
    as_json = tmp_path / "gateway.json"
    as_json.write_text(json.dumps({"apis": [{"name": "c", "path": "/c", "upstreams": ["wss://h/"]}]}))
    assert load_config(as_json).apis[0].upstreams[0].kind == "wss"
    bad = tmp_path / "bad.yaml"
    bad.write_text("apis:\n  - name: chat\n    path: /ws/chat\n    upstreams: [htp://nope]\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert str(bad) in str(info.value)
    assert "apis[0].upstreams[0]: 'htp://nope' is not a ws://, wss:// or asgi: URL" in str(info.value)


def test_unparsable_yaml_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apis: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_config_object_passes_through_cross_checks() -> None:
    config = GatewayConfig.model_validate(
        {
            "apis": [
                {"name": "a", "path": "/x", "upstreams": ["ws://x"]},
                {"name": "a", "path": "/y", "upstreams": ["ws://x"]},
            ]
        }
    )
    with pytest.raises(ConfigError, match="duplicate API name"):
        load_config(config)


def test_published_schema_is_generated_from_the_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """schema/gateway.schema.json must equal what the models generate (`asgi-ws-gateway schema`)."""
    # Plugins other tests imported (example_app's) register types in this process: the file has the built-ins.
    for registry in (REGISTRY, MESSAGE_REGISTRY):
        for name, kind in list(registry.items()):
            if not kind.__module__.startswith("asgi_ws_gateway."):
                monkeypatch.delitem(registry, name)
    assert json.loads(SCHEMA_FILE.read_text()) == json_schema()
    assert "apis" in json_schema()["properties"]


def test_what_a_file_may_say_the_published_schema_takes_too() -> None:
    """An upstream as its URL, an instant as POSIX seconds: the loader takes them, and the schema an editor
    checks a file with flagged them (a number was no ``date-time`` string, a URL no upstream mapping)."""
    validator = jsonschema_rs.validator_for(json.loads(SCHEMA_FILE.read_text()))
    config: dict[str, Any] = {
        "apis": [{"name": "chat", "path": "/ws/chat", "upstreams": ["ws://chat:9000/", {"url": "ws://chat-2:9000/"}]}],
        "products": [{"name": "gold", "apis": ["chat"]}],
        "subscriptions": [
            {"id": "a", "product": "gold", "key_sha256": "0" * 64, "expires_at": 1798761600},
            {"id": "b", "product": "gold", "key_sha256": "1" * 64, "expires_at": "2027-01-01T00:00:00Z"},
        ],
    }
    load_config(config)
    assert [error.message for error in validator.iter_errors(config)] == []
    for wrong in ({"expires_at": -1}, {"expires_at": 10**13}, {"expires_at": True}):
        config["subscriptions"][0].update(wrong)
        assert not validator.is_valid(config), wrong
    config["subscriptions"][0]["expires_at"] = 0
    config["apis"][0]["upstreams"] = ["w" * 2049]
    assert not validator.is_valid(config)
