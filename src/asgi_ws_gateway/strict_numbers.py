"""A base for configuration models: a boolean is not a number.

Pydantic's lax mode takes ``true`` as 1 for an ``int`` or ``float`` field, and YAML 1.1 reads
``yes``, ``on`` and ``true`` as booleans: ``limit: yes`` was a limit of one handshake and
``window: on`` a window of one second, both valid to the check. Numbers written as numbers, and
numeric strings, are read as before.
"""

from __future__ import annotations

import math
import types
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError


def _numeric(annotation: Any) -> bool:
    """Whether a field of this type takes numbers and not booleans."""
    members = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else (annotation,)
    kinds = {get_args(member)[0] if get_origin(member) is Annotated else member for member in members}
    return bool(kinds & {int, float}) and bool not in kinds


class StrictNumbers(BaseModel):
    """Refuses a boolean for any field typed as a number (``int``, ``float``, optional or not), and
    infinity and NaN (subclasses that set their own ``model_config`` keep ``allow_inf_nan=False``)."""

    model_config = ConfigDict(allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_number(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and info.field_name and _numeric(cls.model_fields[info.field_name].annotation):
            raise PydanticCustomError("number_type", "a number, not a boolean ({value})", {"value": str(value).lower()})
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
