"""Templates render within a budget: a value the client chooses, written many times by one template
(``"{header.x-a}" * 680``), is never built past what its sink can send (pure logic and in-process
policies; tests/test_attack_template_amplification.py goes through real uvicorn)."""

from __future__ import annotations

import asyncio
import json
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asgi_ws_gateway.errors import DropMessage, HandshakeDenied
from asgi_ws_gateway.messages.context import ConnectionContext, ErrorReply, WsMessage, render_json_template
from asgi_ws_gateway.messages.pipeline import MessagePipeline
from asgi_ws_gateway.policies.build import GatewayPolicies, load_config
from asgi_ws_gateway.relay.stats import RelayStats
from asgi_ws_gateway.state.memory import MemoryState
from asgi_ws_gateway.templates import MAX_KEY_LENGTH, Template, TemplateTooLarge
from asgi_ws_gateway.upstream.checks import (
    MAX_UPSTREAM_HEAD,
    MAX_UPSTREAM_HEADER,
    MAX_UPSTREAM_URL,
    check_upstream_request,
)
from support.policies import API, build, context, denied

LONG = "v" * 8000
"""A header value as long as a server passes (8 KiB a line under websockets-sansio)."""
REPEATED = "{header.x-a}" * 680
"""8,160 characters of template: within set-header's 8,192; 5.4 MB once rendered with :data:`LONG`."""
BOUND = 1024 * 1024
"""Bytes one render may allocate at most here: what was built before was 5 to 87 MB."""


class _Values:
    """A lookup giving each reference its own value (missing: None)."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values

    def lookup(self, namespace: str, path: tuple[str, ...]) -> object | None:
        return self.values.get(path[0])


@contextmanager
def _peak() -> Iterator[list[int]]:
    """The peak of traced allocations in the block, in bytes (``[0]`` once it ends)."""
    found = [0]
    tracemalloc.start()
    try:
        yield found
        found[0] = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


_PARTS = st.lists(
    st.one_of(st.sampled_from(["{header.a}", "{header.b}", "{query.c|dflt}", "{cookie.d}"]),
              st.text(alphabet="xyz:%-", min_size=1, max_size=5)),
    max_size=12,
)  # fmt: skip
_VALUES = st.fixed_dictionaries({name: st.text(alphabet="ab:%\u00e9", max_size=40) for name in "abd"})


@given(parts=_PARTS, values=_VALUES, limit=st.integers(min_value=0, max_value=300))
def test_a_limit_changes_nothing_but_whether_a_text_too_long_is_built(
    parts: list[str], values: dict[str, str], limit: int
) -> None:
    """With a limit, render gives the text it gives without one, or raises when (and only when) that
    text is longer than the limit; a limit's key alike."""
    template, lookup = Template("".join(parts)), _Values(values)
    _same_or_too_long(template.render(lookup), lambda: template.render(lookup, limit=limit), limit)
    key = template.render_key(lookup, limit=10**9)
    _same_or_too_long(key, lambda: template.render_key(lookup, limit=limit), limit)


def _same_or_too_long(full: str, bounded: Callable[[], str], limit: int) -> None:
    if len(full) <= limit:
        assert bounded() == full
        return
    with pytest.raises(TemplateTooLarge) as caught:
        bounded()
    assert caught.value.limit == limit


def test_a_value_written_many_times_is_not_built_past_the_limit() -> None:
    """The render stops at the part that passes the limit: the 5.4 MB text is never joined."""
    template = Template(REPEATED)
    lookup = _Values({"x-a": LONG})
    with _peak() as peak, pytest.raises(TemplateTooLarge):
        template.render(lookup, limit=MAX_UPSTREAM_HEADER)
    assert peak[0] < BOUND, f"{peak[0]} bytes allocated"
    assert template.render(_Values({"x-a": "v"}), limit=MAX_UPSTREAM_HEADER) == "v" * 680


def test_a_limit_key_past_its_bound_refuses_the_handshake() -> None:
    """A limit's key is digested, but it was built first: 5.4 MB for each handshake."""
    with _peak() as peak, pytest.raises(TemplateTooLarge) as caught:
        Template(REPEATED).render_key(_Values({"x-a": LONG}))
    assert caught.value.status == 400 and caught.value.limit == MAX_KEY_LENGTH
    assert peak[0] < BOUND


async def test_a_rate_limit_keyed_by_a_repeated_header_refuses_a_long_one() -> None:
    policy = build({"rate-limit-by-key": {"key": REPEATED, "limit": 5, "window": 60}})
    denial = await denied(policy.apply(context(headers=[("x-a", LONG)])))
    assert denial.status == 400
    await policy.apply(context(headers=[("x-a", "tenant")]))  # counted as before


