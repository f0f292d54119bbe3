"""A base for configuration models: a boolean is not a number.

Pydantic's lax mode takes ``true`` as 1 for an ``int`` or ``float`` field, and YAML 1.1 reads
``yes``, ``on`` and ``true`` as booleans: ``limit: yes`` was a limit of one handshake and
``window: on`` a window of one second, both valid to the check. Numbers written as numbers, and
numeric strings, are read as before.
"""

from __future__ import annotations

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
