"""Configured regular expressions meet client values in linear time (RE2), whatever the pattern.

With Python's backtracking ``re`` each pathological case below runs for longer than the suite's
timeout (``(a+)+$`` on 40 ``a`` and a ``!`` takes 2**40 steps), holding the worker's event loop: no
connection on it is served meanwhile. The end-to-end test shows the gateway answering the next
handshake after such a value.
"""

from __future__ import annotations

import asyncio

import pytest
from websockets.exceptions import InvalidStatus

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.safe_regex import compile_regex
from asgi_ws_gateway.standalone import not_found
from support.clients import connect
from support.configs import build_config
from support.policies import build, context, denied, problems
from support.servers import UvicornFactory
from support.upstream import UpstreamServer

EVIL = [r"(a+)+$", r"(a|a)*$", r"(a|aa)+$", r"(.*a){25}$", r"^(a?){40}a{40}$", r"(\w+\s?)+$"]


@pytest.mark.parametrize("pattern", EVIL)
def test_a_pattern_that_backtracks_exponentially_in_re_is_linear_here(pattern: str) -> None:
    compiled = compile_regex(pattern)
    evil = "a" * 100_000 + "!"
    assert compiled.fullmatch(evil) is None  # what a check-header pattern does
    assert (compiled.search(evil) is None) == (pattern != r"(a|a)*$")  # that one matches "" at the end


@pytest.mark.parametrize(
    ("pattern", "what"),
    [(r"(a)\1", "invalid escape sequence"), (r"(?=a)b", "invalid perl operator"), (r"(?<!a)b", "invalid perl"),
     (r"a\Z", "invalid escape sequence"), (r"(", "missing )"), (r"a{2000}", "invalid repetition size")],
)  # fmt: skip
def test_what_re2_cannot_match_in_linear_time_is_refused_with_the_reason(pattern: str, what: str) -> None:
    with pytest.raises(ValueError, match="not a regular expression RE2 accepts") as refused:
        compile_regex(pattern)
    assert what in str(refused.value)
    found = problems({"check-header": {"header": "X", "pattern": pattern}})
    assert found[0].startswith("apis[0].policies[0].check-header.pattern: not a regular expression RE2 accepts")
    found = problems({"choose": {"when": [{"if": {"ref": "header.x", "matches": pattern}, "policies": []}]}})
    assert any("matches" in problem and "RE2" in problem for problem in found), found


def test_case_and_anchors() -> None:
    assert compile_regex("app-[0-9]+", ignore_case=True).fullmatch("APP-12") is not None
    assert compile_regex("app-[0-9]+").fullmatch("APP-12") is None
    assert compile_regex("^10\\.").search("10.0.0.1") is not None
    assert compile_regex("a$").search("a\n") is None  # $ is the end of the text, not before a final newline


async def test_a_pathological_pattern_in_a_policy_denies_at_once() -> None:
    policy = build({"check-header": {"header": "X-Client", "pattern": "(a+)+$"}})
    denial = await denied(policy.apply(context(headers=[("X-Client", "a" * 8000 + "!")])))
    assert (denial.status, denial.reason) == (401, "header_check")


async def test_the_worker_goes_on_serving_after_a_client_sends_a_value_made_to_backtrack(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer
) -> None:
    config = build_config(upstream, api={"policies": [{"check-header": {"header": "X-Client", "pattern": "(a+)+$"}}]})
    server = uvicorn_server(WebSocketGateway(not_found, config=config))
    with pytest.raises(InvalidStatus) as refused:
        await connect(server.url("/ws/echo"), additional_headers={"X-Client": "a" * 4000 + "!"})
    assert refused.value.response.status_code == 401
    async with await connect(server.url("/ws/echo"), additional_headers={"X-Client": "aaa"}) as ws:
        await ws.send("still here")
        assert await asyncio.wait_for(ws.recv(), 5) == "still here"


@pytest.mark.parametrize("pattern", [r"(?s)a.{1000}x", r"(a|b|c){1,1000}z", r"a.{200}x", r"(?i)[a-z]{2}.{300}"])
def test_a_pattern_whose_program_is_too_large_is_refused_by_field_path(pattern: str) -> None:
    """Linear, but with a factor the program's size sets: ``(a|b|c){1,1000}z`` took 400 ms on one 8 KiB
    header, and a hundred such conditions held a handshake (and its worker) for 7.6 s."""
    with pytest.raises(ValueError, match="too large a regular expression: RE2 compiles it to"):
        compile_regex(pattern)
    found = problems({"check-header": {"header": "X", "pattern": pattern}})
    assert found[0].startswith("apis[0].policies[0].check-header.pattern: too large a regular expression"), found
    found = problems({"choose": {"when": [{"if": {"ref": "header.x", "matches": pattern}, "policies": []}]}})
    assert any("matches" in problem and "too large" in problem for problem in found), found


@pytest.mark.parametrize(
    "pattern",
    [r"^[A-Za-z0-9_-]{1,64}$", r"[a-z]{1,255}", r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
     r"(?i)^https://([a-z0-9-]+\.)*example\.com(:[0-9]{1,5})?$", r"^Bearer [A-Za-z0-9._~+/-]+=*$"],
)  # fmt: skip
def test_the_patterns_policies_use_are_well_within_the_bound(pattern: str) -> None:
    compile_regex(pattern)
