"""Every duration of the configuration has a floor and a ceiling: 1e-300 and 1e308 are refused by field path.

``gt=0`` admitted 1e-300 (an ``idle_timeout`` closing every connection at 0.000 s, a rate window
counting nothing) and no ceiling admitted 1e308 (a ``clock_skew`` under which a token expired ten
years ago was admitted).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import annotated_types
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from asgi_ws_gateway import ConfigError, load_config
from asgi_ws_gateway.config.gateway import GatewayConfig
from asgi_ws_gateway.policies.base import REGISTRY
from asgi_ws_gateway.policies.message_base import MESSAGE_REGISTRY
from support.processes import cli_env

SECRET = "s" * 32
JWT = {"algorithms": ["HS256"], "secret": SECRET, "audience": "chat", "issuer": "https://issuer.example"}
YEAR = 31_536_000.0

# (where, field, floor, ceiling): the documented bounds (docs/deployment.md, docs/policies.md).
BOUNDS: list[tuple[str, str, float, float]] = [
    ("api", "connect_timeout", 0.01, 300),
    ("api", "ping_interval", 0.1, 86_400),
    ("api", "ping_timeout", 0.01, 3600),
    ("api", "close_timeout", 0.01, 300),
    ("api", "idle_timeout", 0.1, 86_400),
    ("api", "max_lifetime", 0.1, YEAR),
    ("api", "cooldown", 0, 86_400),
    ("api", "dns_ttl", 0, 3600),
    ("gateway", "drain_grace_period", 0, 86_400),
    ("validate-jwt", "clock_skew", 0, 300),
    ("validate-jwt", "jwks_refresh_interval", 0.1, 604_800),
    ("validate-jwt", "jwks_min_refresh_interval", 0, 86_400),
    ("validate-jwt", "jwks_timeout", 0.01, 300),
    ("rate-limit-by-key", "window", 1, 86_400),
    ("limit-concurrency", "retry_after", 1, 86_400),
    ("limit-concurrency", "lease_ttl", 1, 86_400),
    ("rate-limit-messages", "window", 0.01, 86_400),
]

_POLICIES: dict[str, dict[str, Any]] = {
    "validate-jwt": dict(JWT),
    "rate-limit-by-key": {"key": "{client.network}", "limit": 1, "window": 60},
    "limit-concurrency": {"key": "{client.network}", "max": 1},
    "rate-limit-messages": {"messages": 10},
}


def _config(where: str, field: str, value: Any) -> tuple[dict[str, Any], str]:
    """A configuration with ``field`` of ``where`` set to ``value``, and that field's path."""
    api: dict[str, Any] = {"name": "chat", "path": "/ws/chat", "upstreams": ["ws://127.0.0.1:9/"]}
    config: dict[str, Any] = {"apis": [api]}
    if where == "api":
        api[field] = value
        return config, f"apis[0].{field}"
    if where == "gateway":
        config[field] = value
        return config, field
    settings = {**_POLICIES[where], field: value}
    if where == "rate-limit-messages":
        api["message_policies"] = {"inbound": [{where: settings}]}
        return config, f"apis[0].message_policies.inbound[0].{where}.{field}"
    api["policies"] = [{where: settings}]
    return config, f"apis[0].policies[0].{where}.{field}"


