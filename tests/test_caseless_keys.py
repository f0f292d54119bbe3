"""A limit keyed by a value a case-insensitive gate admitted counts every spelling it admitted as one.

``check-header: {header: X-Tenant, values: [acme], ignore_case: true}`` before
``rate-limit-by-key: {key: "{header.x-tenant}", limit: 1}`` admitted ``ACME``, ``Acme``, ``aCmE``...
each on a counter of its own: 16 handshakes, 16 x 101 against a limit of one (2^n counters for n
letters). The gate tells the handshake which values it admitted whatever their case, and keys count
them by their ``casefold``; the upstream and conditions still read the client's spelling. Also RE2
``(?i)`` patterns (``check-header``, ``choose`` and claim conditions), and ``check-origin``'s Origin.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asgi_ws_gateway.errors import HandshakeDenied
from asgi_ws_gateway.forwarded import Networks
from asgi_ws_gateway.handshake.context import HandshakeContext
from asgi_ws_gateway.handshake.request_view import RequestView
from asgi_ws_gateway.messages.context import ConnectionContext
from asgi_ws_gateway.policies.base import MatchSettings
from asgi_ws_gateway.policies.build import load_policies
from asgi_ws_gateway.relay.stats import RelayStats
from asgi_ws_gateway.templates import Template
from support.configs import api_entry
from support.jwts import HS_SECRET, token
from support.policies import build

TENANT = Template("{header.x-tenant}")
LIMIT = {"rate-limit-by-key": {"key": "{header.x-tenant}", "limit": 1, "window": 3600}}


def _context(headers: Sequence[tuple[str, str]] = (), query: str = "") -> HandshakeContext:
    """A handshake as a server hands it over: header values are bytes, read as Latin-1 (not UTF-8)."""
    scope = {
        "type": "websocket",
        "path": "/ws/echo",
        "query_string": query.encode("ascii"),
        "headers": [(b"host", b"gw.test")] + [(n.lower().encode(), v.encode("latin-1")) for n, v in headers],
        "client": ("127.0.0.1", 50000),
        "scheme": "ws",
        "subprotocols": [],
    }
    return HandshakeContext("echo", RequestView(scope, {}, Networks([])))


def _admitted(entry: dict[str, Any], context: HandshakeContext) -> bool:
    """Whether the policy ``entry`` admits the handshake (run to its end: these policies use no store)."""
    try:
        asyncio.run(build(entry).apply(context))
    except HandshakeDenied:
        return False
    return True


def _tenant_key(entry: dict[str, Any], value: str) -> str | None:
    """The key ``{header.x-tenant}`` renders after ``entry`` checked ``value`` (None: refused)."""
    context = _context([("X-Tenant", value)])
    return TENANT.render_key(context) if _admitted(entry, context) else None


_VARIANTS = {"k": "\u212a", "s": "\u017f", "ss": "\u00df", "\u00b5": "\u03bc", "\u00e5": "\u212b"}
"""Spellings of a letter that case folding takes as it beyond ``upper``/``lower``: the Kelvin sign,
the long s, the sharp s, the micro sign and Greek mu, the angstrom sign."""
SLOW = settings(deadline=None)  # a policy built and run per example: under load, past the 200 ms default
_LETTERS = "acmeksz\u00df\u00b5\u00e5\u00c0\u00ff9-"


@st.composite
def _spellings(draw: st.DrawFn, value: str, latin1: bool) -> str:
    """``value`` with each letter in some case (or a caseless equivalent); only Latin-1 characters
    when ``latin1`` (a header value is read as Latin-1: no other character reaches a check)."""
    out = []
    for part in re.findall("ss|.", value):
        options = {part, part.upper(), part.lower(), part.swapcase(), part.title(), part.casefold()}
        if part in _VARIANTS:
            options.add(_VARIANTS[part])
        if latin1:
            options = {option for option in options if all(ord(c) < 256 for c in option)}
        out.append(draw(st.sampled_from(sorted(options))))
    return "".join(out)


@SLOW
@given(st.data(), st.text(_LETTERS, min_size=1, max_size=6))
def test_every_spelling_a_caseless_list_admits_is_the_listed_values_key(data: st.DataObject, listed: str) -> None:
    """``ignore_case`` compares by ``casefold`` (``STRASSE`` is ``straße``), and every spelling admitted
    renders the key the listed value renders."""
    entry = {"check-header": {"header": "X-Tenant", "values": [listed], "ignore_case": True}}
    spelling = data.draw(_spellings(listed, latin1=True))
    canonical = _tenant_key(entry, listed)
    key = _tenant_key(entry, spelling)
    assert (key is not None) == (spelling.casefold() == listed.casefold())
    assert key is None or key == canonical


@pytest.mark.parametrize(
    "check", [{"pattern": "^{}$", "ignore_case": True}, {"pattern": "(?i)^{}$"}, {"pattern": "^(?i:{})$"}]
)
@SLOW
@given(data=st.data(), listed=st.text(_LETTERS, min_size=1, max_size=6))
def test_every_spelling_a_caseless_pattern_admits_is_one_key(
    check: dict[str, Any], data: st.DataObject, listed: str
) -> None:
    """``ignore_case``, or ``(?i)`` in the pattern itself: what RE2 takes as one value is one key."""
    fields = {**check, "pattern": check["pattern"].format(re.escape(listed))}
    entry = {"check-header": {"header": "X-Tenant", **fields}}
    first, second = data.draw(_spellings(listed, latin1=True)), data.draw(_spellings(listed, latin1=True))
    keys = [_tenant_key(entry, first), _tenant_key(entry, second)]
    assert keys[0] is None or keys[1] is None or keys[0] == keys[1]


@SLOW
@given(st.data(), st.text(_LETTERS, min_size=1, max_size=6))
def test_every_spelling_a_caseless_condition_admits_is_one_key(data: st.DataObject, listed: str) -> None:
    """A ``choose`` condition ``matches: (?i)...`` on a query parameter (UTF-8: the Kelvin sign, the long s
    reach it): two spellings it holds for render one key."""
    condition = MatchSettings(matches=f"(?i)^{re.escape(listed)}$").condition("query.t")
    template = Template("{query.t}")
    keys = []
    for spelling in (data.draw(_spellings(listed, latin1=False)), data.draw(_spellings(listed, latin1=False))):
        context = _context(query="t=" + "".join(f"%{b:02X}" for b in spelling.encode()))
        if condition.holds(context):
            keys.append(template.render_key(context))
    assert len(set(keys)) <= 1


async def test_sixteen_spellings_against_a_limit_of_one_admit_one() -> None:
    """The hunter's configuration, in process: 1 admitted, 15 refused (16 admitted before)."""
    gate = {"check-header": {"header": "X-Tenant", "values": ["acme"], "ignore_case": True}}
    policies = load_policies({"apis": [api_entry(policies=[gate, LIMIT])]})
    statuses: Counter[int] = Counter()
    for letters in itertools.product(*((c, c.upper()) for c in "acme")):
        context = policies.context("echo", _context([("X-Tenant", "".join(letters))]).request.scope, {})
        try:
            await policies.run(context)
            statuses[101] += 1
        except HandshakeDenied as denial:
            statuses[denial.status] += 1
    assert statuses == {101: 1, 429: 15}


