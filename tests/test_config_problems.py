"""``check`` and ``ConfigError`` list every problem: cross-field checks run on whatever validated."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from asgi_ws_gateway import ConfigError, load_config
from asgi_ws_gateway.cli import main

README = Path(__file__).resolve().parent.parent / "README.md"

README_CONFIG = """\
apis:
  - name: rooms
    path: /ws/{room}
    upstreams:
      - ws://chat-1.internal:9000/rooms/{room}
  - name: broken
    path: /ws/broken
    upstreams:
      - htp://x
  - name: chat
    path: /ws/chat
    upstreams:
      - ws://chat-1.internal:9000/chat
"""


def _readme_example() -> str:
    """The error the README shows under "Configuration", verbatim."""
    text = README.read_text()
    section = text[text.index("listing **every** problem by field path:") :]
    return re.search(r"```\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


def test_check_prints_the_readme_example_verbatim(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's two-problem example: check prints exactly what the README shows, exit 2."""
    (tmp_path / "gateway.yaml").write_text(README_CONFIG)
    monkeypatch.chdir(tmp_path)
    assert main(["check", "gateway.yaml"]) == 2
    assert capsys.readouterr().err == _readme_example()


def _problems(config: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(config)
    return info.value.problems


def _api(name: str, path: str, *upstreams: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "path": path, "upstreams": list(upstreams or ["ws://h/"]), **fields}


def test_field_error_and_duplicate_name() -> None:
    """A bad field in one API does not hide a duplicate name between two others."""
    assert _problems({"apis": [_api("a", "/a"), _api("b", "/b", connect_timeout=-1), _api("a", "/c")]}) == [
        "apis[1].connect_timeout: Input should be greater than or equal to 0.01 (got -1)",
        "apis[2].name: duplicate API name 'a' (also apis[0])",
    ]


def test_field_error_and_undefined_placeholder() -> None:
    """A bad field in the first API does not hide an undefined placeholder in the second."""
    assert _problems({"apis": [_api("a", "/a", balancing="random"), _api("b", "/b/{x}", "ws://h/{y}")]}) == [
        "apis[0].balancing: Input should be 'round-robin' or 'least-connections' (got 'random')",
        "apis[1].upstreams[0].url: placeholder(s) y not defined by path '/b/{x}'",
    ]


def test_field_error_and_policy_settings() -> None:
    """A bad top-level field does not hide a policy's bad settings or an API's own field error."""
    problems = _problems(
        {
            "drain_grace_period": -5,
            "policies": [{"validate-jwt": {"algorithms": ["none"]}}],
            "apis": [_api("a", "/a", unknown_field=1)],
        }
    )
    assert problems[0] == "apis[0].unknown_field: unknown field"
    assert problems[1] == "drain_grace_period: Input should be greater than or equal to 0 (got -5)"
    assert any(
        p.startswith("policies[0].validate-jwt.algorithms[0]: 'none' is not an allowed algorithm") for p in problems
    )
    assert len(problems) == 3


def test_an_invalid_api_is_not_reported_again_as_unknown() -> None:
    """A product naming an API that is invalid for its own reasons gets no invented 'unknown API' problem."""
    problems = _problems(
        {
            "apis": [_api("a", "/a"), _api("b", "/b", "htp://x"), _api("c", "/a")],
            "products": [{"name": "p", "apis": ["b", "zzz"]}],
        }
    )
    assert problems == [
        "apis[1].upstreams[0]: 'htp://x' is not a ws://, wss:// or asgi: URL",
        "apis[2].path: '/a' overlaps apis[0].path '/a'",
        "products[0].apis[1]: unknown API 'zzz'",
    ]


def test_invalid_product_and_subscription_cross_checks() -> None:
    """A bad product field and a duplicate subscription id are both reported, at their own indexes."""
    digest = "a" * 64
    problems = _problems(
        {
            "apis": [_api("a", "/a")],
            "products": [{"name": "bad name"}, {"name": "p", "apis": ["a"]}],
            "subscriptions": [
                {"id": "s", "product": "p", "key_sha256": digest},
                {"id": "s", "product": "p", "key_sha256": "b" * 64},
            ],
        }
    )
    assert problems[0].startswith("products[0].name: String should match pattern")
    assert problems[1:] == ["subscriptions[1].id: duplicate subscription id 's'"]


def test_the_schema_ships_in_the_package_and_matches_the_repo() -> None:
    """The wheel's asgi_ws_gateway/gateway.schema.json is the repo's schema/ file (which
    tests/test_config.py checks against the models)."""
    import json
    from importlib.resources import files

    shipped = json.loads((files("asgi_ws_gateway") / "gateway.schema.json").read_text(encoding="utf-8"))
    repo = json.loads((README.parent / "schema" / "gateway.schema.json").read_text())
    assert shipped == repo


def test_yaml_errors_name_the_file_line_and_column(tmp_path: Path) -> None:
    """A YAML syntax error names the file with line and column, never <unicode string>."""
    path = tmp_path / "gw.yaml"
    path.write_text("apis:\n  - name: a\n    path: [x\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [
        f"{path}:4:1: not valid YAML: expected ',' or ']', but got '<stream end>' (while parsing a flow sequence)"
    ]
    assert "<unicode string>" not in str(info.value)


def test_yaml_indentation_error_names_the_line(tmp_path: Path) -> None:
    """Another YAML error class (a mapping where none may start) also gets file:line:column."""
    path = tmp_path / "gw.yml"
    path.write_text("apis:\n  - name: a\n   path: /x\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert re.fullmatch(rf"{re.escape(str(path))}:3:\d+: not valid YAML: .+", info.value.problems[0])


def test_json_errors_name_the_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "gw.json"
    path.write_text('{\n  "apis": [,]\n}')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [f"{path}:2:12: not valid JSON: Expecting value"]


@pytest.mark.parametrize("content", ["", "# only a comment\n", "apis: []\n"])
def test_check_warns_about_a_file_without_apis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], content: str
) -> None:
    """An empty file is valid (APIs may come from the management API) but check warns, exit 0."""
    (tmp_path / "gateway.yaml").write_text(content)
    monkeypatch.chdir(tmp_path)
    assert main(["check", "gateway.yaml"]) == 0
    out = capsys.readouterr()
    assert out.out == "gateway.yaml: valid, 0 API(s): -\n"
    assert out.err.startswith("warning: no WebSocket APIs are configured")
    assert main(["check", "gateway.yaml", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["warnings"][0].startswith("no WebSocket APIs")


def test_start_up_warns_about_a_file_without_apis(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Building the gateway from an empty file logs one WARNING."""
    from asgi_ws_gateway import WebSocketGateway
    from asgi_ws_gateway.standalone import not_found

    (tmp_path / "gateway.yaml").write_text("")
    with caplog.at_level("WARNING", logger="asgi_ws_gateway.middleware"):
        WebSocketGateway(not_found, config=tmp_path / "gateway.yaml")
    warnings = [r for r in caplog.records if r.name == "asgi_ws_gateway.middleware" and r.levelname == "WARNING"]
    assert len(warnings) == 1 and "no WebSocket APIs are configured" in warnings[0].getMessage()


def test_trusted_proxies_that_take_in_the_internet_are_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """0.0.0.0/0 (or any IPv4 network wider than a /8, IPv6 than a /16) lets any client there pick the
    address ip-filter and the limits see: valid, but warned at check and at start-up."""
    from asgi_ws_gateway import WebSocketGateway
    from asgi_ws_gateway.config.checks import config_warnings
    from asgi_ws_gateway.standalone import not_found

    config = {"trusted_proxies": ["0.0.0.0/0", "10.0.0.0/8", "128.0.0.0/1", "2001:db8::/32", "::/0", "127.0.0.1"],
              "apis": [_api("a", "/a")]}  # fmt: skip
    warnings = config_warnings(load_config(config))
    assert [w.split(" trusts")[0] for w in warnings] == [
        "trusted_proxies: 0.0.0.0/0", "trusted_proxies: 128.0.0.0/1", "trusted_proxies: ::/0",
    ]  # fmt: skip
    assert warnings[0].endswith("by sending x-forwarded-for; list the proxies' own addresses")
    with caplog.at_level("WARNING", logger="asgi_ws_gateway.middleware"):
        WebSocketGateway(not_found, config=config)
    assert sum("trusted_proxies: 0.0.0.0/0 trusts" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize(
    ("value", "got"), [("AUTO", "'AUTO'"), (None, "None"), ([True], "[True]"), ({"on": 1}, "{'on': 1}")]
)
def test_a_value_every_union_member_refuses_is_one_problem(value: Any, got: str) -> None:
    """``passthrough`` is ``'auto'`` or a boolean: one line for the field, naming what each member wanted."""
    (problem,) = _problems({"apis": [_api("a", "/a", passthrough=value)]})
    assert problem.startswith("apis[0].passthrough: Input should be 'auto'; Input should be a valid boolean")
    assert problem.endswith(f"(got {got})")


def test_unknown_keys_named_like_union_members_are_still_named() -> None:
    """An unknown key called ``bool`` or ``literal['x']`` is reported as that key, not taken for a union member."""
    assert _problems({"apis": [_api("a", "/a", bool=1, **{"literal['x']": 2})]}) == [
        "apis[0].bool: unknown field",
        "apis[0].literal['x']: unknown field",
    ]


@pytest.mark.parametrize(("hops", "warned"), [(4, False), (8, False), (9, True), (64, True)])
def test_many_gateway_hops_are_warned_about(hops: int, warned: bool) -> None:
    """A forwarding loop makes max_gateway_hops + 1 nested handshakes of each client handshake: at 64, one
    looping handshake made 65 (and 66 log lines) before its 508."""
    from asgi_ws_gateway.config.checks import config_warnings

    warnings = config_warnings(load_config({"handshake_limits": {"max_gateway_hops": hops}, "apis": [_api("a", "/a")]}))
    assert [w.split(" lets")[0] for w in warnings] == ([f"handshake_limits.max_gateway_hops: {hops}"] if warned else [])


@pytest.mark.parametrize(("proxies", "warned"), [(["10.0.0.1"], False), ([], True)])
def test_trusting_the_trace_of_trusted_proxies_none_listed_is_warned_about(proxies: list[str], warned: bool) -> None:
    from asgi_ws_gateway.config.checks import config_warnings

    raw = {
        "telemetry": {"trust_client_trace": "trusted_proxies"},
        "trusted_proxies": proxies,
        "apis": [_api("a", "/a")],
    }
    warnings = config_warnings(load_config(raw))
    assert [w.split(":")[0] for w in warnings] == (["telemetry.trust_client_trace"] if warned else [])


@pytest.mark.parametrize(("store", "warned"), [({"max_keys": 1_000_000}, False), ({"max_keys": 10_000_000}, True)])
def test_a_memory_store_of_millions_of_keys_per_limit_is_warned_about(store: dict[str, Any], warned: bool) -> None:
    """A key held about 1 KB (a rate window's, measured): 10,000,000 keys of one limit are 10 GB."""
    from asgi_ws_gateway.config.checks import config_warnings

    warnings = config_warnings(load_config({"store": store, "apis": [_api("a", "/a")]}))
    assert [w.split(" lets")[0] for w in warnings] == (["store.max_keys: 10000000"] if warned else [])
    if warned:
        assert "about 1 KB each (a rate window's with one handshake): 10,000 MB per limit" in warnings[0]


@pytest.mark.parametrize(("timeout", "warned"), [(0.5, False), (5, False), (30, True)])
def test_a_redis_store_waited_on_for_long_is_warned_about(timeout: float, warned: bool) -> None:
    """Each message of a keyed rate-limit-messages waits store.timeout on a Redis that hangs, without a log
    line: at 300 s a 12 s pause held messages 11.8 s (at 0.5 s: a second, unchecked, and logged)."""
    from asgi_ws_gateway.config.checks import config_warnings

    store = {"type": "redis", "url": "redis://127.0.0.1:6379/0", "timeout": timeout}
    warnings = config_warnings(load_config({"store": store, "apis": [_api("a", "/a")]}))
    assert [w.split(" is how")[0] for w in warnings] == ([f"store.timeout: {timeout:g} s"] if warned else [])
