"""``check`` and ``ConfigError`` list every problem: cross-field checks run on whatever validated."""

from __future__ import annotations

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
        "apis[1].connect_timeout: Input should be greater than 0 (got -1)",
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