def test_the_sharp_s_and_the_kelvin_sign_are_their_letters() -> None:
    """``ß`` is ``SS`` to a caseless list (``lower`` left it ``ß``: refused); the Kelvin sign, which RE2's
    ``(?i)`` takes for ``k``, is one key with ``k`` (as sent, it was another)."""
    strasse = {"check-header": {"header": "X-Tenant", "values": ["stra\u00dfe"], "ignore_case": True}}
    assert _tenant_key(strasse, "STRASSE") == _tenant_key(strasse, "stra\u00dfe") == "strasse"
    condition = MatchSettings(matches="(?i)^kilo$").condition("query.t")
    keys = set()
    for query in ("t=kilo", "t=KILO", "t=%E2%84%AAilo"):  # the last: U+212A KELVIN SIGN, then "ilo"
        context = _context(query=query)
        assert condition.holds(context)
        keys.add(Template("{query.t}").render_key(context))
    assert keys == {"kilo"}


def test_the_upstream_and_conditions_read_the_clients_spelling() -> None:
    """Only keys fold: the header forwarded, a template sent upstream, a condition see ``ACME``."""
    context = _context([("X-Tenant", "ACME")])
    assert _admitted({"check-header": {"header": "X-Tenant", "values": ["acme"], "ignore_case": True}}, context)
    assert context.lookup("header", ("x-tenant",)) == "ACME"
    assert TENANT.render(context) == "ACME"
    assert MatchSettings(equals="ACME").condition("header.x-tenant").holds(context)
    assert context.request.header("x-tenant") == "ACME"
    assert TENANT.render_key(context) == "acme"


