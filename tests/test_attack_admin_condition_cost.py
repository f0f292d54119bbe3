"""A condition's cost on a client's value is bounded: ``contains`` is one search, and a handshake tests 4,096 at most.

An admin-token holder created an API of 20 ``choose`` policies with 1,024 branches each, every one
``{if: {ref: header.x, contains: zz}}`` (963 KB, within the management API's 1 MiB body): any client
that then sent ``x: a a a ...`` (8 KiB) held the worker's event loop 5-6 s per handshake under
``asgi-ws-gateway run`` (every connection of that worker stalled), because each condition split the
header into 3,500 words and wrote each again through ``to_text`` in a Python loop (0.18 ms a condition).
The word is now found by one search in the value with spaces around it: the same handshake took
0.25-0.35 s. What a word is does not change: separated by the space alone (RFC 6749's ``scope``).

Still, nothing bounded how many conditions one handshake tests but the 16 MiB of stored changes: each
product listing the API adds its own (a client without a key runs every open product's). Now an API's
handshake tests ``handshake_limits.max_conditions`` (4,096) at most, counted as the regular
expressions' weight is: its policies', the global ones' and its products', less those it skips; more is a
problem by field path, and a 422 through the management API, where the product that takes it past is
refused too. Real uvicorn and the management API for those.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asgi_ws_gateway import ConfigError, load_config, templates
from asgi_ws_gateway.templates import Condition, Reference
from support.clients import connect
from support.management import api, managed_gateway
from support.upstream import UpstreamServer


class _Header:
    """A lookup holding one header, ``header.x``."""

    def __init__(self, value: object) -> None:
        self.value = value

    def lookup(self, namespace: str, path: tuple[str, ...]) -> object | None:
        return self.value if (namespace, path) == ("header", ("x",)) else None


def _contains(value: object, word: str) -> bool:
    return Condition(Reference.parse("header.x"), contains=word).holds(_Header(value))


def test_a_long_client_value_is_not_walked_word_by_word(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = 0
    real = templates.to_text

    def counted(value: Any) -> str:
        nonlocal calls
        calls += 1
        return real(value)

    monkeypatch.setattr(templates, "to_text", counted)
    assert not _contains("a " * 4000, "zz")
    assert calls <= 1, f"{calls} texts written for one condition on a 4,000-word value"


@pytest.mark.parametrize(
    ("value", "word", "holds"),
    [
        ("chat:read chat:write", "chat:write", True),
        ("chat:read chat:write", "chat", False),
        ("chat:write", "chat:write", True),
        ("x\u3000chat:write", "chat:write", False),  # another Unicode space separates nothing
        ("x\tchat:write", "chat:write", False),
        ("a b", "a b", False),  # a word holds no space
        ("a  b", "", True),  # two spaces: an empty word between them
        ("a b", "", False),
        ("", "", True),
        (["dev", "ops"], "dev", True),
        (["dev ops"], "dev", False),
        ([1, True], "true", True),
        (42, "42", True),
    ],
)
def test_what_a_word_is_did_not_change(value: object, word: str, holds: bool) -> None:
    assert _contains(value, word) is holds


@given(st.text(alphabet="ab \t\u3000", max_size=24), st.text(alphabet="ab \t", max_size=4))
def test_a_word_is_what_splitting_at_spaces_gives(text: str, word: str) -> None:
    assert _contains(text, word) is (word in text.split(" "))


def _choose(branches: int, op: str = "contains") -> dict[str, Any]:
    return {"choose": {"when": [{"if": {"ref": "header.x", op: f"v{j}"}} for j in range(branches)]}}


def test_an_api_testing_more_conditions_than_the_limit_is_a_problem() -> None:
    entry = {"name": "a", "path": "/a", "upstreams": ["ws://127.0.0.1:9/"], "policies": [_choose(1024)] * 4}
    load_config({"apis": [entry]})  # 4,096: the limit
    claims = {"validate-jwt": {"algorithms": ["HS256"], "secret": "s" * 32, "claims": [{"claim": "a", "equals": "b"}]}}
    with pytest.raises(ConfigError) as info:
        load_config({"apis": [{**entry, "policies": [*entry["policies"], claims]}]})
    assert info.value.problems == [
        "apis[0].policies: API 'a' tests 4,097 conditions per handshake (its policies', the global ones' and its "
        "products': choose branches, validate-jwt claims), more than 4,096 (handshake_limits.max_conditions): each "
        "is tested against what the client sends, on the event loop every connection of the worker shares; one "
        "in: [...] tests many values"
    ]
    raised = {"handshake_limits": {"max_conditions": 5120}, "apis": [{**entry, "policies": [_choose(1024)] * 5}]}
    load_config(raised)  # the operator's to raise, in the file


def test_skipped_and_unlisted_policies_do_not_count() -> None:
    skipping: dict[str, Any] = {"name": "b", "path": "/b", "upstreams": ["ws://127.0.0.1:9/"],
                                "skip_policies": ["big"], "policies": [_choose(1)]}  # fmt: skip
    config = {
        "policies": [{"choose": {"name": "big", **_choose(1024)["choose"]}}],
        "products": [{"name": "p", "apis": ["b"], "subscription_required": False, "policies": [_choose(1024)] * 3}],
        "apis": [
            {"name": "a", "path": "/a", "upstreams": ["ws://127.0.0.1:9/"], "policies": [_choose(1024)] * 3},
            skipping,
        ],
    }  # fmt: skip
    load_config(config)  # a: 3,072 + 1,024 global; b: 1 + 3,072 of its product, the global one skipped
    skipping["skip_policies"] = []
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert [p.partition(": ")[0] for p in info.value.problems] == ["apis[1].policies"]
    assert "API 'b' tests 4,097 conditions" in info.value.problems[0]


async def test_the_management_api_refuses_an_api_or_a_product_past_the_limit(
    upstream: UpstreamServer, tmp_path: Path
) -> None:
    with managed_gateway({"apis": [api("echo", "/ws/echo", upstream)]}, tmp_path / "state.json") as managed:
        async with managed.http() as http:
            big = api("big", "/ws/big", upstream, policies=[_choose(1024, "equals")] * 5)
            answer = await http.post("apis", json=big)
            assert answer.status_code == 422, answer.text
            assert answer.json()["problems"][0].startswith("policies: API 'big' tests 5,120 conditions")
            assert (await http.get("apis/big")).status_code == 404
            for name in ("p1", "p2"):
                product = {"name": name, "apis": ["echo"], "subscription_required": False,
                           "policies": [_choose(1024)] * 3}  # fmt: skip
                answer = await http.post("products", json=product, params={"force": "true"})
                if name == "p1":
                    assert answer.status_code == 201, answer.text
            assert answer.status_code == 422, answer.text
            assert "API 'echo' tests 6,144 conditions" in answer.json()["problems"][0], answer.json()
            assert (await http.get("products/p2")).status_code == 404
        async with await connect(managed.url("/ws/echo")) as ws:
            await ws.send("served")
            assert await ws.recv() == "served"
