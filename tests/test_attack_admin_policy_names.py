"""A policy's ``name`` is a name: at most 128 characters, no control, line-break or bidi character.

An admin-token holder created an API whose ``limit-message-size`` was named ``"x\\nINFO:     forged
line"`` (201): the first message over the limit wrote ``INFO:     API mp: message policy x`` and then a
line of the holder's own, ``INFO:     forged line ...``, into the gateway's log (ANSI escapes and a bidi
override kept raw). The same name went to ``GET /refusals``, the metrics and the access log. Every other
name and id the API stores (APIs, products, subscriptions, display names) refused such text; a policy's
``name`` was any string up to 16,384 characters, and under a plugin's settings without a ``name`` field
any value at all. Now it is refused by field path wherever it is written, in files too. Real uvicorn,
the management API, a real upstream.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from asgi_ws_gateway import ConfigError, load_config
from asgi_ws_gateway.policies import REGISTRY, HandshakeContext, PolicyEnv, register_policy
from support.clients import connect
from support.management import api, managed_gateway
from support.upstream import UpstreamServer

FORGED = "x\nINFO:     forged line\x1b[31m\u202e"


class _PlainSettings(BaseModel):
    """A plugin's settings without a ``name`` field, as plugins write them."""

    model_config = {"extra": "forbid"}


class _Passes:
    Settings = _PlainSettings

    def __init__(self, settings: _PlainSettings, env: PolicyEnv) -> None:
        self.name = "passes-test"

    async def apply(self, context: HandshakeContext) -> None:
        return None


@pytest.fixture
def _plugin_registered() -> Iterator[None]:
    register_policy("passes-test")(_Passes)
    yield
    del REGISTRY["passes-test"]


def _problems(policies: list[Any], message_policies: list[Any] | None = None) -> list[str]:
    entry: dict[str, Any] = {"name": "a", "path": "/a", "upstreams": ["ws://127.0.0.1:9/"], "policies": policies}
    if message_policies is not None:
        entry["message_policies"] = {"inbound": message_policies}
    with pytest.raises(ConfigError) as info:
        load_config({"apis": [entry]})
    return info.value.problems


async def test_a_policy_name_that_forges_a_log_line_is_a_422(
    upstream: UpstreamServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = {"apis": [api("echo", "/ws/echo", upstream)]}
    with managed_gateway(config, tmp_path / "state.json") as managed:
        async with managed.http() as http:
            limit = {"limit-message-size": {"name": FORGED, "max": 3}}
            body = api("mp", "/ws/mp", upstream, message_policies={"inbound": [limit]})
            answer = await http.post("apis", json=body)
            assert answer.status_code == 422, answer.text
            (problem,) = answer.json()["problems"]
            assert problem.startswith(
                "message_policies.inbound[0].limit-message-size.name: control, line-breaking and bidi characters "
                "are not allowed (U+000A at 1)"
            ), problem
            assert (await http.get("apis/mp")).status_code == 404
            check = {"check-header": {"name": "a" * 129, "header": "X-A", "values": ["a"]}}
            answer = await http.post("apis", json=api("pn", "/ws/pn", upstream, policies=[check]))
            assert answer.status_code == 422, answer.text
            assert answer.json()["problems"][0].startswith("policies[0].check-header.name: String should have at most")
        async with await connect(managed.url("/ws/echo")) as ws:
            await ws.send("still served")
            assert await ws.recv() == "still served"
    assert "forged line" not in caplog.text


def test_every_policy_list_refuses_such_a_name_by_field_path() -> None:
    choose = {"choose": {"when": [{"if": {"ref": "header.x", "exists": True}, "policies": [
        {"check-header": {"name": "a\u202eb", "header": "X-A", "values": ["a"]}}
    ]}]}}  # fmt: skip
    problems = _problems([choose], [{"limit-message-size": {"name": "tab\there", "max": 3}}])
    assert [problem.partition(": ")[0] for problem in problems] == [
        "apis[0].message_policies.inbound[0].limit-message-size.name",
        "apis[0].policies[0].choose.when[0].policies[0].check-header.name",
    ]


@pytest.mark.usefixtures("_plugin_registered")
@pytest.mark.parametrize("name", [FORGED, 7, ["a"], "a" * 129])
def test_a_plugins_settings_without_a_name_field_take_no_other_name(name: object) -> None:
    (problem,) = _problems([{"passes-test": {"name": name}}])
    assert problem.startswith("apis[0].policies[0].passes-test.name: "), problem


@pytest.mark.usefixtures("_plugin_registered")
def test_names_people_write_are_still_names() -> None:
    spaced = {"check-header": {"name": "Tenant check (EU) " + "é" * 100, "header": "X-A", "values": ["a"]}}
    plugin = {"passes-test": {"name": "a" * 128}}
    gateway = load_config({"apis": [{"name": "a", "path": "/a", "upstreams": ["ws://127.0.0.1:9/"],
                                     "policies": [spaced, plugin]}]})  # fmt: skip
    assert gateway.apis[0].policies == [spaced, plugin]
