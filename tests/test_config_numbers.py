"""The worst numbers an operator's file (or an admin's JSON) can hold: refused at start-up by field path
(the command line's options: ``test_cli_options.py``).

``.inf``/``.nan`` in YAML, ``1e400`` in JSON (read as infinity) and durations the Redis store cannot
keep in milliseconds used to pass validation and fail later: a concurrency lease of ``inf`` made
every handshake on a Redis store a 500, ``1e12`` made Redis refuse the script and the store count
as down for every API.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel

import asgi_ws_gateway.management.subscriptions
import asgi_ws_gateway.policies  # noqa: F401 (registers every built-in policy's settings)
from asgi_ws_gateway import ConfigError, load_config
from asgi_ws_gateway.strict_numbers import StrictNumbers

UPSTREAM = ["ws://127.0.0.1:9/x"]
JWT = {"jwks_uri": "https://idp.example/jwks", "algorithms": ["RS256"]}


def _api(**fields: Any) -> dict[str, Any]:
    return {"apis": [{"name": "a", "path": "/a", "upstreams": UPSTREAM, **fields}]}


def _policy(name: str, **settings: Any) -> dict[str, Any]:
    return _api(policies=[{name: settings}])


def _message_policy(name: str, **settings: Any) -> dict[str, Any]:
    return _api(message_policies={"inbound": [{name: settings}]})


FIELDS: dict[
    str, Callable[[float], dict[str, Any]]
] = {  # a number field of each kind of model: the gateway, an API, the store, telemetry, policies
    "drain_grace_period": lambda v: {"apis": [], "drain_grace_period": v},
    "apis[0].connect_timeout": lambda v: _api(connect_timeout=v),
    "apis[0].idle_timeout": lambda v: _api(idle_timeout=v),
    "apis[0].cooldown": lambda v: _api(cooldown=v),
    "store.timeout": lambda v: {
        "apis": [],
        "store": {"type": "redis", "url": "redis://127.0.0.1:6379/0", "timeout": v},
    },
    "telemetry.message_events": lambda v: {"apis": [], "telemetry": {"message_events": v}},
    "telemetry.shutdown_timeout": lambda v: {"apis": [], "telemetry": {"shutdown_timeout": v}},
    "apis[0].policies[0].rate-limit-by-key.window": lambda v: _policy(
        "rate-limit-by-key", key="{client.ip}", limit=5, window=v
    ),
    "apis[0].policies[0].limit-concurrency.lease_ttl": lambda v: _policy(
        "limit-concurrency", key="{client.ip}", max=5, lease_ttl=v
    ),
    "apis[0].policies[0].validate-jwt.clock_skew": lambda v: _policy("validate-jwt", **JWT, clock_skew=v),
    "apis[0].policies[0].validate-jwt.cache.max_age": lambda v: _policy("validate-jwt", **JWT, cache={"max_age": v}),
    "apis[0].message_policies.inbound[0].rate-limit-messages.batch": lambda v: _message_policy(
        "rate-limit-messages", messages=5, batch=v
    ),
}


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan], ids=["inf", "-inf", "nan"])
@pytest.mark.parametrize("field", FIELDS)
def test_a_number_that_is_not_finite_is_refused_with_its_path(field: str, value: float) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(FIELDS[field](value))
    assert f"{field}: Input should be a finite number (got {value})" in info.value.problems


@pytest.mark.parametrize("value", [True, False])
@pytest.mark.parametrize("field", FIELDS)
def test_a_boolean_is_not_a_number(field: str, value: bool) -> None:
    """Pydantic's lax mode read ``true`` as 1: ``window: on`` in YAML was a window of one second."""
    with pytest.raises(ConfigError) as info:
        load_config(FIELDS[field](value))
    assert f"{field}: a number, not a boolean ({str(value).lower()}) (got {value})" in info.value.problems


def test_yaml_yes_for_a_limit_is_refused_by_its_path(tmp_path: Any) -> None:
    """YAML 1.1 reads ``yes``: a limit of one handshake per minute, valid to the check, used to start."""
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "apis:\n  - name: a\n    path: /a\n    upstreams: [ws://127.0.0.1:9/x]\n    policies:\n"
        "      - rate-limit-by-key: {key: '{client.ip}', limit: yes, window: 60}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "apis[0].policies[0].rate-limit-by-key.limit: a number, not a boolean (true) (got True)" in str(info.value)


def _models(cls: type[BaseModel]) -> set[type[BaseModel]]:
    found = set()
    for sub in cls.__subclasses__():
        if sub.__module__.startswith("asgi_ws_gateway"):
            found.add(sub)
        found |= _models(sub)
    return found


def test_every_settings_model_of_the_gateway_refuses_infinity_and_nan() -> None:
    """The rule is in each model's configuration, so a field added later inherits it."""
    models = _models(BaseModel)
    assert len(models) > 40, sorted(m.__name__ for m in models)  # config, policies, subscriptions
    lax = sorted(m.__qualname__ for m in models if m.model_config.get("allow_inf_nan") is not False)
    assert lax == []


def test_every_settings_model_of_the_gateway_refuses_a_boolean_for_a_number() -> None:
    """Inherited from one base, so a model added later is held to it too (output models aside)."""
    inputs = {m for m in _models(BaseModel) if not m.__name__.endswith("Resource")}
    assert sorted(m.__qualname__ for m in inputs if not issubclass(m, StrictNumbers)) == []


def test_a_lease_longer_than_a_day_is_refused() -> None:
    """The store keeps leases in milliseconds in a Lua script; a day is far beyond any renewal."""
    load_config(_policy("limit-concurrency", key="{client.ip}", max=5, lease_ttl=86_400))
    with pytest.raises(ConfigError) as info:
        load_config(_policy("limit-concurrency", key="{client.ip}", max=5, lease_ttl=1e12))
    field = "apis[0].policies[0].limit-concurrency.lease_ttl"
    assert info.value.problems == [f"{field}: Input should be less than or equal to 86400 (got 1000000000000.0)"]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (0, "greater than or equal to 0.01"),
        (-1, "greater than or equal to 0.01"),
        (301, "less than or equal to 300"),
    ],
)
def test_a_telemetry_shutdown_timeout_out_of_range_is_refused_with_its_path(value: float, problem: str) -> None:
    """Zero would drop everything buffered at every shutdown; minutes would outlast any grace period."""
    with pytest.raises(ConfigError) as info:
        load_config({"apis": [], "telemetry": {"shutdown_timeout": value}})
    assert info.value.problems == [f"telemetry.shutdown_timeout: Input should be {problem} (got {value})"]
