"""A new configuration takes over the policies of the lists it has unchanged, and only those that a rebuild
would make the same (pure logic: policies built, never run)."""

from __future__ import annotations

from typing import Any

import pytest

from asgi_ws_gateway.config.gateway import GatewayConfig
from asgi_ws_gateway.errors import ConfigError
from asgi_ws_gateway.policies.build import GatewayPolicies, check_policies, load_config, load_policies
from asgi_ws_gateway.policies.limits import LimitConcurrency
from asgi_ws_gateway.state.memory import MemoryState

_LIMITS: list[dict[str, Any]] = [
    {"check-header": {"header": "X-Tenant", "pattern": "^[a-z]+$"}},
    {"limit-concurrency": {"key": "{client.network}", "max": 5}},
    {"choose": {"when": [{"if": {"ref": "header.x-tier", "equals": "free"},
                          "policies": [{"rate-limit-by-key": {"key": "{client.network}", "limit": 5,
                                                              "window": 60}}]}]}},
]  # fmt: skip
_JWT = [{"validate-jwt": {"secret": "s" * 32, "algorithms": ["HS256"]}}]


def _config(*apis: dict[str, Any]) -> GatewayConfig:
    return load_config({"apis": list(apis)})


def _api(name: str, policies: list[Any], **fields: Any) -> dict[str, Any]:
    return {"name": name, "path": f"/ws/{name}", "upstreams": ["ws://up:9000/"], "policies": policies, **fields}


def _policies(built: GatewayPolicies, api: str) -> list[Any]:
    return built.pipelines[api].api_policies


def test_an_unchanged_list_is_taken_over_and_a_changed_one_built_again() -> None:
    """The same entries (equal data, another API moved or changed beside them) give the same objects."""
    store = MemoryState()
    before = GatewayPolicies(_config(_api("a", _LIMITS), _api("b", _LIMITS)), store)
    changed = [{**_LIMITS[0], "check-header": {"header": "X-Tenant", "pattern": "^[a-z0-9]+$"}}, *_LIMITS[1:]]
    after = GatewayPolicies(
        _config(_api("new", _LIMITS), _api("a", _LIMITS), _api("b", changed)), store, previous=before
    )
    assert after.problems == []
    assert all(x is y for x, y in zip(_policies(after, "a"), _policies(before, "a"), strict=True))
    assert not any(x is y for x, y in zip(_policies(after, "b"), _policies(before, "b"), strict=True))
    # "new" has a's entries but its own counters (api:new...): built, not a's.
    assert not set(map(id, _policies(after, "new"))) & set(map(id, _policies(before, "a")))


def test_nothing_is_taken_over_from_policies_of_another_store() -> None:
    """Policies count in their store: a configuration with another store (its settings changed) builds anew."""
    config = _config(_api("a", _LIMITS))
    before = GatewayPolicies(config, MemoryState())
    after = GatewayPolicies(config, MemoryState(), previous=before)
    assert not set(map(id, _policies(after, "a"))) & set(map(id, _policies(before, "a")))


def test_a_jwt_policy_is_built_again_with_an_empty_token_cache() -> None:
    """docs/policies.md: a configuration change starts empty token caches, and fetches the JWKS again."""
    store = MemoryState()
    config = _config(_api("a", _JWT))
    before = GatewayPolicies(config, store)
    after = GatewayPolicies(config, store, previous=before)
    assert _policies(after, "a")[0] is not _policies(before, "a")[0]


def test_a_taken_over_lists_counters_still_clash_with_a_new_apis() -> None:
    """An API named like another's nested place is refused though that other's list was taken over."""
    nested = [_LIMITS[2]]
    before = GatewayPolicies(_config(_api("x", nested)), MemoryState())
    second = _api(
        "x.choose.0.when.0.policies", [{"rate-limit-by-key": {"key": "{client.network}", "limit": 1, "window": 1}}]
    )
    config = GatewayConfig.model_validate({"apis": [_api("x", nested), second]})
    after = GatewayPolicies(config, before.store, previous=before)
    assert [p for p in after.problems if "same default counter" in p]
    assert after.problems == GatewayPolicies(config, MemoryState()).problems  # as built from nothing


def test_problems_and_warnings_are_those_of_a_build_from_nothing() -> None:
    """Reuse changes no problem nor warning, whatever moved: lists with either are never kept."""
    store = MemoryState()
    warned = [{"check-header": {"header": "X_Tenant", "pattern": "^[a-z]+$"}}]  # underscores dropped: a warning
    before = GatewayPolicies(_config(_api("a", _LIMITS), _api("w", warned)), store)
    config = _config(_api("w", warned), _api("z", []), _api("a", _LIMITS))
    after = GatewayPolicies(config, store, previous=before)
    fresh = GatewayPolicies(config, MemoryState())
    assert after.warnings == fresh.warnings != []
    assert after.problems == fresh.problems == []


async def test_the_replaced_policies_close_only_what_was_not_taken_over() -> None:
    """A limit-concurrency taken over serves on (its leases renewed); one no longer configured is closed."""
    store = MemoryState()
    before = load_policies({"apis": [_api("a", _LIMITS), _api("b", _LIMITS)]}, store=lambda config: store)
    after = load_policies(
        {"apis": [_api("a", _LIMITS), _api("b", [*_LIMITS[:2], {"check-origin": {"allowed": ["https://x"]}}])]},
        store=lambda config: store,
        previous=before,
    )
    kept = next(p for p in _policies(after, "a") if isinstance(p, LimitConcurrency))
    rebuilt = next(p for p in _policies(after, "b") if isinstance(p, LimitConcurrency))
    closed: list[Any] = []
    for policy in (kept, *(p for p in _policies(before, "b") if isinstance(p, LimitConcurrency))):
        original = policy.aclose

        async def aclose(*, keep_held: bool = True, _policy: Any = policy, _original: Any = original) -> None:
            closed.append(_policy)
            await _original(keep_held=keep_held)

        policy.aclose = aclose  # type: ignore[method-assign]
    await before.aclose(close_store=False, keep_leases=True, successor=after)
    assert kept in _policies(before, "a") and kept not in closed
    assert rebuilt not in _policies(before, "b") and len(closed) == 1
    await after.aclose()


def test_check_builds_give_what_a_build_from_nothing_gives() -> None:
    """check_policies takes over from its previous check; its problems are a fresh build's."""
    good = {"apis": [_api("a", _LIMITS), _api("b", _LIMITS)]}
    bad = {"apis": [_api("a", _LIMITS), _api("b", [{"check-header": {"header": "X", "pattern": "(a"}}])]}
    load_config(good)
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert info.value.problems == [
        p for p in GatewayPolicies(GatewayConfig.model_validate(bad), MemoryState()).problems
    ]
    assert check_policies(GatewayConfig.model_validate(good)) == []
