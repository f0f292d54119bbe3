"""A configuration file read into plain data (YAML or JSON), its problems given by file, line and column;
and the placeholders an ``export`` wrote in place of secrets, which a file must not be loaded with."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from ..json_names import DuplicateName, load_unique
from ..loading import alias_problem, read_regular_file
from ..redact import REDACTED
from ..redact.documents import installed_policy_types, redacted_values
from ..yaml_keys import safe_load
from .served_file import digest


def read_file(path: Path) -> Any:
    return read_file_and_digest(path)[0]


def read_file_and_digest(path: Path) -> tuple[Any, bytes]:
    """The file's data, and the digest of the bytes it was read from (:mod:`.served_file`)."""
    try:
        raw = read_regular_file(path)
        text = raw.decode("utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read file: {exc.strerror}"], str(path)) from None
    except UnicodeDecodeError:
        raise ConfigError(["not UTF-8 text"], str(path)) from None
    try:
        if path.suffix == ".json":
            data: Any = load_unique(text)
            return data, digest(raw)
        data = safe_load(text) or {}
    except DuplicateName as exc:
        raise ConfigError([f"{path}:{exc.lineno}:{exc.colno}: {exc}"], str(path)) from None
    except json.JSONDecodeError as exc:
        raise ConfigError([f"{path}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}"], str(path)) from None
    except yaml.YAMLError as exc:
        raise ConfigError([_yaml_problem(path, exc)], str(path)) from None
    except RecursionError:  # the parsers recurse per level of nesting
        raise ConfigError([f"{path}: nested too deeply to read"], str(path)) from None
    except ValueError:  # JSON: Python reads no integer of more than 4,300 digits (sys.get_int_max_str_digits)
        raise ConfigError([f"{_long_number(path, text)}: an integer too long to read"], str(path)) from None
    problem = alias_problem(data)
    if problem:
        raise ConfigError([f"{path}: {problem}"], str(path))
    return data, digest(raw)


def placeholder_problems(data: Any) -> list[str]:
    """Each field of a configuration file that holds ``REDACTED`` where ``GET /config`` and ``export``
    write it in place of a secret (:func:`~asgi_ws_gateway.redact.documents.redacted_values`, the rules
    the management API's documents are made public by): an exported file loaded as it is would run with
    the placeholder as its secret (every client presenting the key ``REDACTED`` admitted, HMAC keyed with
    it). A plugin's settings are known once its type is registered (the file's ``plugins`` imported)."""
    return [
        f"{path}: holds '{REDACTED}', the placeholder an export writes in place of a secret: put the secret back"
        for path in redacted_values(data, installed_policy_types())
    ]


def _long_number(path: Path, text: str) -> str:
    """``file:line:column`` of the first integer Python will not read, or the file alone."""
    found = re.search(rf"\d{{{sys.get_int_max_str_digits() + 1}}}", text)
    if found is None:
        return str(path)
    start = found.start()
    return f"{path}:{text.count(chr(10), 0, start) + 1}:{start - text.rfind(chr(10), 0, start)}"


def _yaml_problem(path: Path, exc: yaml.YAMLError) -> str:
    """``file:line:column: not valid YAML: what`` (PyYAML's own text names ``<unicode string>``)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    problem = getattr(exc, "problem", None) or "cannot parse"
    context = getattr(exc, "context", None)
    return f"{where}: not valid YAML: {problem}" + (f" ({context})" if context else "")


__all__ = [
    "placeholder_problems",
    "read_file",
    "read_file_and_digest",
]
