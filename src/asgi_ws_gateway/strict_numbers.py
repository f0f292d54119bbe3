"""A base for configuration models: a boolean is not a number, and a number or text is not a boolean.

Pydantic's lax mode takes ``true`` as 1 for an ``int`` or ``float`` field, and YAML 1.1 reads
``yes``, ``on`` and ``true`` as booleans: ``limit: yes`` was a limit of one handshake and
``window: on`` a window of one second, both valid to the check. Numbers written as numbers, and
numeric strings, are read as before.

The reverse too (2026-12-05): lax mode took ``1``, ``0``, ``"yes"``, ``"off"``, ``"t"``, ``"n"`` and
``"0"`` for a ``bool`` field, so ``verify_tls: "no"`` (a quoted YAML scalar, a management API body)
turned certificate checks off, and ``passthrough: "yes"`` was ``true``. A boolean field takes
``true`` and ``false`` alone (and ``null`` where the field is optional, a listed literal where it
has one, such as ``passthrough: auto``); a YAML plain ``yes`` or ``off`` is a YAML 1.1 boolean, and is
read as one before validation. What lax mode refuses anyway (``"AUTO"``, ``2``) keeps pydantic's message.
"""

from __future__ import annotations

import contextlib
import math
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError


def _kinds(annotation: Any) -> set[Any]:
    """The types a field of this annotation takes (its union's members, their ``Annotated`` metadata dropped)."""
    members = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else (annotation,)
    return {get_args(member)[0] if get_origin(member) is Annotated else member for member in members}


_Reading = tuple[bool, bool, frozenset[Any]]
"""How a field reads values: takes numbers and not booleans; takes booleans and neither numbers nor
text; the literal values it lists."""
_READINGS: dict[Any, _Reading] = {}
_MOST_READINGS = 4096  # the annotations of the package's and plugins' models; past it, worked out each time


def _reading(annotation: Any) -> _Reading:
    """:data:`_Reading` of ``annotation``, worked out once (each field is validated in every configuration)."""
    try:
        return _READINGS[annotation]
    except (KeyError, TypeError):  # TypeError: an annotation that cannot be a key
        pass
    kinds = _kinds(annotation)
    numbers = bool(kinds & {int, float})
    literals = frozenset(arg for kind in kinds if get_origin(kind) is Literal for arg in get_args(kind))
    reading = (numbers and bool not in kinds, bool in kinds and not numbers and str not in kinds, literals)
    if len(_READINGS) < _MOST_READINGS:
        with contextlib.suppress(TypeError):
            _READINGS[annotation] = reading
    return reading


def _numeric(annotation: Any) -> bool:
    """Whether a field of this type takes numbers and not booleans."""
    return _reading(annotation)[0]


_LAX_BOOLEANS = frozenset({"0", "off", "f", "false", "n", "no", "1", "on", "t", "true", "y", "yes"})
"""The text pydantic's lax mode reads as a boolean (any case)."""


def _loose_boolean(annotation: Any, value: Any) -> str | None:
    """What ``value`` is when a field of this type would read it as a boolean it is not (lax mode's
    ``1``, ``"yes"``, ``"off"``), or None. What lax mode refuses anyway is left to pydantic's own message."""
    _, boolean, literals = _reading(annotation)
    if not boolean or isinstance(value, bool):
        return None
    if isinstance(value, int | float) and value in (0, 1):
        return f"the number {value:g}"
    if isinstance(value, str | bytes) and value not in literals:
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        if text.strip().lower() in _LAX_BOOLEANS:
            return "text"  # config.problems adds the input, shortened, as for every field
    return None


class StrictNumbers(BaseModel):
    """Refuses a boolean for any field typed as a number (``int``, ``float``, optional or not), a
    number or text for any field typed as a boolean, and infinity and NaN (subclasses that set their
    own ``model_config`` keep ``allow_inf_nan=False``)."""

    model_config = ConfigDict(allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_number(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None or not info.field_name:
            return value
        annotation = cls.model_fields[info.field_name].annotation
        if isinstance(value, bool) and _numeric(annotation):
            raise PydanticCustomError("number_type", "a number, not a boolean ({value})", {"value": str(value).lower()})
        loose = _loose_boolean(annotation, value)
        if loose is not None:
            raise PydanticCustomError("bool_type", "a boolean: true or false, unquoted (not {what})", {"what": loose})
        return value


MAX_REPORTED = 20
"""Non-finite numbers a configuration's problems name, at most (one each)."""


def non_finite_numbers(data: Any, path: str = "") -> list[str]:
    """Every infinity or NaN in ``data`` (a configuration as YAML, JSON or code gives it), by field
    path: JSON has neither, so a value the gateway later writes as JSON (``transform-message``'s
    ``set``, an ``error_reply`` template) would reach its reader as ``null`` or as ``Infinity``, which
    no JSON reader takes. Typed fields refuse them as well; this covers the free-form ones. A list or
    mapping shared by YAML aliases is walked once."""
    problems: list[str] = []
    seen: set[int] = set()
    pending: list[tuple[Any, str]] = [(data, path)]
    while pending and len(problems) < MAX_REPORTED:
        value, where = pending.pop()
        if isinstance(value, float):
            if not math.isfinite(value):
                problems.append(f"{where or '(document)'}: {value} is not a finite number (JSON has none)")
        elif isinstance(value, dict | list) and id(value) not in seen:
            seen.add(id(value))
            if isinstance(value, dict):
                pending.extend((item, f"{where}.{key}" if where else str(key)) for key, item in value.items())
            else:
                pending.extend((item, f"{where}[{index}]") for index, item in enumerate(value))
    return sorted(problems)
