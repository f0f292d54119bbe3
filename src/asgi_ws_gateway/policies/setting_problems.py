"""A policy entry's problems in words, ``where: message``, quoting no credential: pydantic's errors on its
settings, the policy's own (:class:`~.base.PolicyProblem`), a plugin's failure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..config.problems import quoted, union_member
from ..redact import CREDENTIAL_VALUES, credential_setting, is_credential_name, redact_free_text, redact_values
from .base import Loc, loc_text


def validation_text(loc: Loc, error: Any, settings: Mapping[str, Any]) -> str:
    # Drop the union-member tags pydantic puts in locations ("audience.list[str]" -> "audience").
    where = loc_text(loc + tuple(p for p in error["loc"] if not union_member(p)))
    message = "unknown field" if error["type"] == "extra_forbidden" else error["msg"]
    if _secret(error["loc"], settings):
        given = error.get("input")
        message = _unquoted(message, error["loc"], settings, () if isinstance(given, Mapping) else given)
    elif error["type"] not in {"missing", "extra_forbidden", "value_error"}:
        message = f"{message} (got {quoted(error['input'])})"
    return f"{where}: {message.removeprefix('Value error, ')}"


def problem_text(loc: Loc, field: Loc, message: str, settings: Mapping[str, Any]) -> str:
    """A policy's own problem with a setting (:class:`~.base.PolicyProblem`; ``field`` empty: the
    policy's), as ``where: message``; the message quotes no credential (RE2's quotes the pattern)."""
    if _secret(field, settings):
        message = _unquoted(message, field, settings)
    return f"{loc_text(loc + field)}: {message}"


def _secret(field: tuple[Any, ...], settings: Mapping[str, Any]) -> bool:
    """Whether a setting's value may be a credential, which an error must not quote (``check`` and
    start-up write errors to terminals and logs): a setting named as one (``secret``, ``api_key``), or
    any value of a policy or condition on its path whose header, query parameter, ``ref`` or ``claim``
    names one, which the management API shows as ``REDACTED`` (``set-header`` of ``Authorization`` or
    ``X-Api-Key``, ``check-header``'s ``pattern``, ``{ref: header.x-api-key, in: [...]}``)."""
    if any(is_credential_name(str(part)) for part in field):
        return True
    return any(
        isinstance(value, Mapping) and credential_setting(value) is not None for value in _along(field, settings)
    )


def _unquoted(message: str, field: tuple[Any, ...], settings: Mapping[str, Any], given: Any = ()) -> str:
    """``message`` without what it quotes of the credentials on ``field``'s path (a validator's, RE2's
    ``missing ): (abc``): what is wrong, not what was written.

    The credentials are those the management API shows as ``REDACTED``: every value a policy or
    condition on the path holds of what it names as one (not the name: ``Sec-WebSocket-Key`` is a
    header's), a ``secret``, and a ``transform-message`` field named as one; ``given`` is the value the
    error is about. Other settings named like credentials name where one is (``secret_env``,
    ``public_key_files``) or what counts (``key: "{jwt.sub}"``): their errors quote them."""
    on_path = _along(field, settings)
    name = next((part for part in reversed(field) if isinstance(part, str)), "")
    sets = field[:1] == ("set",) and is_credential_name(name)  # transform-message's set: {api_key: ...}
    secrets = [given, on_path[-1]] if name == "secret" or sets else []
    for value in on_path:
        if isinstance(value, Mapping) and credential_setting(value) is not None:
            secrets += [item for key, item in value.items() if key in CREDENTIAL_VALUES]
    return redact_values(message, secrets)


def _along(field: tuple[Any, ...], settings: Mapping[str, Any]) -> list[Any]:
    """The values on ``field``'s path through ``settings``, ``settings`` first (a part that leads
    nowhere, as a union member's tag, is passed over)."""
    found: list[Any] = [settings]
    for part in field:
        value = found[-1]
        if isinstance(value, list):
            leads = isinstance(part, int) and 0 <= part < len(value)
        else:
            leads = isinstance(value, Mapping) and part in value
        if leads:
            found.append(value[part])
    return found


def failure_text(exc: Exception) -> str:
    """``Type: message`` of an exception from a plugin's code, cut and redacted (it may quote a setting)."""
    text = str(exc) if len(str(exc)) <= _SHOWN_FAILURE else str(exc)[:_SHOWN_FAILURE] + "..."
    return f"{type(exc).__name__}: {redact_free_text(text)}" if text else type(exc).__name__


_SHOWN_FAILURE = 200


__all__ = ["failure_text", "problem_text", "validation_text"]
