"""What an OTLP/HTTP collector's answer may cost the gateway: a bounded read.

The SDK's HTTP exporters post through ``requests``, which reads a response whole before the exporter
looks at its status: a collector answering every export with a 200 MB body took a worker from 94 to
713 MB. The exporters use the status and reason alone, so :func:`bound_responses` mounts an adapter on
an exporter's session that reads at most :data:`MAX_RESPONSE_BYTES` of a body, raw (a compressed
body is never inflated), within the request's read timeout, and drops the connection when more was
coming. gRPC needs none of this: its channel refuses a message over 4 MB.

The session is the exporters' private member (``_client._transport._session`` in SDK 1.45,
``_session`` before): an SDK without it keeps its own reading, with a warning.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from requests import PreparedRequest, Response, Session
from requests.adapters import HTTPAdapter

from ..log_throttle import OutageLog

logger = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 64 * 1024
"""An OTLP answer is a status and, at most, a partial-success message: far under this."""
_CHUNK = 16 * 1024
_DEFAULT_READ_TIMEOUT = 10.0  # the SDK's OTEL_EXPORTER_OTLP_TIMEOUT default


class BoundedResponseAdapter(HTTPAdapter):
    """An adapter whose responses hold at most :data:`MAX_RESPONSE_BYTES` of their body."""

    def __init__(self) -> None:
        super().__init__()
        self._cut_log = OutageLog()

    def send(  # type: ignore[override]  # requests types the parameters loosely
        self, request: PreparedRequest, stream: bool = False, timeout: Any = None, **kwargs: Any
    ) -> Response:
        response = super().send(request, stream=True, timeout=timeout, **kwargs)
        if stream:  # the caller reads it itself
            return response
        body, whole = _read_bounded(response, _read_timeout(timeout))
        response._content = body  # what requests' own non-streamed read would have set
        response._content_consumed = True
        if not whole:
            response.raw.close()  # the rest is never read: this connection is closed, not reused
            count = self._cut_log.event()
            if count:
                logger.warning(
                    "OTLP collector %s answered with more than %d bytes or too slowly (%d times): the rest was not "
                    "read and the connection was closed",
                    response.url.split("?", 1)[0],
                    MAX_RESPONSE_BYTES,
                    count,
                )
        response.close()  # back to the pool (a closed connection is replaced there)
        return response


def _read_timeout(timeout: Any) -> float:
    read = timeout[1] if isinstance(timeout, tuple) else timeout
    return float(read) if read else _DEFAULT_READ_TIMEOUT


def _read_bounded(response: Response, within: float) -> tuple[bytes, bool]:
    """Up to ``MAX_RESPONSE_BYTES`` of the raw body, and whether that was all of it, read within ``within``
    seconds in all (requests' timeout bounds each read, so a collector trickling bytes could hold the
    export thread for as long as it liked)."""
    deadline = time.monotonic() + within
    read = getattr(response.raw, "read1", response.raw.read)  # urllib3 2's read1: what has come, not _CHUNK
    chunks: list[bytes] = []
    size = 0
    while size <= MAX_RESPONSE_BYTES:
        if time.monotonic() > deadline:
            return b"".join(chunks), False
        chunk = read(_CHUNK, decode_content=False)
        if not chunk:
            return b"".join(chunks), True
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)[:MAX_RESPONSE_BYTES], False


_SESSION_PATHS = (("_client", "_transport", "_session"), ("_session",))
"""Where SDK versions keep an exporter's ``requests`` session."""


def _session(exporter: object) -> Session | None:
    for path in _SESSION_PATHS:
        found: object = exporter
        for name in path:
            found = getattr(found, name, None)
        if isinstance(found, Session):
            return found
    return None


def bound_responses(exporter: object) -> None:
    """Mount :class:`BoundedResponseAdapter` on an SDK OTLP/HTTP exporter's session."""
    session = _session(exporter)
    if session is None:
        logger.warning(
            "this OpenTelemetry SDK's HTTP exporter %s is unknown to the gateway: a collector's answers are read whole",
            type(exporter).__name__,
        )
        return
    adapter = BoundedResponseAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)


__all__ = ["MAX_RESPONSE_BYTES", "BoundedResponseAdapter", "bound_responses"]
