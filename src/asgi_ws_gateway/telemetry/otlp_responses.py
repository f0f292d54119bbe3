"""What an OTLP/HTTP collector's answer may cost the gateway: a bounded read.

The SDK's HTTP exporters post through ``requests``, which reads a response whole before the exporter
looks at its status: a collector answering every export with a 200 MB body took a worker from 94 to
713 MB. The exporters use the status and reason alone, so :func:`bound_responses` mounts an adapter on
an exporter's session that reads at most :data:`MAX_RESPONSE_BYTES` of a body, raw (a compressed
body is never inflated), and drops the connection when more was coming. The whole exchange, the
answer's status line and headers included, has the request's timeout: ``requests`` bounds each socket
read, so a collector sending its head a byte a second held the export thread for good (no batch of
that signal exported again, not one line logged); at the deadline the connection's socket is shut
down, whatever it waits for (:class:`CollectorTooSlow`). gRPC needs none of this: its channel
refuses a message over 4 MB and has its own deadline.

A redirect is a failed export (:class:`CollectorRedirected`), never followed: the SDK's exporters
(1.45) take any status under 400 as a sent batch, so a collector answering 307 dropped every batch
without a line; before 1.45 they posted through ``Session.post``, which followed it to any host with
the session's headers (``OTEL_EXPORTER_OTLP_HEADERS``, an API key).

The session is the exporters' private member (``_client._transport._session`` in SDK 1.45,
``_session`` before): an SDK without it keeps its own reading, with a warning.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from typing import Any

from requests import PreparedRequest, RequestException, Response, Session
from requests.adapters import HTTPAdapter
from requests.exceptions import ReadTimeout
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import HTTPError as Urllib3Error

from ..log_throttle import OutageLog
from ..redact.escaping import printable
from ..redact.text import redact_url

logger = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 64 * 1024
"""An OTLP answer is a status and, at most, a partial-success message: far under this."""
_CHUNK = 16 * 1024
_DEFAULT_READ_TIMEOUT = 10.0  # the SDK's OTEL_EXPORTER_OTLP_TIMEOUT default
_MAX_SHOWN_LOCATION = 200


class CollectorRedirected(RequestException):
    """An OTLP collector answered an export with a redirect: the export failed, nothing was sent on.

    Not a ``requests.ConnectionError``, so the SDK does not retry it: it logs the failure, this
    message in it, once per batch, as it does a 4xx."""

    def __init__(self, url: str, status: int, location: str) -> None:
        shown = printable(redact_url(location)[:_MAX_SHOWN_LOCATION]) if location else "nowhere (no Location)"
        super().__init__(
            # The location before a space, not a colon: the log's redaction of a peer's text reads a query
            # value up to a space, and took "REDACTED:" for the value (the colon was lost from the line).
            f"OTLP collector {redact_url(url)} answered {status}, a redirect to {shown} (not followed: the gateway's "
            "exporters do not follow redirects, so nothing was delivered; set the endpoint to the collector's own "
            "address)"
        )


class CollectorTooSlow(ReadTimeout):
    """An OTLP collector's whole answer did not come within the request's timeout: its connection was
    closed, the batch not delivered. A ``ReadTimeout``, as a collector silent that long is to the SDK
    (logged once per batch, not retried)."""

    def __init__(self, url: str, within: float) -> None:
        super().__init__(
            f"OTLP collector {redact_url(url)} sent no whole answer within {within:.3g} s (the exporter's timeout): "
            "the connection was closed, nothing was delivered"
        )


class _Exchange:
    """One request's deadline: when it passes, its connection's socket is shut down, which ends any
    read or write blocked on it (closing it would not wake a read in another thread)."""

    def __init__(self, within: float) -> None:
        self.within = within
        self.deadline = time.monotonic() + within
        self._expired = False
        self.connection: HTTPConnection | None = None
        self._timer = threading.Timer(within, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Exchange:
        _exchanges.current = self
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._timer.cancel()
        _exchanges.current = None

    def _expire(self) -> None:
        self._expired = True
        self.cut()

    def expired(self) -> bool:
        """Whether the deadline has passed (the socket shut down, or to be at its next use)."""
        return self._expired

    def cut(self) -> None:
        """Shut the connection's socket down once the deadline has passed (its TLS layer bypassed)."""
        sock = getattr(self.connection, "sock", None)
        if self._expired and sock is not None:
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)


