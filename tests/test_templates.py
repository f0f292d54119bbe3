"""The template language and conditions: references, defaults, escaping, and what is refused."""

from __future__ import annotations

import re
from urllib.parse import unquote, unquote_plus

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asgi_ws_gateway.templates import (
    Caseless,
    Condition,
    Reference,
    Template,
    TemplateError,
    TemplateTooLarge,
    canonical_cookie,
    to_text,
)
from support.policies import context


def test_references_render_from_each_namespace() -> None:
    ctx = context(
        "/ws/chat/lobby",
        params={"room": "lobby"},
        headers=[("X-Tenant", "acme"), ("Cookie", "sid=abc; theme=dark")],
        query="page=2&page=2",  # identical copies: one value (differing ones: tests/test_ambiguous_values.py)
        client=("10.1.2.3", 4444),
    )
    ctx.claims = {"sub": "alice", "realm": {"roles": ["admin", "dev"]}, "admin": True}
    ctx.variables["tier"] = "gold"
    source = (
        "{jwt.sub}|{jwt.realm.roles}|{jwt.admin}|{header.x-tenant}|{header.X-Tenant}|{query.page}|"
        "{cookie.theme}|{path.room}|{client.ip}|{client.port}|{var.tier}|{api.name}|{request.path}|{request.host}"
    )
    assert Template(source).render(ctx) == (
        "alice|admin,dev|true|acme|acme|2|dark|lobby|10.1.2.3|4444|gold|chat|/ws/chat/lobby|gw.test"
    )


def test_missing_values_render_as_default_or_empty() -> None:
    ctx = context()
    assert Template("{header.x-tenant|public}/{jwt.sub}/{subscription.id|none}").render(ctx) == "public//none"


def test_literal_braces_and_escaping() -> None:
    ctx = context(params={"room": "a b/c"})
    assert Template("{{x}} /rooms/{path.room}").render(ctx, escape=lambda s: s.replace(" ", "%20")) == (
        "{x} /rooms/a%20b/c"
    )


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{jwt.sub", "unbalanced"),
        ("jwt.sub}", "unbalanced"),
        ("{os.environ}", "unknown namespace 'os'"),
        ("{client.mac}", "unknown key 'mac'"),
        ("{__import__('os')}", "is not a reference"),
        ("{}", "is not a reference"),
    ],
)
def test_malformed_templates_are_refused(source: str, message: str) -> None:
    with pytest.raises(TemplateError, match=re.escape(message)):
        Template(source)


def test_constant_template() -> None:
    assert Template("plain").is_constant
    assert [str(r) for r in Template("{jwt.a.b}{path.x}").references] == ["jwt.a.b", "path.x"]


@pytest.mark.parametrize(
    ("kwargs", "holds"),
    [
        ({"exists": True}, True),
        ({"exists": False}, False),
        ({"equals": "read chat:write"}, True),
        ({"not_equals": "x"}, True),
        ({"one_of": ("a", "read chat:write")}, True),
        ({"matches": re.compile(r"chat:\w+")}, True),
        ({"contains": "chat:write"}, True),
        ({"contains": "chat"}, False),
    ],
)
def test_conditions_on_a_scope_string(kwargs: dict[str, object], holds: bool) -> None:
    ctx = context()
    ctx.claims = {"scope": "read chat:write"}
    assert Condition(Reference.parse("jwt.scope"), **kwargs).holds(ctx) is holds  # type: ignore[arg-type]


def test_condition_on_missing_value_and_lists() -> None:
    ctx = context()
    ctx.claims = {"roles": ["admin", "dev"]}
    assert Condition(Reference.parse("jwt.roles"), contains="dev").holds(ctx)
    assert not Condition(Reference.parse("jwt.plan"), equals="free").holds(ctx)
    assert Condition(Reference.parse("jwt.plan"), exists=False).holds(ctx)
    assert Condition(Reference.parse("header.x-debug"), exists=False).holds(ctx)


class _Values:
    """A lookup of ``{v.a}``-style references from a plain dict (pure logic: no request needed)."""

    def __init__(self, values: dict[str, object]) -> None:
        self.values = values

    def lookup(self, namespace: str, path: tuple[str, ...]) -> object | None:
        return self.values.get(path[0])


_VALUE = st.one_of(st.none(), st.text(max_size=8))


@given(st.text(min_size=1, max_size=3).filter(lambda s: "{" not in s and "}" not in s), _VALUE, _VALUE, _VALUE, _VALUE)
def test_a_key_tells_different_values_apart_whatever_the_separator(
    separator: str, a1: str | None, b1: str | None, a2: str | None, b2: str | None
) -> None:
    """``{a}:{b}`` rendered ``x:y`` + ``z`` and ``x`` + ``y:z`` alike: two tenants shared one limit."""
    template = Template(f"{{var.a}}{separator}{{var.b}}")
    key1 = template.render_key(_Values({"a": a1, "b": b1}))
    key2 = template.render_key(_Values({"a": a2, "b": b2}))
    assert (key1 == key2) == ((a1 or "") == (a2 or "") and (b1 or "") == (b2 or ""))


def test_a_key_keeps_values_without_separators_as_they_were() -> None:
    """Counters kept in a store before keys were escaped still count these values."""
    template = Template("{var.tenant}:{var.user}")
    assert template.render_key(_Values({"tenant": "acme", "user": "alice"})) == "acme:alice"
    assert template.render_key(_Values({"tenant": "a:b", "user": "50%"})) == "a%3Ab:50%25"
    assert Template("{var.ip}").render_key(_Values({"ip": "2001:db8::1"})) == "2001:db8::1"


