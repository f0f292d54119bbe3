"""The patterns one API's handshake may run are weighed together, and refused past a bound.

Each pattern was bounded (1,000 RE2 instructions), not their number: eight ``choose`` of 1,024
branches ``{ref: header.x-pad, matches: "(?s)a.{140}x"}`` (620 KB through the management API) held
the worker's event loop ~4 minutes per handshake with an 8 KiB header.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from asgi_ws_gateway import ConfigError
from asgi_ws_gateway.policies.build import load_config
from asgi_ws_gateway.safe_regex import MAX_HANDSHAKE_PROGRAM_SIZE, MIN_REGEX_WEIGHT, regex_weight
from support.management import api, managed_gateway
from support.processes import EXE, cli_env
from support.upstream import UpstreamServer

SLOW = "(?s)a.{140}x"  # 986 instructions: the worst found within the bound of one pattern


def _choose(pattern: str, branches: int, **settings: Any) -> dict[str, Any]:
    branch = {
        "if": {"ref": "header.x-pad", "matches": pattern},
        "policies": [{"set-header": {"header": "X-A", "value": "1"}}],
    }
    return {"choose": {"when": [branch] * branches, **settings}}


def _api(policies: list[Any], **fields: Any) -> dict[str, Any]:
    return {"name": "re", "path": "/re", "upstreams": ["ws://h/"], "policies": policies, **fields}


LIMITS = {"max_regex_weight": 2_000}
"""A budget below the default, so that a few of the worst patterns exceed it."""


def _problems(document: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config({"handshake_limits": LIMITS, **document})
    return str(caught.value)


def _over(total: int) -> str:
    return f"apis[0].policies: API 're' runs regular expressions weighing {total:,} RE2 instructions per handshake"


def test_the_weight_is_the_program_size_with_a_floor() -> None:
    assert regex_weight(SLOW) == 986
    assert regex_weight("^10\\.") == MIN_REGEX_WEIGHT
    assert regex_weight("(") == 0  # refused on its own, by field path


def test_many_conditions_on_an_api_are_refused_naming_it_the_total_and_the_bound() -> None:
    problems = _problems({"apis": [_api([_choose(SLOW, 1_024)] * 8)]})
    assert _over(8 * 1_024 * 986) in problems
    assert "more than 2,000 (handshake_limits.max_regex_weight)" in problems


def test_the_budget_is_the_operators_setting() -> None:
    """Four of the worst patterns (3,944) fit the default, not a budget of 2,000; the bound is named."""
    document: dict[str, Any] = {"apis": [_api([_choose(SLOW, 4)])]}
    assert MAX_HANDSHAKE_PROGRAM_SIZE == 4_000
    load_config(document)
    assert _over(4 * 986) in _problems(document)
    with pytest.raises(ConfigError, match="max_regex_weight"):
        load_config({"handshake_limits": {"max_regex_weight": 10}, **document})


@pytest.mark.parametrize(
    "policies",
    [
        [_choose(SLOW, 3)],
        [_choose(SLOW, 1), {"choose": {"when": [{"if": [{"ref": "jwt.sub", "exists": True}],
                                                 "policies": [_choose(SLOW, 2)]}]}}],
        [{"validate-jwt": {"algorithms": ["RS256"], "jwks_url": "http://127.0.0.1:9/jwks",
                           "claims": [{"claim": f"c{k}", "matches": SLOW} for k in range(3)]}}],
        [{"check-header": {"header": f"X-{k}", "pattern": SLOW, "ignore_case": True}} for k in range(3)],
        [_choose(SLOW, 1, otherwise=[{"check-header": {"header": "X-1", "pattern": SLOW}}] * 2)],
    ],
    ids=["choose branches", "a choose inside a branch", "validate-jwt claims", "check-header patterns", "otherwise"],
)  # fmt: skip
def test_every_place_a_policy_matches_a_pattern_counts(policies: list[Any]) -> None:
    problems = _problems({"apis": [_api(policies)]})
    assert "apis[0].policies: API 're' runs regular expressions weighing 2," in problems, problems


def test_inherited_patterns_count_unless_the_api_skips_them() -> None:
    """Global 986 + product 986 + the API's 986: over; the API skipping the global one: within."""
    document = {
        "policies": [_choose(SLOW, 1, name="global-choose")],
        "products": [{"name": "p", "apis": ["re", "other"], "policies": [_choose(SLOW, 1)]}],
        "apis": [_api([_choose(SLOW, 1)]), {"name": "other", "path": "/other", "upstreams": ["ws://h/"]}],
    }
    problems = _problems(document)
    assert _over(3 * 986) in problems
    assert "apis[1]" not in problems  # the other API runs two: within
    document["apis"][0]["skip_policies"] = ["global-choose"]
    load_config({"handshake_limits": LIMITS, **document})


def test_a_realistic_api_with_tens_of_patterns_passes() -> None:
    """20 conditions, a claim check and a check-header: 1,671 (a counted repetition weighs most: 321)."""
    small = [
        "^10\\.",
        "(?i)^bearer [A-Za-z0-9._~+/-]+=*$",
        "^(admin|ops|support)$",
        "^https://([a-z0-9-]+\\.)*example\\.com$",
    ]
    patterns = [
        *(small * 5)[:18],
        "^[A-Za-z0-9_-]{1,64}$",
        "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
    ]
    when = [{"if": {"ref": f"header.x-{k}", "matches": pattern}, "policies": []} for k, pattern in enumerate(patterns)]
    policies = [
        {"choose": {"when": when}},
        {"check-header": {"header": "X-Tenant", "pattern": "^[a-z]+$"}},
        {
            "validate-jwt": {
                "algorithms": ["RS256"],
                "jwks_url": "http://127.0.0.1:9/jwks",
                "claims": [{"claim": "scope", "matches": "(^| )chat:write( |$)"}],
            }
        },
    ]
    load_config({"apis": [_api(policies)]})  # fmt: skip


def test_check_refuses_the_api(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump({"apis": [_api([_choose(SLOW, 64)] * 2)]}))
    done = subprocess.run([str(EXE), "check", str(path)], capture_output=True, text=True, timeout=60, env=cli_env())
    assert done.returncode == 2, done.stdout + done.stderr
    assert _over(128 * 986) in done.stdout + done.stderr


async def test_the_management_api_refuses_it_with_422(tmp_path: Path, upstream: UpstreamServer) -> None:
    with managed_gateway({"apis": [api("chat", "/chat", upstream)]}, tmp_path / "state.json") as running:
        async with running.http() as http:
            refused = await http.post("apis", json=api("re", "/re", upstream, policies=[_choose(SLOW, 1_024)] * 8))
            assert refused.status_code == 422, refused.text
            assert refused.json()["problems"][0].startswith(
                f"policies: API 're' runs regular expressions weighing {8 * 1_024 * 986:,} RE2 instructions"
            ), refused.text
            accepted = await http.post("apis", json=api("re", "/re", upstream, policies=[_choose(SLOW, 3)]))
            assert accepted.status_code in (200, 201), accepted.text
            product = {"name": "p", "apis": ["re"], "policies": [_choose(SLOW, 2)]}  # five for 're'
            refused = await http.post("products", json=product)
            assert refused.status_code == 422, refused.text
            assert "API 're' runs regular expressions weighing 4,930" in refused.text