_exchanges = threading.local()
"""The export thread's exchange under way: how the pool's connection finds the deadline it serves."""


def _watch(connection: HTTPConnection) -> None:
    exchange: _Exchange | None = getattr(_exchanges, "current", None)
    if exchange is not None:
        exchange.connection = connection
        exchange.cut()  # connected after the deadline: nothing more is sent or awaited


class _WatchedHTTPConnection(HTTPConnection):
    def connect(self) -> None:
        super().connect()
        _watch(self)

    def request(self, *args: Any, **kwargs: Any) -> None:
        _watch(self)  # a connection kept alive from an earlier export is connected already
        super().request(*args, **kwargs)


class _WatchedHTTPSConnection(_WatchedHTTPConnection, HTTPSConnection):
    """The same watch, over TLS (its ``super()`` calls reach HTTPSConnection's own)."""


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class BoundedResponseAdapter(HTTPAdapter):
    """An adapter whose responses hold at most :data:`MAX_RESPONSE_BYTES` of their body."""

    def __init__(self) -> None:
        super().__init__()
        self._cut_log = OutageLog()
        self._slow_log = OutageLog()  # the SDK's own line says only "timeout, max retries or shutdown"

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}

    def send(  # type: ignore[override]  # requests types the parameters loosely
        self, request: PreparedRequest, stream: bool = False, timeout: Any = None, **kwargs: Any
    ) -> Response:
        with _Exchange(_read_timeout(timeout)) as exchange:
            try:
                response = super().send(request, stream=True, timeout=timeout, **kwargs)
            except RequestException:
                if not exchange.expired():
                    raise
                raise self._too_slow(request, exchange) from None  # not "connection aborted"
            if exchange.expired():  # the head cut short: http.client takes its end for the end of the headers
                response.close()
                raise self._too_slow(request, exchange)
            if 300 <= response.status_code < 400:  # with a Location or not (a 304): no batch was taken in
                response.close()  # its body is never read: this connection is closed, not reused
                raise CollectorRedirected(response.url, response.status_code, response.headers.get("location", ""))
            if stream:  # the caller reads it itself
                return response
            try:
                body, whole = _read_bounded(response, exchange.deadline)
            except (Urllib3Error, OSError):
                if not exchange.expired():
                    raise
                body, whole = b"", False
            whole = whole and not exchange.expired()  # a body cut at the deadline may read as its end
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

    def _too_slow(self, request: PreparedRequest, exchange: _Exchange) -> CollectorTooSlow:
        too_slow = CollectorTooSlow(request.url or "", exchange.within)
        if count := self._slow_log.event():
            logger.warning("%s (%d times)", too_slow, count)
        return too_slow


def _read_timeout(timeout: Any) -> float:
    read = timeout[1] if isinstance(timeout, tuple) else timeout
    return float(read) if read else _DEFAULT_READ_TIMEOUT


def _read_bounded(response: Response, deadline: float) -> tuple[bytes, bool]:
    """Up to ``MAX_RESPONSE_BYTES`` of the raw body, and whether that was all of it, read by ``deadline``
    (monotonic; requests' timeout bounds each read, so a collector trickling bytes could hold the
    export thread for as long as it liked)."""
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


__all__ = ["MAX_RESPONSE_BYTES", "BoundedResponseAdapter", "CollectorRedirected", "CollectorTooSlow", "bound_responses"]
