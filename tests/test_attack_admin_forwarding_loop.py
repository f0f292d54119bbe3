"""No policy may edit the ``Via`` header that carries the gateway's loop detection.

An admin-token holder created an API proxied to the gateway itself with ``remove-header: Via`` (or a
``set-header`` over it): one client handshake became 9,955 nested handshakes in 8 s, until the worker
reached 19,968 of its 20,000 file descriptors, for every API it served (``max_gateway_hops`` never saw
a hop). The configuration file could do the same by mistake. Such a policy is now a problem by field
path, wherever it runs, and a 422 through the management API.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from asgi_ws_gateway import ConfigError, load_config
from support.management import api, managed_gateway
from support.upstream import UpstreamServer

UPSTREAM = "ws://127.0.0.1:9/"


def _problems(config: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(config)
    return info.value.problems


@pytest.mark.parametrize(
    "policy",
    [
        {"remove-header": {"header": "Via"}},
        {"remove-header": {"header": "VIA"}},
        {"set-header": {"header": "via", "value": "1.1 elsewhere"}},
        {"set-header": {"header": "Via", "value": "", "exists_action": "delete"}},
        {"set-header": {"header": "Via", "value": "x", "exists_action": "append"}},
    ],
)
def test_an_api_policy_editing_via_is_a_problem(policy: dict[str, Any]) -> None:
    problems = _problems({"apis": [{"name": "a", "path": "/a", "upstreams": [UPSTREAM], "policies": [policy]}]})
    (kind,) = policy
    assert problems == [
        f"apis[0].policies[0].{kind}.header: {kind} of Via: the gateway's own Via entry is how it detects a "
        "forwarding loop, and no policy may change or remove it (send what you meant in a header of your own)"
    ]


def test_global_product_and_branch_policies_are_read_too() -> None:
    remove = {"remove-header": {"header": "Via"}}
    config = {
        "policies": [{"choose": {"when": [{"if": {"ref": "header.x", "exists": True}, "policies": [remove]}]}}],
        "products": [
            {
                "name": "p",
                "apis": ["a"],
                "policies": [
                    {
                        "choose": {
                            "when": [{"if": {"ref": "header.y", "exists": True}, "policies": []}],
                            "otherwise": [remove],
                        }
                    }
                ],
            }
        ],
        "apis": [{"name": "a", "path": "/a", "upstreams": [UPSTREAM]}],
    }
    problems = _problems(config)
    assert [problem.partition(": ")[0] for problem in problems] == [
        "policies[0].choose.when[0].policies[0].remove-header.header",
        "products[0].policies[0].choose.otherwise[0].remove-header.header",
    ]


def test_other_headers_stay_editable() -> None:
    policies = [{"set-header": {"header": "X-Via", "value": "x"}}, {"remove-header": {"header": "Vias"}}]
    load_config({"apis": [{"name": "a", "path": "/a", "upstreams": [UPSTREAM], "policies": policies}]})


async def test_the_management_api_refuses_a_self_proxied_api_that_hides_its_hops(
    upstream: UpstreamServer, tmp_path: Path
) -> None:
    with managed_gateway({"apis": [api("echo", "/ws/echo", upstream)]}, tmp_path / "state.json") as managed:
        itself = managed.url("/loop/{x}").replace("http://", "ws://")
        async with managed.http() as http:
            for policy in ({"remove-header": {"header": "Via"}}, {"set-header": {"header": "Via", "value": "x"}}):
                body = {"name": "loop", "path": "/loop/{x}", "upstreams": [itself], "policies": [policy]}
                answer = await http.post("apis", json=body)
                assert answer.status_code == 422
                assert answer.json()["problems"][0].startswith("policies[0]."), answer.json()
                assert (await http.get("apis/loop")).status_code == 404
