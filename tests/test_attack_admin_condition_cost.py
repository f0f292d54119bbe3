"""A ``contains`` condition costs one substring search of the value, not a Python step per word of it.

An admin-token holder created an API of 20 ``choose`` policies with 1,024 branches each, every one
``{if: {ref: header.x, contains: zz}}`` (963 KB, within the management API's 1 MiB body): any client
that then sent ``x: a a a ...`` (8 KiB) held the worker's event loop 5-6 s per handshake under
``asgi-ws-gateway run`` (every connection of that worker stalled), because each condition split the
header into 3,500 words and wrote each again through ``to_text`` in a Python loop (0.18 ms a condition).
The word is now found by one search in the value with spaces around it: the same handshake took
0.25-0.35 s. What a word is does not change: separated by the space alone (RFC 6749's ``scope``).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asgi_ws_gateway import templates
from asgi_ws_gateway.templates import Condition, Reference


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