async def test_set_header_past_a_header_value_s_bound_is_a_431() -> None:
    """8 such policies sent 43.5 MB upstream for one 8 KB header; each now stops at 8 KiB."""
    policy = build({"set-header": {"header": "X-Amp", "value": REPEATED}})
    handshake = context(headers=[("x-a", LONG)])
    with _peak() as peak:
        denial = await denied(policy.apply(handshake))
    assert (denial.status, denial.reason) == (431, "headers_too_large")
    assert "X-Amp" in denial.detail and str(MAX_UPSTREAM_HEADER) in denial.detail
    assert peak[0] < BOUND
    assert not handshake.upstream  # nothing recorded for the upstream


async def test_set_header_within_the_bound_is_sent() -> None:
    policy = build({"set-header": {"header": "X-Amp", "value": "{header.x-a}" * 2}})
    handshake = context(headers=[("x-a", "v" * 4091)])  # "x-amp: " and 8,182 characters: a line of 8,191 bytes
    await policy.apply(handshake)
    request = handshake.build_request(API, API.upstreams[0])
    assert ("x-amp", "v" * 8182) in request.headers


@pytest.mark.parametrize(
    "entry",
    [
        {"set-query-parameter": {"parameter": "p", "value": REPEATED}},
        {"rewrite-uri": {"template": "/r/" + "{header.x-a}" * 3}},
    ],
    ids=["set-query-parameter", "rewrite-uri"],
)
async def test_a_url_value_past_the_url_s_bound_is_a_400(entry: dict[str, Any]) -> None:
    with _peak() as peak:
        denial = await denied(build(entry).apply(context(headers=[("x-a", LONG)])))
    assert (denial.status, denial.reason) == (400, "bad_request")
    assert f"longer than {MAX_UPSTREAM_URL} characters" in denial.detail
    assert peak[0] < BOUND


def test_an_upstream_head_past_its_bound_is_a_431() -> None:
    """Each header within its bound, eight of them together past the head's."""
    headers = [(f"x-amp-{i}", "v" * (MAX_UPSTREAM_HEADER - 11)) for i in range(8)]  # each line 8,192 bytes
    with pytest.raises(HandshakeDenied) as caught:
        check_upstream_request("ws://up:9000/a", headers, in_process=False)
    assert (caught.value.status, caught.value.reason) == (431, "headers_too_large")
    assert f"at most {MAX_UPSTREAM_HEAD}" in caught.value.detail
    check_upstream_request("ws://up:9000/a", headers[:7], in_process=False)  # 57 KB: sent


async def test_eight_set_headers_refuse_the_handshake_before_any_request_is_built() -> None:
    """The finding's API: 8 set-header policies writing one 8 KB header 680 times each."""
    policies = [build({"set-header": {"header": f"X-Amp-{i}", "value": REPEATED}}) for i in range(8)]
    handshake = context(headers=[("x-a", LONG)])
    with _peak() as peak, pytest.raises(HandshakeDenied) as caught:
        for policy in policies:
            await policy.apply(handshake)
    assert caught.value.status == 431
    assert peak[0] < BOUND


def _pipeline(message_policies: dict[str, Any], headers: list[tuple[str, str]], **api: Any) -> tuple[
    MessagePipeline, list[str | bytes]
]:  # fmt: skip
    """The inbound pipeline of a connection to an API with ``message_policies``, and what the client is sent."""
    sent: list[str | bytes] = []

    class Controls:
        async def close(self, client_code: int, client_reason: str, upstream_code: int, upstream_reason: str) -> None:
            pass

        async def send_to_client(self, data: str | bytes) -> bool:
            sent.append(data)
            return True

        async def send_to_upstream(self, data: str | bytes) -> bool:
            return True

        def start(self, task: Any) -> None:
            pass

    config = load_config({"apis": [{"name": "chat", "path": "/ws/chat", "upstreams": ["ws://127.0.0.1:9/"],
                                    "message_policies": message_policies, **api}]})  # fmt: skip
    connection = ConnectionContext(context("/ws/chat", headers=headers), RelayStats(), Controls())
    chosen = GatewayPolicies(config, store=MemoryState()).message_policies(connection.handshake)
    assert chosen is not None
    pipeline, _ = chosen.attach(connection)
    assert pipeline is not None
    return pipeline, sent


_FIELDS = {"inbound": [{"transform-message": {"set": {f"f{i}": REPEATED for i in range(16)}}}]}
"""The finding's message policy: 16 fields, each one 8 KB header 680 times (87 MB a message)."""


