"""Errors of the management API; each becomes an ``application/problem+json`` response.

Hierarchy::

    GatewayError
    └── ManagementError        status, title, detail, problems
        ├── BadRequest             400 (a malformed request head: Content-Length, the Host's port)
        ├── Forbidden              403 (a change a web page could have forged)
        ├── NotFound               404
        ├── Conflict               409 (exists already, still in use, or it would open an API)
        ├── PreconditionFailed     412 (If-Match no longer matches)
        ├── RequestTimeout         408 (the body did not arrive in time)
        ├── PayloadTooLarge        413 (the body is larger than the limit)
        ├── UnsupportedMediaType   415 (a change not typed application/json)
        ├── Invalid                422 (``problems`` by field path; nothing was changed)
        └── Unavailable            503 (the shared state in Redis cannot be reached; Retry-After)
            ├── StateWentBack      503 (the store went back to an older state: nothing was changed)
            └── CannotRun          503 (this worker's configuration does not fit the store's state)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.responses import JSONResponse

from ..errors import GatewayError


class ManagementError(GatewayError):
    """A request the management API refuses; nothing was changed."""

    status = 400
    title = "Bad Request"
    headers: dict[str, str] = {}  # noqa: RUF012 (never mutated: a subclass replaces it)

    def __init__(self, detail: str, problems: Sequence[str] = ()) -> None:
        super().__init__(detail)
        self.detail = detail
        self.problems = list(problems)


class BadRequest(ManagementError):
    status, title = 400, "Bad Request"


class Forbidden(ManagementError):
    status, title = 403, "Forbidden"


class MisdirectedRequest(ManagementError):
    status, title = 421, "Misdirected Request"


class NotFound(ManagementError):
    status, title = 404, "Not Found"


class Conflict(ManagementError):
    status, title = 409, "Conflict"


class PreconditionFailed(ManagementError):
    status, title = 412, "Precondition Failed"


class RequestTimeout(ManagementError):
    status, title = 408, "Request Timeout"


class PayloadTooLarge(ManagementError):
    status, title = 413, "Content Too Large"


class UnsupportedMediaType(ManagementError):
    status, title = 415, "Unsupported Media Type"


class Invalid(ManagementError):
    status, title = 422, "Unprocessable Content"


class Unavailable(ManagementError):
    """Redis (the store or the bus of the shared mode) failed, timed out or is failing over."""

    status, title = 503, "Service Unavailable"
    headers = {"Retry-After": "1"}  # noqa: RUF012

    @classmethod
    def of(cls, part: str, cause: BaseException) -> Unavailable:
        """``the <part> failed: <the cause's type>``; raise it ``from`` the cause, whose text is for the log."""
        return cls(f"the {part} failed: {type(cause).__name__}")


class StateWentBack(Unavailable):
    """The store holds an older or another state than this worker applied (restored from an older copy,
    failed over to a lagging replica, emptied): a change decided on it would not be the one asked for.
    The worker adopts the store's state; the call may be sent again."""


class CannotRun(Unavailable):
    """The store's latest state, saved by another worker, does not fit this worker's own configuration (its
    file, plugins or allowed modules differ: a rolling deploy); this worker keeps serving the state it ran.
    ``problems``: what does not fit, by field path."""


def problem(
    status: int, title: str, detail: str, problems: list[str] | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    """An ``application/problem+json`` response (RFC 9457)."""
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    if problems:
        body["problems"] = problems
    return JSONResponse(body, status, headers=headers, media_type="application/problem+json")


__all__ = [
    "BadRequest",
    "CannotRun",
    "Conflict",
    "Forbidden",
    "Invalid",
    "ManagementError",
    "NotFound",
    "PayloadTooLarge",
    "PreconditionFailed",
    "RequestTimeout",
    "StateWentBack",
    "Unavailable",
    "UnsupportedMediaType",
]
