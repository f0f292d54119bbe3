"""Whole numbers in text a peer sends: a header's value, a URL's port, an extension's parameter.

``int()`` reads more than ``1*DIGIT``: a sign (``+5``), spaces (`` 5``), underscores (``1_0``) and
the decimal digits of every script (``٣``); ``str.isdigit()`` also passes superscripts (``²``),
which ``int()`` then refuses with a ``ValueError``, as it refuses any text of more than 4300 digits.
So a number a peer chose is read here: ASCII digits only, and not many of them.
"""

from __future__ import annotations


def parse_digits(text: str, max_digits: int) -> int | None:
    """``text`` as a number when it is 1 to ``max_digits`` ASCII digits (leading zeros count), else None.

    >>> parse_digits("8443", 5), parse_digits("+5", 5), parse_digits("٣", 5), parse_digits("123456", 5)
    (8443, None, None, None)
    """
    if 0 < len(text) <= max_digits and text.isascii() and text.isdigit():
        return int(text)
    return None


def parse_port(text: str) -> int | None:
    """``text`` as a TCP port (0 to 65535, at most 5 ASCII digits), else None."""
    port = parse_digits(text, 5)
    return port if port is not None and port <= 65535 else None


__all__ = ["parse_digits", "parse_port"]