def _problems(config: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(config, import_plugins=False)
    return caught.value.problems


# 1e-300 only where the floor is above 0 (where 0 is valid, off or at once, 1e-300 is as good as 0).
_OUT_OF_BOUNDS = [
    pytest.param(where, field, value, floor if value < floor else ceiling, id=f"{where}.{field}={value:g}")
    for where, field, floor, ceiling in BOUNDS
    for value in ((-1, 10**9) if field == "retry_after" else (-1.0, 1e308, *((1e-300,) if floor > 0 else ())))
]
_BOUND = re.compile(r"Input should be (?:less|greater) than or equal to ([0-9.e+]+)")


@pytest.mark.parametrize(("where", "field", "value", "bound"), _OUT_OF_BOUNDS)
def test_a_duration_out_of_its_bounds_is_refused_by_field_path(
    where: str, field: str, value: float, bound: float
) -> None:
    """-1, 1e308 and 1e-300: one problem, at the field's path, naming the bound it broke."""
    config, path = _config(where, field, value)
    problems = [p for p in _problems(config) if p.startswith(f"{path}:")]
    assert len(problems) == 1, _problems(config)
    found = _BOUND.search(problems[0])
    assert found is not None and float(found[1]) == bound, problems


@pytest.mark.parametrize(("where", "field", "floor", "ceiling"), BOUNDS, ids=[f"{w}.{f}" for w, f, *_ in BOUNDS])
def test_a_duration_at_its_bounds_is_accepted(where: str, field: str, floor: float, ceiling: float) -> None:
    """The floor and the ceiling themselves are valid: the bounds are inclusive, as documented."""
    for value in (floor, ceiling):
        config, _ = _config(where, field, int(value) if field == "retry_after" else value)
        load_config(config, import_plugins=False)


@settings(max_examples=60, deadline=None)
@given(value=st.floats(allow_nan=False, allow_infinity=False))
def test_idle_timeout_is_valid_exactly_between_its_bounds(value: float) -> None:
    """Any float: accepted if and only if 0.1 <= idle_timeout <= 86400."""
    config, _ = _config("api", "idle_timeout", value)
    try:
        load_config(config, import_plugins=False)
    except ConfigError as exc:
        assert not 0.1 <= value <= 86_400, exc.problems
    else:
        assert 0.1 <= value <= 86_400


def _float_fields(model: type[BaseModel], seen: set[type[BaseModel]]) -> list[tuple[str, Any]]:
    """``(Model.field, FieldInfo)`` of every float field of ``model`` and the models it holds."""
    if model in seen:
        return []
    seen.add(model)
    found = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        args = getattr(annotation, "__args__", ())
        if annotation is float or float in args:
            found.append((f"{model.__name__}.{name}", info))
        for member in (annotation, *args, *(a for arg in args for a in getattr(arg, "__args__", ()))):
            if isinstance(member, type) and issubclass(member, BaseModel):
                found += _float_fields(member, seen)
    return found


# Fractions, not durations.
_RATIOS = {"TelemetryConfig.message_events", "RateLimitMessagesSettings.batch"}
# Durations left without both bounds on purpose (none today): named here, with the reason.
_PENDING: set[str] = set()


def _all_float_fields() -> list[tuple[str, Any]]:
    seen: set[type[BaseModel]] = set()
    found = _float_fields(GatewayConfig, seen)
    for kind in (*REGISTRY.values(), *MESSAGE_REGISTRY.values()):
        if kind.__module__.startswith("asgi_ws_gateway."):  # built-in: other tests register policies of their own
            found += _float_fields(kind.Settings, seen)
    return found


def test_every_duration_field_states_a_floor_and_a_ceiling() -> None:
    """No float field of the configuration or of a built-in policy's settings is bounded by ``gt=0`` alone
    or left without a ceiling: each has ``ge`` (a floor that keeps it meaningful) and ``le`` <= a year."""
    unbounded = []
    for name, info in _all_float_fields():
        if name in _RATIOS or name in _PENDING:
            continue
        floors: list[Any] = [m.ge for m in info.metadata if isinstance(m, annotated_types.Ge)]
        ceilings: list[Any] = [m.le for m in info.metadata if isinstance(m, annotated_types.Le)]
        if not floors or not ceilings or max(ceilings) > YEAR:
            unbounded.append(name)
    assert not unbounded
    assert {name for name, _ in _all_float_fields()} >= {"ApiConfig.idle_timeout", "ValidateJwtSettings.clock_skew"}


def test_check_refuses_a_nonsense_duration_with_exit_2(tmp_path: Path) -> None:
    """``asgi-ws-gateway check`` on clock_skew 1e308 and idle_timeout 1e-300: exit 2, each field path named."""
    config, _ = _config("validate-jwt", "clock_skew", 1e308)
    idle, _ = _config("api", "idle_timeout", 1e-300)
    config["apis"].append({**idle["apis"][0], "name": "idle", "path": "/ws/idle"})
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [sys.executable, "-m", "asgi_ws_gateway", "check", str(path)],
        capture_output=True, text=True, timeout=60, env=cli_env(),
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "apis[0].policies[0].validate-jwt.clock_skew: Input should be less than or equal to 300" in done.stderr
    assert "apis[1].idle_timeout: Input should be greater than or equal to 0.1" in done.stderr