_KEY_TEXT = "%:-A3a|x\x1f~\u00e9"  # escape introducers, hex digits, separators: where collisions hide


@st.composite
def _key_templates(draw: st.DrawFn) -> tuple[str, list[str | None]]:
    """A template of 1-4 references ``{var.rN}`` (some with defaults), with or without text between
    them; and each reference's default (None: none)."""
    count = draw(st.integers(1, 4))
    source, defaults = draw(st.text(_KEY_TEXT, max_size=3)), []
    for n in range(count):
        default = draw(st.one_of(st.none(), st.text(_KEY_TEXT, max_size=2)))
        source += f"{{var.r{n}{'' if default is None else '|' + default}}}" + draw(st.text(_KEY_TEXT, max_size=3))
        defaults.append(default)
    return source, defaults


@given(_key_templates(), st.data())
def test_different_values_never_render_one_key_for_any_template(
    template_and_defaults: tuple[str, list[str | None]], data: st.DataObject
) -> None:
    """``{a}{b}`` rendered ``xyz`` for ``x`` + ``yz`` and ``xy`` + ``z``; ``{a}%25{b}`` rendered
    ``%25%25`` for ``%`` + nothing and nothing + ``%``: two tenants counted as one."""
    source, defaults = template_and_defaults
    template = Template(source)
    values = st.lists(st.one_of(st.none(), st.text(_KEY_TEXT, max_size=4)), min_size=len(defaults),
                      max_size=len(defaults))  # fmt: skip
    first, second = data.draw(values), data.draw(values)

    def key(drawn: list[str | None]) -> str:
        return template.render_key(_Values({f"r{n}": value for n, value in enumerate(drawn)}))

    def texts(drawn: list[str | None]) -> list[str]:  # what each reference reads: a missing value, its default
        return [(default or "") if value is None else value for value, default in zip(drawn, defaults, strict=True)]

    assert (key(first) == key(second)) == (texts(first) == texts(second))


_LONE_TEXT = st.text(st.characters(blacklist_characters="\x00"), max_size=6)  # the text beside it: "\x00"


@given(
    st.one_of(st.none(), _LONE_TEXT, _LONE_TEXT.map(Caseless), st.integers(), st.lists(_LONE_TEXT, max_size=2)),
    st.sampled_from(["{var.a}", "{var.a|dflt}", "{cookie.a}", "{header.origin}"]),
    st.integers(0, 8),
    st.booleans(),
)
def test_a_lone_reference_renders_as_it_does_beside_text(value: object, source: str, limit: int, key: bool) -> None:
    """A template that is one reference (``{jwt.sub}``, read in a path of its own) renders, as a key or a text
    with an escape, and refuses past a limit, as that reference does after a character of text."""
    lookup = _Values({"a": value, "origin": value})

    def rendered(template: Template, extra: int) -> tuple[str, str | None]:
        try:
            if key:
                text = template.render_key(lookup, limit=limit + extra)
            else:
                text = template.render(lookup, str.swapcase, limit=limit + extra)
        except TemplateTooLarge:
            return "too large", None
        return "ok", text[extra:]

    assert rendered(Template(source), 0) == rendered(Template("\x00" + source), 1)


class _Tagged(str):
    """A string of a subclass other than Caseless: written as it is, as any string."""


@given(
    st.one_of(st.none(), _LONE_TEXT, _LONE_TEXT.map(Caseless), _LONE_TEXT.map(_Tagged), st.booleans(), st.integers(),
              st.floats(allow_nan=False), st.lists(_LONE_TEXT, max_size=2), st.dictionaries(_LONE_TEXT, st.integers(),
              max_size=2)),
    st.sampled_from(["{var.a}", "{var.a|dflt}", "x{var.a|dflt}y"]),
)  # fmt: skip
def test_a_reference_writes_its_value_as_to_text_does(value: object, source: str) -> None:
    """A string read in place of ``to_text`` (the usual value) is written as ``to_text`` writes any value."""
    default = "dflt" if "|" in source else ""
    text = default if value is None else to_text(value)
    expected = source.replace("{var.a|dflt}", text).replace("{var.a}", text)
    assert Template(source).render(_Values({"a": value})) == expected


def test_adjacent_references_and_a_percent_in_the_text_keep_values_apart() -> None:
    adjacent = Template("{var.a}{var.b}")
    assert adjacent.render_key(_Values({"a": "x", "b": "yz"})) == "x\x1fyz"
    assert adjacent.render_key(_Values({"a": "xy", "b": "z"})) == "xy\x1fz"
    assert adjacent.render_key(_Values({"a": "x\x1f", "b": "%"})) == "x%1F\x1f%25"
    percent = Template("{var.a}%25{var.b}")
    assert percent.render_key(_Values({"a": "%", "b": None})) == "~25%25"
    assert percent.render_key(_Values({"a": None, "b": "%"})) == "%25~25"
    assert Template("{var.a}-{var.b}").render_key(_Values({"a": "x-y", "b": "z"})) == "x%2Dy-z"  # as before


_COOKIE_TEXT = st.lists(
    st.sampled_from(["a", "b", "+", " ", "%", "%20", "%2B", "%2b", "%61", "%25", "%zz"]), max_size=8
).map("".join)


@given(_COOKIE_TEXT, _COOKIE_TEXT)
def test_a_cookie_key_is_one_per_tenant_of_every_reader(one: str, other: str) -> None:
    """Two spellings PHP (``urldecode``: ``+`` a space) or Node (``decodeURIComponent``) read as one
    value are one key; Go and Python read a value as sent, and the key is a function of it."""
    if unquote_plus(one) == unquote_plus(other) or unquote(one) == unquote(other):
        assert canonical_cookie(one) == canonical_cookie(other)