@pytest.mark.parametrize(
    "entry",
    [
        None,
        {"check-header": {"header": "X-Tenant", "values": ["acme", "ACME"]}},
        {"check-header": {"header": "X-Tenant", "pattern": "^[A-Za-z]+$"}},
        {"check-header": {"header": "X-Tenant", "values": ["acme", "ACME"], "pattern": "(?i)^acme$"}},
        {"check-header": {"header": "X-Other", "values": ["acme"], "ignore_case": True}},
    ],
)
def test_a_case_sensitive_gate_keeps_spellings_apart(entry: dict[str, Any] | None) -> None:
    """A gate that tells ``ACME`` from ``acme`` (no gate, a case-sensitive list, a pattern without
    ``(?i)``, a list that decides with a ``(?i)`` pattern beside it, a check of another header) keeps
    them two keys."""
    keys = set()
    for spelling in ("acme", "ACME"):
        context = _context([("X-Other", "acme"), ("X-Tenant", spelling)])
        if entry is not None:
            assert _admitted(entry, context)
        keys.add(TENANT.render_key(context))
    assert keys == {"acme", "ACME"}


def test_a_claim_matched_case_insensitively_is_one_key() -> None:
    """``validate-jwt`` with ``claims: [{claim: tenant, matches: "(?i)^acme$"}]``: ``{jwt.tenant}`` of
    ``ACME`` and ``acme`` is one key."""
    claims = [{"claim": "tenant", "matches": "(?i)^acme$"}]
    settings = {"algorithms": ["HS256"], "secret": HS_SECRET, "issuer": "https://issuer.test", "audience": "chat"}
    policy = build({"validate-jwt": {**settings, "claims": claims}})
    keys = set()
    for tenant in ("ACME", "acme", "AcMe"):
        context = _context([("Authorization", f"Bearer {token(tenant=tenant)}")])
        asyncio.run(policy.apply(context))
        keys.add(Template("{jwt.tenant}").render_key(context))
    assert keys == {"acme"}


def test_a_message_limits_key_counts_the_spellings_as_one() -> None:
    """``rate-limit-messages`` keyed by the header renders its key on the connection: one key too."""
    keys = set()
    for spelling in ("ACME", "acme", "aCMe"):
        context = _context([("X-Tenant", spelling)])
        assert _admitted({"check-header": {"header": "X-Tenant", "pattern": "(?i)^acme$"}}, context)
        connection = ConnectionContext(context, RelayStats(), cast(Any, None))  # lookups use no control
        keys.add(TENANT.render_key(connection))
    assert keys == {"acme"}


def test_the_host_a_caseless_check_admitted_is_one_request_host_key() -> None:
    """``{request.host}`` reads the ``Host`` header a check admitted: one key for its spellings."""
    keys = set()
    for host in ("gw.test", "GW.TEST", "Gw.Test"):
        context = _context()
        scope = context.request.scope
        scope["headers"] = [(b"host", host.encode())]
        context = HandshakeContext("echo", RequestView(scope, {}, Networks([])))
        assert _admitted({"check-header": {"header": "Host", "values": ["gw.test"], "ignore_case": True}},
                               context)  # fmt: skip
        keys.add(Template("{request.host}").render_key(context))
    assert keys == {"gw.test"}


def test_an_origin_check_origin_admitted_is_one_key() -> None:
    """``check-origin`` compares an Origin in lower case and without its default port: the key too."""
    keys = set()
    for origin in ("https://app.example.com", "HTTPS://APP.Example.COM", "https://app.example.com:443"):
        context = _context([("Origin", origin)])
        assert _admitted({"check-origin": {"allowed": ["https://app.example.com"]}}, context)
        keys.add(Template("{header.origin}").render_key(context))
    assert keys == {"https://app.example.com"}
    other_port = _context([("Origin", "https://app.example.com:8443")])
    assert Template("{header.origin}").render_key(other_port) == "https://app.example.com:8443"


def _chosen_key_warnings(policies: list[dict[str, Any]], **api: Any) -> list[str]:
    document = {"apis": [api_entry(path="/ws/{room}", policies=policies, **api)]}
    return [w for w in load_policies(document).warnings if "which the client chooses" in w]


CHECK = {"check-header": {"header": "X-Tenant", "values": ["acme", "globex"]}}
CASELESS = {"check-header": {"header": "X-Tenant", "values": ["acme"], "ignore_case": True}}
PATTERN = {"check-header": {"header": "X-Tenant", "pattern": "(?i)^acme$"}}


@pytest.mark.parametrize(
    "policies",
    [
        [CHECK, LIMIT],
        [CASELESS, LIMIT],
        [CASELESS, {"quota-by-key": {"key": "{header.x-tenant}", "limit": 5}}],
        [CHECK, {"choose": {"when": [{"if": {"ref": "header.x-debug", "exists": True}, "policies": [LIMIT]}]}}],
        [{"choose": {"when": [{"if": {"ref": "header.x-tenant", "in": ["acme"]}, "policies": [LIMIT]}]}}],
        [{"check-header": {"header": "Host", "values": ["gw.test"], "ignore_case": True}},
         {"rate-limit-by-key": {"key": "{request.host}", "limit": 1, "window": 60}}],
    ],
)  # fmt: skip
def test_a_limit_behind_a_list_check_is_not_warned_about(policies: list[dict[str, Any]]) -> None:
    """A list check of either case mode bounds the keys (a caseless one's spellings are one key): the
    advice the warning gave, followed, no longer warns."""
    assert _chosen_key_warnings(policies) == []


