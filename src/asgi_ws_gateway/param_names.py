"""How the gateway compares query parameter and cookie names: as loosely as any server reads them.

A policy that checks ``access_token`` while the upstream reads ``ACCESS_TOKEN`` checks one copy of
a credential and lets another through. Servers disagree on what makes two names the same: ASP.NET
Core compares them ignoring case (upper-cased first: the long s U+017F is ``s``, the dotless i
U+0131 is ``i``); PHP percent-decodes cookie names and, in ``$_GET`` and ``$_COOKIE``, drops
leading spaces, turns ``.``, `` `` and ``[`` into ``_`` and reads ``name[]`` and ``name[key]`` as
an array under ``name`` (Rack too); Rack 2 (Rails before 7.1) reads a name past the brackets
around it (``[name]``, ``]name``, ``name]``); Node's ``URLSearchParams``, given a query string, drops its
leading ``?``, so the query of ``/ws??access_token=x`` (``?access_token=x``) holds ``access_token``
to it; ASP.NET on .NET Framework (``HttpUtility.UrlDecode``) and IIS decode ``%uXXXX``, so
``%u0061ccess_token`` is ``access_token`` there. Folded with all of these, every
spelling some server reads as a name is one name to the gateway: it counts each copy, and removes
or overrides every spelling.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import unquote_plus

_MANGLED = re.compile(r"[ .\[]")
"""What PHP turns into ``_`` in a parameter or cookie name."""

_KEY = re.compile(r"[^\[\]]+")
"""A run of a name between brackets: one key of it to Rack 2, whatever brackets part the runs."""

_PHP_KEYS = re.compile(r"[^\[]*(?:\[[^\]]*\])+")
"""A name and the keys PHP reads of it: each ``[...]`` right after the one before; what follows a ``]``
that no ``[`` follows is dropped (``page[size]x`` is its ``$_GET['page']['size']``)."""

_PERCENT_U = re.compile(r"%[uU]([0-9A-Fa-f]{4})")
"""``%uXXXX``: a UTF-16 unit, as .NET Framework's ``HttpUtility.UrlDecode`` and IIS decode it (the
standard decoding leaves it as it is). Matched in the name decoded once, so ``%25u0061`` folds too: one
spelling too many (a 400 or a parameter removed), never one too few."""


def fold_name(name: str, *, arrays: bool = True) -> str:
    """``name`` as the gateway compares it: trimmed, case-folded, PHP's mangling applied.

    ``name`` is what servers read: a query parameter's name percent-decoded once (as ``parse_qsl``
    gives it; ``%2561ccess_token`` is ``%61ccess_token`` to every server, not ``access_token``), or a
    configured name. ``fold_name("access.Token") == fold_name(" ACCESS_TOKEN") == "access_token"``,
    and so does ``access_token[]`` or ``access_token[x]`` (PHP's ``$_GET['access_token']`` is then an
    array holding the value); ``access[token``, with no ``]``, is PHP's ``access_token``; so is
    ``?access_token``, the first name of a query sent after ``??`` as ``URLSearchParams`` reads it,
    and ``[access_token]``, ``]access_token`` or ``access_token]x``, Rack 2's (its ``normalize_params``
    skips the brackets before a name and files what follows a ``]`` after it under the name).
    ``arrays=False`` keeps an array key (``page[size]`` stays apart from ``page[number]``), read as Rack 2
    reads the keys, each run between brackets one (``page]size`` and ``[page][size]`` are ``page[size]``), and as
    PHP drops what follows a key's ``]`` but another key (``page[size]x`` is ``page[size]``). A name
    ends at a NUL, as PHP reads it (a C string): ``access_token%00x`` is its ``access_token``;
    ``%u0061ccess_token`` is .NET Framework's.
    """
    if "%" in name:
        name = _PERCENT_U.sub(lambda unit: chr(int(unit[1], 16)), name)
    nul = name.find("\0")
    if nul >= 0:
        name = name[:nul]
    name = name.strip().removeprefix("?").lstrip("[]")
    if arrays:
        if _has_array_key(name):  # PHP and Rack: name[] and name[key] are arrays of name
            name = name[: name.find("[")]
        name = name.partition("]")[0]  # Rack 2: name], name]x
    elif "[" in name or "]" in name:  # Rack 2: page]size, [page][size] and page[size are page[size]
        php = _PHP_KEYS.match(name)
        keys = _KEY.findall(php[0] if php else name)  # PHP: page[size]x is page[size] (Rack 2: page[size][x])
        name = "".join([keys[0], *(f"[{key}]" for key in keys[1:])]) if keys else name
    return _MANGLED.sub("_", name.upper().lower())


def _has_array_key(name: str) -> bool:
    bracket = name.find("[")
    return bracket >= 0 and "]" in name[bracket:]


def spelled_as(configured: str) -> Callable[[str], bool]:
    """Whether a name a client sent is a spelling of the ``configured`` one: any spelling of its
    folded name, array forms included; a configured name with an array key of its own (JSON:API's
    ``page[size]``) only that key's spellings, so ``page[number]`` is another parameter."""
    arrays = not _has_array_key(configured.strip())
    folded = fold_name(configured, arrays=arrays)
    return lambda sent: fold_name(sent, arrays=arrays) == folded


def fold_cookie_name(name: str) -> str:
    """A cookie's name as sent, folded: percent-decoded first, as PHP decodes cookie names (the
    gateway's cookie parser, like Go's and Node's, does not). ``fold_cookie_name("%6Awt") == "jwt"``."""
    return fold_name(unquote_plus(name))


__all__ = ["fold_cookie_name", "fold_name", "spelled_as"]
