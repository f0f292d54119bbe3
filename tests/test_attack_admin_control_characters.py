"""Control characters an operator (or an admin-token holder) writes into what the gateway sends upstream.

``rewrite-uri`` took ``/a\\r\\nX-Injected: 1``, ``/a b``, ``/a/../admin``, ``/a#x`` and non-ASCII text;
``set-query-parameter`` a name or a value with CR, LF, NUL or DEL; ``set-header`` and ``remove-header``
a name with NUL, DEL or a non-ASCII letter. None reached an upstream as written (the request check
refused it, or the query encoded it), but each was saved, and then every handshake of the API was
refused 400 as the client's fault. Now each is a configuration problem by field path, and a 422
through the management API; client values rendered into the same fields stay encoded or refused
(``test_attack_policies_rewrites.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from asgi_ws_gateway import ConfigError, load_config
from support.management import api, managed_gateway
from support.upstream import UpstreamServer

UPSTREAM = "ws://127.0.0.1:9/"

UNSAVABLE = [
    ("rewrite-uri", "template", {"template": "/a\r\nX-Injected: 1"}),
    ("rewrite-uri", "template", {"template": "/a\x00"}),
    ("rewrite-uri", "template", {"template": "/a\x7f"}),
    ("rewrite-uri", "template", {"template": "/a b"}),
    ("rewrite-uri", "template", {"template": "/a/../admin"}),
    ("rewrite-uri", "template", {"template": "/a/%2e%2e/admin"}),
    ("rewrite-uri", "template", {"template": "/a#x"}),
    ("rewrite-uri", "template", {"template": "/a/\u20ac"}),
    ("rewrite-uri", "template", {"template": "/a?x=1\r\n"}),
    ("rewrite-uri", "template", {"template": "/a/{path.x|\r\n}"}),
    # a default is written as it is (escaped as a value): a dot segment or an encoded / refused every
    # handshake without the value (the check rendered values, never the defaults)
    ("rewrite-uri", "template", {"template": "/a/{query.x|..}/b"}),
    ("rewrite-uri", "template", {"template": "/a/{query.x|.}"}),
    ("rewrite-uri", "template", {"template": "/a/{query.x|../admin}"}),
    ("rewrite-uri", "template", {"template": "/a/{query.x}/{query.x|..}"}),
    ("rewrite-uri", "template", {"template": "/a/{header.x-room|..}?t={jwt.tid}"}),
    ("set-query-parameter", "parameter", {"parameter": "a\r\nb", "value": "1"}),
    ("set-query-parameter", "parameter", {"parameter": "a\x00", "value": "1"}),
    ("set-query-parameter", "value", {"parameter": "a", "value": "x\r\ny"}),
    ("set-query-parameter", "value", {"parameter": "a", "value": "x\x7f"}),
    ("set-query-parameter", "value", {"parameter": "a", "value": "x\x85"}),
    ("set-query-parameter", "value", {"parameter": "a", "value": "{query.x|\n}"}),
    ("set-header", "header", {"header": "X-A\x00", "value": "1"}),
    ("set-header", "header", {"header": "X-A\x7f", "value": "1"}),
    ("set-header", "header", {"header": "X-\u00e9", "value": "1"}),
    ("set-header", "value", {"header": "X-A", "value": "a\r\nX-B: 1"}),
    ("remove-header", "header", {"header": "X-A\x00"}),
    ("set-backend-service", "base_url", {"base_url": "ws://a:9000/x\r\ny"}),
]


def _problems(policy: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config({"apis": [{"name": "a", "path": "/a", "upstreams": [UPSTREAM], "policies": [policy]}]})
    return info.value.problems


@pytest.mark.parametrize(("kind", "field", "settings"), UNSAVABLE, ids=lambda v: repr(v)[:40])
def test_a_control_character_in_what_the_gateway_sends_is_a_problem_by_field(
    kind: str, field: str, settings: dict[str, Any]
) -> None:
    problems = _problems({kind: settings})
    assert len(problems) == 1
    assert problems[0].startswith(f"apis[0].policies[0].{kind}.{field}: "), problems


def test_global_product_and_branch_policies_are_held_to_it_too() -> None:
    bad = {"rewrite-uri": {"template": "/a\r\nX-Injected: 1"}}
    config = {
        "policies": [{"choose": {"when": [{"if": {"ref": "header.x", "exists": True}, "policies": [bad]}]}}],
        "products": [{"name": "p", "apis": ["a"], "policies": [{"set-query-parameter": {"parameter": "a\n"}}]}],
        "apis": [{"name": "a", "path": "/a", "upstreams": [UPSTREAM]}],
    }
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert sorted(problem.partition(": ")[0] for problem in info.value.problems) == [
        "policies[0].choose.when[0].policies[0].rewrite-uri.template",
        "products[0].policies[0].set-query-parameter.parameter",
    ]


def test_what_was_valid_stays_valid() -> None:
    policies = [
        {"rewrite-uri": {"template": "/rooms/{path.room}/{header.x-seg|lobby}?tenant={jwt.tid}&a=%20b"}},
        {"set-query-parameter": {"parameter": "caf\u00e9", "value": "\u20ac {query.x|d\u00e9faut}"}},
        {"set-header": {"header": "X-Tenant~1", "value": "caf\u00e9\t{jwt.sub}"}},
        {"remove-header": {"header": "X-Old"}},
    ]
    load_config({"apis": [{"name": "a", "path": "/a/{room}", "upstreams": [UPSTREAM], "policies": policies}]})


async def test_the_management_api_refuses_them_with_the_field_path(upstream: UpstreamServer, tmp_path: Path) -> None:
    with managed_gateway({"apis": [api("echo", "/ws/echo", upstream)]}, tmp_path / "state.json") as managed:
        async with managed.http() as http:
            for kind, field, settings in UNSAVABLE:
                body = api("bad", "/bad", upstream, policies=[{kind: settings}])
                answer = await http.post("apis", json=body)
                assert answer.status_code == 422, (settings, answer.text)
                assert answer.json()["problems"][0].startswith(f"policies[0].{kind}.{field}: "), answer.json()
            assert (await http.get("apis/bad")).status_code == 404


@pytest.mark.parametrize(
    "reason", ["bye\r\nX-Injected: 1", "bye\x00", "bye\x7f", "bye\u0085", "bye\u2028", "\u202ebye"]
)
async def test_a_close_reason_the_admin_sends_holds_no_control_character(
    upstream: UpstreamServer, tmp_path: Path, reason: str
) -> None:
    """A kick's reason goes to the client in a close frame and to the access log: one line of text, or 422
    by field (refused before the connection is looked for: an unknown one is not a 404 first)."""
    with managed_gateway({"apis": [api("echo", "/ws/echo", upstream)]}, tmp_path / "state.json") as managed:
        async with managed.http() as http:
            answer = await http.post("connections/no-such-connection/close", json={"code": 4000, "reason": reason})
            assert answer.status_code == 422, answer.text
            assert answer.json()["problems"][0].startswith("reason: "), answer.json()
            fine = await http.post(
                "connections/no-such-connection/close", json={"code": 4000, "reason": "bye, caf\u00e9"}
            )
            assert fine.status_code == 404, fine.text