@pytest.mark.parametrize(
    ("policies", "where"),
    [
        ([LIMIT], "apis[0].policies[0]"),
        ([PATTERN, LIMIT], "apis[0].policies[1]"),  # a pattern bounds nothing in general (acme.*)
        ([LIMIT, CHECK], "apis[0].policies[0]"),  # checked after it counted
        ([{"choose": {"when": [{"if": {"ref": "header.x-debug", "exists": True}, "policies": [CHECK]}]}}, LIMIT],
         "apis[0].policies[1]"),  # a check in one branch: not for a client of the other
        ([{"choose": {"when": [{"if": {"ref": "header.x-tenant", "matches": "(?i)^acme$"}, "policies": [LIMIT]}]}}],
         "apis[0].policies[0].choose.when[0].policies[0]"),
        ([{"check-header": {"header": "X-Other", "values": ["a"]}}, LIMIT], "apis[0].policies[1]"),
        ([{"check-header": {"header": "Cookie", "values": ["a=1"]}},
          {"rate-limit-by-key": {"key": "{header.cookie}", "limit": 1, "window": 60}}], "apis[0].policies[1]"),
    ],
)  # fmt: skip
def test_a_limit_no_list_check_bounds_first_is_warned_about(policies: list[dict[str, Any]], where: str) -> None:
    """No list check before it, on every path to it: warned, at the limit's key."""
    warnings = _chosen_key_warnings(policies)
    assert len(warnings) == 1 and warnings[0].startswith(f"{where}.")
    assert "which the client chooses" in warnings[0]


def test_only_the_references_no_check_bounds_are_named() -> None:
    entry = {"rate-limit-by-key": {"key": "{header.x-tenant}:{query.device}", "limit": 1, "window": 60}}
    (warning,) = _chosen_key_warnings([CHECK, entry])
    assert "keyed by {query.device}, which" in warning


def test_a_message_limit_behind_a_list_check_is_not_warned_about() -> None:
    """Every handshake policy runs before a message limit: a list check among them bounds its key."""
    messages = {"inbound": [{"rate-limit-messages": {"key": "{header.x-tenant}", "messages": 5, "window": 1}}]}
    assert _chosen_key_warnings([CASELESS], message_policies=messages) == []
    (warning,) = _chosen_key_warnings([PATTERN], message_policies=messages)
    assert warning.startswith("apis[0].message_policies.inbound[0].rate-limit-messages.key: keyed by {header.x-tenant}")


def test_a_global_check_an_api_skips_bounds_nothing_for_it() -> None:
    """A global list check this API opts out of (``skip_policies``) bounds nothing for its limit."""
    checked = {**CHECK["check-header"], "name": "tenant-list"}
    document = {
        "policies": [{"check-header": checked}],
        "apis": [api_entry(policies=[LIMIT]), api_entry(name="b", path="/ws/b", policies=[LIMIT],
                                                          skip_policies=["tenant-list"])],
    }  # fmt: skip
    warnings = [w for w in load_policies(document).warnings if "which the client chooses" in w]
    assert len(warnings) == 1 and warnings[0].startswith("apis[1].policies[0].rate-limit-by-key.key")


def test_a_global_limit_unbounded_for_every_api_is_warned_about_once() -> None:
    document = {"policies": [LIMIT], "apis": [api_entry(), api_entry(name="b", path="/ws/b")]}
    warnings = [w for w in load_policies(document).warnings if "which the client chooses" in w]
    assert len(warnings) == 1 and warnings[0].startswith("policies[0].rate-limit-by-key.key")


class _Values:
    """A context whose header ``x-tenant`` a case-insensitive gate admitted, and a cookie."""

    def lookup(self, namespace: str, path: tuple[str, ...]) -> object | None:
        from asgi_ws_gateway.templates import Caseless

        if namespace == "header":
            return Caseless("ACME")
        return "a%20b" if namespace == "cookie" else None


def test_only_a_limit_key_folds_a_value_a_url_or_header_carries_it_as_sent() -> None:
    """The spellings a gate took as one are one counter; a rewritten URL or a header keeps the client's."""
    from urllib.parse import quote

    from asgi_ws_gateway.templates import Template

    template = Template("/t/{header.x-tenant}/{cookie.c}")
    assert template.render_key(_Values()) == "/t/acme/a b"
    assert template.render(_Values(), escape=lambda text: quote(text, safe="")) == "/t/ACME/a%2520b"
    assert template.render(_Values()) == "/t/ACME/a%20b"
