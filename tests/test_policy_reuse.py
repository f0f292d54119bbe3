"""A new configuration takes over the policies of the lists it has unchanged, and only those that a rebuild
would make the same (pure logic: policies built, never run)."""

from __future__ import annotations

from typing import Any

import pytest

from asgi_ws_gateway.config import parsing
from asgi_ws_gateway.config.gateway import GatewayConfig
from asgi_ws_gateway.errors import ConfigError
from asgi_ws_gateway.policies.build import (
    GatewayPolicies,
    check_policies,
    load_config,
    load_config_to_install,
    load_policies,
)
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


_MESSAGES = {
    "inbound": [{"limit-message-size": {"max": 1000}}],
    "error_reply": {"template": {"error": "{error.reason}"}},
}


def _many(**changed: Any) -> dict[str, Any]:
    """Three APIs (two in product p), with handshake and message policies at every scope; ``changed`` replaces
    top-level fields."""
    return {
        "policies": [_LIMITS[0]],
        "message_policies": _MESSAGES,
        "products": [{"name": "p", "apis": ["a", "b"], "subscription_required": False, "policies": [_LIMITS[1]],
                      "message_policies": _MESSAGES}],
        "subscriptions": [{"id": "s1", "product": "p", "key_sha256": "0" * 64}],
        "apis": [_api(name, _LIMITS, message_policies=_MESSAGES) for name in ("a", "b", "c")],
        **changed,
    }  # fmt: skip


def _kept(before: GatewayPolicies, after: GatewayPolicies) -> set[str]:
    """The APIs whose pipeline and message sets ``after`` took over from ``before`` (the very objects)."""
    return {
        name
        for name, pipeline in after.pipelines.items()
        if pipeline is before.pipelines.get(name) and _same_sets(before, after, name)
    }


def _same_sets(before: GatewayPolicies, after: GatewayPolicies, api: str) -> bool:
    old, new = before.messages.of_api_sets(api), after.messages.of_api_sets(api)
    return old != () and len(old) == len(new) and all(x is y for (_, x), (_, y) in zip(old, new, strict=True))


def _rebuilt(source: dict[str, Any], changed: dict[str, Any]) -> tuple[GatewayPolicies, GatewayPolicies]:
    store = MemoryState()
    before = load_policies(source, store=lambda config: store)
    return before, load_policies(changed, store=lambda config: store, previous=before)


def test_a_change_to_one_api_takes_over_every_other_apis_pipeline_and_message_sets() -> None:
    """Another API changed: the rest are not built again (their pipelines, message sets, templates)."""
    source = _many()
    changed = _many(apis=[*source["apis"][:2], _api("c", _LIMITS, message_policies=_MESSAGES, idle_timeout=5)])
    before, after = _rebuilt(source, changed)
    assert _kept(before, after) == {"a", "b"}
    fresh = GatewayPolicies(after.config, MemoryState())
    assert (after.problems, after.warnings) == (fresh.problems, fresh.warnings)


def test_an_api_is_built_again_when_anything_it_inherits_changes() -> None:
    """Global or product policies, message scopes, subscriptions: what depends on them is built again."""
    source = _many()
    other_pattern = {"check-header": {"header": "X-Tenant", "pattern": "^[a-z0-9]+$"}}
    other_reply = {**_MESSAGES, "error_reply": {"template": {"e": "{error.reason}"}}}
    product = source["products"][0]
    cases = {
        "global policies": (_many(policies=[other_pattern]), set()),
        "global message policies": (_many(message_policies=other_reply), set()),
        "product policies": (_many(products=[{**product, "policies": [other_pattern]}]), {"c"}),
        "product message policies": (_many(products=[{**product, "message_policies": other_reply}]), {"c"}),
        "product needs a key": (_many(products=[{**product, "subscription_required": True}]), {"c"}),
        "subscriptions": (_many(subscriptions=[]), {"c"}),
        "subscription key": (_many(subscription_key={"headers": ["X-Key"]}), {"c"}),
        "nothing": (_many(), {"a", "b", "c"}),
    }
    for what, (changed, kept) in cases.items():
        before, after = _rebuilt(source, changed)
        assert _kept(before, after) == kept, what


def test_an_api_with_a_policy_never_taken_over_is_built_again() -> None:
    """validate-jwt (and every kind outside REUSABLE) makes its API's pipeline anew, as before."""
    source = {"apis": [_api("a", _JWT), _api("b", _LIMITS)]}
    before, after = _rebuilt(source, source)
    assert set(after.pipelines) - _kept_pipelines(before, after) == {"a"}


def _kept_pipelines(before: GatewayPolicies, after: GatewayPolicies) -> set[str]:
    return {name for name, pipeline in after.pipelines.items() if pipeline is before.pipelines.get(name)}


def test_a_taken_over_apis_counters_still_clash_with_a_new_apis() -> None:
    """An API added with a name that shares a kept API's default counter is refused, as from nothing."""
    nested = [_LIMITS[2]]
    source = {"apis": [_api("x", nested)]}
    second = _api(
        "x.choose.0.when.0.policies", [{"rate-limit-by-key": {"key": "{client.network}", "limit": 1, "window": 1}}]
    )
    store = MemoryState()
    before = load_policies(source, store=lambda config: store)
    config = GatewayConfig.model_validate({"apis": [_api("x", nested), second]})
    after = GatewayPolicies(config, store, previous=before)
    assert _kept_pipelines(before, after) == {"x"}
    assert [p for p in after.problems if "same default counter" in p]
    assert after.problems == GatewayPolicies(config, MemoryState()).problems


def test_a_configuration_just_validated_is_installed_without_checking_its_data_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """load_policies of what load_config_to_install returned (a management change's merge) builds its policies
    only; any other configuration is checked, one a caller got from load_config too (its lists could change)."""
    checked: list[GatewayConfig] = []
    cross_check = parsing.cross_check  # type: ignore[attr-defined]

    def counted(config: GatewayConfig) -> list[str]:
        checked.append(config)
        return cross_check(config)

    monkeypatch.setattr(parsing, "cross_check", counted)
    document = {"apis": [_api("a", _LIMITS)]}
    config = load_config_to_install(document)
    assert load_policies(config).config is config
    assert checked == [config]
    unchecked = GatewayConfig.model_validate(document)
    load_policies(unchecked)
    assert checked == [config, unchecked]
    held = load_config(document)
    load_policies(held)
    assert checked == [config, unchecked, held, held]
