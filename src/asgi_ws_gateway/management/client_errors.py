"""What :class:`~.client.ManagementClient` raises for an answer that is not the call's success:
:class:`ManagementAPIError` for every refusal (400 or more, whatever its body holds) and its subclass
:class:`UnexpectedAnswerError` for anything else (a redirect, another status, a body of another
shape); built from a bounded prefix of the answer, never failing otherwise on a hostile one.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import TYPE_CHECKING

from .answers import ERROR_PREFIX, AnswerProblem, parse_json, problem_fields, read_body

if TYPE_CHECKING:
    import httpx2


class ManagementAPIError(Exception):
    """The management API refused a request: ``status`` (401, 404, 409, 412, 422, 429, 503, ...) and ``problems``.

    ``retry_after``: the seconds its ``Retry-After`` asks for (a 503 while Redis fails, a 429 after too
    many refused tokens), else None: nothing was changed, so the same call may be sent again then. Except
    a connection command's 503 whose ``detail`` says a worker received it and did not answer in time, or
    that Redis failed after it reached some: it may have run there (a message sent again arrives twice).
    Its ``problems`` name the workers that did not answer; those "not on the management bus" never run it.
    """

    def __init__(
        self, status: int, title: str, detail: str, problems: list[str], retry_after: float | None = None
    ) -> None:
        super().__init__(f"{status} {title}: {detail}" + "".join(f"\n  {p}" for p in problems))
        self.status = status
        self.title = title
        self.detail = detail
        self.problems = problems
        self.retry_after = retry_after


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds (the API sends a number; an HTTP date or anything else: None)."""
    try:
        seconds = float(value) if value is not None else math.nan
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


class UnexpectedAnswerError(ManagementAPIError):
    """The management API's answer is not one the call expects: a redirect (``location``: where to),
    another success status, a body too large, not JSON, or JSON of another shape. Nothing is known
    to have been done. ``status`` is the answer's; ``detail`` says what was wrong (never the body)."""

    def __init__(self, status: int, detail: str, location: str | None = None) -> None:
        super().__init__(status, "unexpected answer from the management API", detail, [])
        self.location = location


_EXCERPT = 200
"""Characters of a refusal's body shown when it is not problem details (an HTML error page)."""


async def refusal(response: httpx2.Response) -> ManagementAPIError:
    """A 4xx or 5xx answer as :class:`ManagementAPIError`, from the first :data:`ERROR_PREFIX` bytes of
    its body: a huge error page is not read whole, a hostile one never fails otherwise."""
    try:
        prefix = await read_body(response, ERROR_PREFIX, truncate=True)
    except AnswerProblem:  # compressed and not valid so
        prefix = bytearray()
    try:
        document = parse_json(prefix)
    except AnswerProblem:
        document = None
    title, detail, problems = problem_fields(document)
    excerpt = prefix.decode("utf-8", errors="replace")[:_EXCERPT] if document is None else ""
    return ManagementAPIError(
        response.status_code,
        (title or response.reason_phrase)[:_EXCERPT],
        (detail if detail is not None else excerpt)[: _EXCERPT * 5],
        problems,
        _retry_after(response.headers.get("retry-after")),
    )


def unexpected_status(response: httpx2.Response, expect: Collection[int]) -> UnexpectedAnswerError:
    """A redirect (where to: the URL to use instead) or a success other than the call's."""
    status = response.status_code
    if 300 <= status < 400:
        location = response.headers.get("location")
        if location is None:
            return UnexpectedAnswerError(status, "redirected, with no Location")
        return UnexpectedAnswerError(status, f"redirected to {location}: use that URL", location=location)
    wanted = " or ".join(str(code) for code in expect)
    return UnexpectedAnswerError(status, f"answered {status} where {wanted} was expected")


__all__ = ["ManagementAPIError", "UnexpectedAnswerError", "refusal", "unexpected_status"]
