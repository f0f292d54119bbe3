"""A resource document as a client sends it back: what an answer added to it is not data.

An API or a product is read, edited and sent back whole: the ``warnings`` a change's answer carries
would be a 422 (``unknown field``), and the ``REDACTED`` that a ``GET`` shows in place of a secret
would replace the secret with that word.
"""

from __future__ import annotations

from typing import Any

from .disclosure import redacted_values
from .errors import Invalid

_OUTPUT_FIELDS = frozenset({"warnings"})
"""Top-level keys an answer adds to an API or a product that are not its fields (the configuration
warnings of a change): dropped from a body, so that the document a create or replace answered with
can be sent back as it is (it was a 422, ``warnings: unknown field``, only when there were warnings)."""


def without_output_fields(body: Any) -> Any:
    """``body`` without the :data:`_OUTPUT_FIELDS` an API or product answer carries (anything else as it is)."""
    if isinstance(body, dict) and not _OUTPUT_FIELDS.isdisjoint(body):
        return {name: value for name, value in body.items() if name not in _OUTPUT_FIELDS}
    return body


def resource_object(body: Any) -> dict[str, Any]:
    body = without_output_fields(body)
    if not isinstance(body, dict):
        raise Invalid("the body must be a JSON object", ["(top level): expected a JSON object"])
    no_redacted_secrets(body)
    return body


def no_redacted_secrets(body: Any) -> None:
    """Refuse a document holding ``REDACTED`` where ``GET`` hides a secret (:func:`~.disclosure.redacted_values`):
    sent back as read, it would replace the secret with that word."""
    fields = redacted_values(body)
    if fields:
        raise Invalid(
            "the body holds REDACTED in place of a secret",
            [
                f"{field}: REDACTED is what the API shows in place of this secret: send the value itself"
                for field in fields
            ],
        )


__all__ = ["no_redacted_secrets", "resource_object", "without_output_fields"]