def test_transform_message_past_max_message_size_is_dropped_as_too_big_unbuilt() -> None:
    """The 7-byte message is answered as the pipeline answers any message too big once rewritten."""
    pipeline, sent = _pipeline(_FIELDS, [("x-a", LONG)])
    with _peak() as peak:
        answer = pipeline.process_now('{"m":1}', 7)  # the policies' part: the answer is sent after
    assert answer is not None and not isinstance(answer, str | bytes)
    assert asyncio.run(answer) is None
    # The budget is the API's max_message_size (1 MiB) of values looked up (each lookup of a header
    # decodes it anew), then the render stops: 87 MB before.
    assert peak[0] < 2 * BOUND, f"{peak[0]} bytes allocated for one message"
    reply = json.loads(sent[0])
    assert reply["error"] == "message_too_big" and reply["policy"] == "transform-message"
    assert reply["detail"] == "the message as rewritten is larger than 1048576 bytes"


def test_transform_message_within_max_message_size_sets_its_fields() -> None:
    pipeline, sent = _pipeline(_FIELDS, [("x-a", "v")])
    out = asyncio.run(pipeline.process('{"m":1}', 7))
    assert isinstance(out, str) and json.loads(out)["f15"] == "v" * 680 and not sent


def test_transform_message_s_fields_share_the_api_s_max_message_size() -> None:
    """Each field within it, together past it: the message is too big whatever else it holds."""
    fields = {"inbound": [{"transform-message": {"set": {"a": "{header.x-a}", "b": "{header.x-a}!"}}}]}
    pipeline, sent = _pipeline(fields, [("x-a", "v" * 3000)], max_message_size=5000)
    assert asyncio.run(pipeline.process("{}", 2)) is None
    assert json.loads(sent[0])["error"] == "message_too_big"
    pipeline, sent = _pipeline(fields, [("x-a", "v" * 2000)], max_message_size=5000)
    assert asyncio.run(pipeline.process("{}", 2)) is not None and not sent


def test_an_error_reply_past_max_message_size_is_the_default_one() -> None:
    """A configured reply writing a client's value many times is not built: the default is sent."""
    policies = {"inbound": [{"validate-message": {}}],
                "error_reply": {"format": "text", "template": "{error.reason} " + REPEATED}}  # fmt: skip
    pipeline, sent = _pipeline(policies, [("x-a", LONG)])
    answer = pipeline.process_now("not json", 8)
    assert answer is not None and not isinstance(answer, str | bytes)
    with _peak() as peak:
        assert asyncio.run(answer) is None
    assert peak[0] < 2 * BOUND  # the event loop's own allocations: ~1 MB
    assert json.loads(sent[0])["error"] == "invalid_json"
    pipeline, sent = _pipeline(policies, [("x-a", "v")])
    assert asyncio.run(pipeline.process("not json", 8)) is None
    assert sent[0] == "invalid_json " + "v" * 680


def test_a_json_template_s_strings_share_one_limit() -> None:
    compiled = ErrorReply({"a": "{header.x-a}", "b": ["{header.x-a}-"]}).json
    lookup = _Values({"x-a": "v" * 10})
    assert render_json_template(compiled, lookup, limit=21) == {"a": "v" * 10, "b": ["v" * 10 + "-"]}
    with pytest.raises(TemplateTooLarge) as caught:
        render_json_template(compiled, lookup, limit=20)
    assert caught.value.limit == 20


def _warnings(policy: dict[str, Any], kind: str = "policies") -> list[str]:
    api: dict[str, Any] = {"name": "chat", "path": "/ws/chat", "upstreams": ["ws://127.0.0.1:9/"]}
    api[kind] = [policy] if kind == "policies" else {"inbound": [policy]}
    return GatewayPolicies(load_config({"apis": [api]}), store=MemoryState()).warnings


WARNED: dict[str, tuple[Callable[[str], dict[str, Any]], str]] = {
    "set-header": (lambda v: {"set-header": {"header": "X-A", "value": v}}, "policies"),
    "set-query-parameter": (lambda v: {"set-query-parameter": {"parameter": "a", "value": v}}, "policies"),
    "transform-message": (lambda v: {"transform-message": {"set": {"a": {"b": [v]}}}}, "message_policies"),
}


@pytest.mark.parametrize("entry, kind", WARNED.values(), ids=WARNED.keys())
def test_a_template_repeating_a_client_value_is_warned_about(entry: Callable[[str], dict[str, Any]], kind: str) -> None:
    """The management API took such an API (201) and ``check`` passed it, both without a word."""
    (warning,) = _warnings(entry(REPEATED), kind)
    assert "writes {header.x-a} 680 times" in warning
    assert _warnings(entry("{header.x-a}-{query.b}-{jwt.sub}{jwt.sub}{jwt.sub}"), kind) == []


def test_drop_message_is_what_the_transform_raises() -> None:
    """The too-big drop is the pipeline's own: counted and answered as ``message_too_big``."""
    pipeline, _ = _pipeline(_FIELDS, [("x-a", LONG)])
    name, handler = pipeline.handlers[0]
    with pytest.raises(DropMessage) as caught:
        handler(WsMessage('{"m":1}', 7, "inbound", pipeline.connection))
    assert (name, caught.value.reason) == ("transform-message", "message_too_big")
