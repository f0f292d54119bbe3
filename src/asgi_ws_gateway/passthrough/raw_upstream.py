"""The upstream leg of passthrough: a raw TCP/TLS connection and a WebSocket handshake done by hand.

The gateway sends its own ``Sec-WebSocket-Key`` and checks the upstream's ``Sec-WebSocket-Accept``,
but forwards the client's ``permessage-deflate`` offer (the one extension whose messages the splice
can measure) and subprotocols, so that both ends negotiate compression with each other; an answer
the offer does not allow is refused (502). Failures raise the same errors as the ``websockets``
connector: :class:`~asgi_ws_gateway.errors.UpstreamRejected` (the upstream's status, headers and
body), :class:`~asgi_ws_gateway.errors.UpstreamTimeout` and
:class:`~asgi_ws_gateway.errors.UpstreamUnreachable`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import ssl
from collections.abc import Callable, Sequence
from urllib.parse import SplitResult

from websockets.exceptions import InvalidHeader
from websockets.headers import build_extension, parse_extension

from .._types import Headers, Scope
from ..bounded import remember, split_url
from ..config.apis import ApiConfig
from ..deadlines import DeadlinesByTimeout
from ..errors import RELAYED_STATUSES, UpstreamTimeout, UpstreamUnreachable, local_shortage, upstream_refusal
from ..redact import redact_text
from ..relay.close_codes import wire_code, wire_reason
from ..upstream.address_guard import AddressGuard
from ..upstream.base import UpstreamRequest
from ..upstream.checks import MAX_UPSTREAM_LINE
from ..upstream.chunked import MalformedChunks
from ..upstream.headers import kept_response_headers
from ..upstream.interim import UnreadableHead
from ..upstream.refusal import MalformedLength, RefusalBody
from ..upstream.resolver import RESOLVER, host_and_port
from ..upstream.response_head import MAX_HEAD, AnswerHead
from ..upstream.tls import UpstreamTls, checked
from .frame_encoding import close_frame
from .lingering_close import lingering

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

_DEADLINES = DeadlinesByTimeout()
"""The connects' deadlines, by ``connect_timeout``."""


class RawUpstream:
    """An upstream connection whose handshake is done; the splice takes its transport over.

    Attributes:
        subprotocol: the subprotocol the upstream chose, if any.
        extensions: the upstream's ``Sec-WebSocket-Extensions`` answer, for the client's 101.
        response_headers: the upstream's other end-to-end response headers.
        leftover: bytes the upstream sent after its 101 (frames already), not yet forwarded.
    """

    def __init__(
        self,
        transport: asyncio.Transport,
        subprotocol: str | None,
        extensions: str | None,
        response_headers: Headers,
        leftover: bytes,
        reader: _HandshakeReader,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.transport = transport
        self.loop = loop
        """The event loop its transport runs on (None: the running loop, asked for by who needs it)."""
        self._reader: _HandshakeReader | None = reader
        self._ended = False
        self.subprotocol = subprotocol
        self.extensions = extensions
        self.response_headers = response_headers
        self.leftover = leftover

    def ended(self) -> bool:
        """True if the TCP connection ended before the splice took it over."""
        return self._reader.eof if self._reader is not None else self._ended

    def release(self) -> None:
        """The splice has the transport: drop the handshake's reader, its buffer and the leftover bytes."""
        self._ended = self.ended()
        self._reader, self.leftover = None, b""

    async def close(self, code: int, reason: str) -> None:
        """Close before the splice started: a masked close frame, then the TCP connection."""
        if not self.transport.is_closing():
            self.transport.write(close_frame(wire_code(code), wire_reason(reason), mask=True))
            self.transport.close()


class _HandshakeReader(asyncio.Protocol):
    """Collects the upstream's response to the handshake (and the body of a refusal).

    The head is read by the rule the relay's ``websockets`` client is held to (``upstream.response_head``:
    interim responses skipped, the status line, the header lines and their limits): an answer one
    connector relays, the other does not refuse.
    """

    def __init__(
        self, label: str = "the upstream", loop: asyncio.AbstractEventLoop | None = None, max_head: int = MAX_HEAD
    ) -> None:
        self.label = label  # for the 502s' details
        self.buffer = bytearray()
        # (``loop``: the caller's, asked for already: each asking is a getpid() call on Python 3.11)
        self.head: asyncio.Future[None] = (loop or asyncio.get_running_loop()).create_future()
        self.more: asyncio.Event | None = None  # only a refusal's body is waited for (most handshakes succeed)
        self.answer = AnswerHead(max_head)  # ``upstream.head_limits``: what the relay's connector reads too
        self.eof = False

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.more is not None:
            self.more.set()
        if not self.head.done():
            self._find_head()

    def _find_head(self) -> None:
        """Resolve ``head`` once the answer's head is in and checked, past the interim responses (dropped)."""
        try:
            if self.answer.feed(self.buffer):
                self.head.set_result(None)
        except UnreadableHead as exc:  # the rule broken, too many interim responses, a bare LF
            self.head.set_exception(UpstreamUnreachable(f"{self.label} {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        if self.more is not None:
            self.more.set()
        if not self.head.done():
            why = f": {redact_text(str(exc))}" if exc is not None else ""
            self.head.set_exception(
                UpstreamUnreachable(f"{self.label} closed the connection before its response head ended{why}")
            )


_DEFLATE = "permessage-deflate"
_WINDOW_BITS = frozenset(str(bits) for bits in range(8, 16))
_DEFLATE_FLAGS = frozenset({"server_no_context_takeover", "client_no_context_takeover"})


def deflate_offer(scope: Scope) -> str | None:
    """The client's ``permessage-deflate`` offers (all header lines), the only extension the splice
    forwards: the one whose messages it can measure (inflated, against ``max_message_size``). Any
    other, a compression the splice cannot see through, would carry messages of any size past it."""
    values = [v.decode("latin-1") for n, v in scope.get("headers", []) if n.lower() == b"sec-websocket-extensions"]
    if not values:
        return None
    joined = ", ".join(values)
    if joined in _OFFERS:  # a client's offer repeats from one handshake to the next
        return _OFFERS[joined]
    offer = _deflate_offer(joined)
    if offer is not None and len(offer) > _OFFER_ROOM:  # the client's lines joined: none, as the relay sends
        offer = None
    if len(joined) <= _OFFER_LENGTH:
        remember(_OFFERS, joined, offer, _OFFERS_LIMIT)
    return offer


_OFFERS: dict[str, str | None] = {}
"""The offers :func:`deflate_offer` read, and what it forwards of each (bounded as the other stores of
client-chosen values are)."""
_OFFERS_LIMIT = 256
_OFFER_LENGTH = 256
_OFFER_ROOM = MAX_UPSTREAM_LINE - len("Sec-WebSocket-Extensions: \r\n")
"""The longest offer one line carries (the client's lines are joined into one, which an upstream refused)."""


def _deflate_offer(joined: str) -> str | None:
    """:func:`deflate_offer` of the offer lines ``joined``, worked out."""
    if all(item.partition(";")[0].strip() == _DEFLATE for item in joined.split(",")):
        return joined  # the usual offer (browsers'), forwarded as sent; a quoted "," takes the parse below
    try:
        offers = [offer for offer in parse_extension(joined) if offer[0] == _DEFLATE]
    except InvalidHeader:
        return None  # an offer the upstream could read otherwise: none
    return build_extension(offers) if offers else None


def _answer_problem(answer: list[str], offer: str | None) -> str | None:
    """What is wrong with the upstream's ``Sec-WebSocket-Extensions`` answer to ``offer`` (RFC 6455 §9.1,
    RFC 7692 §7), or None: at most one ``permessage-deflate``, with parameters one of the offers allows."""
    if not answer:
        return None
    if offer is None:
        return "answered with extensions that were not offered"
    try:
        extensions = parse_extension(", ".join(answer))
    except InvalidHeader:
        return "answered with a malformed Sec-WebSocket-Extensions header"
    if len(extensions) != 1 or extensions[0][0] != _DEFLATE:
        return f"answered with extensions that were not offered: {', '.join(name for name, _ in extensions)[:80]!r}"
    chosen = _deflate_parameters(extensions[0][1], offer=False)
    if isinstance(chosen, str):
        return f"answered permessage-deflate with a parameter the offer does not allow: {chosen[:40]!r}"
    try:
        offers = [_deflate_parameters(parameters, offer=True) for _, parameters in parse_extension(offer)]
    except InvalidHeader:
        offers = []  # an offer the gateway cannot read: no answer to it can be checked
    if not any(isinstance(offered, dict) and _accepts(offered, chosen) for offered in offers):
        return f"answered permessage-deflate with parameters no offer allows: {build_extension(extensions)[:80]!r}"
    return None


def _deflate_parameters(parameters: Sequence[tuple[str, str | None]], *, offer: bool) -> dict[str, str | None] | str:
    """permessage-deflate ``parameters`` by name, or the first that RFC 7692 §7.1 forbids: unknown,
    repeated, a flag with a value, window bits other than 8 to 15 (without a value: only
    ``client_max_window_bits``, only in an offer)."""
    settings: dict[str, str | None] = {}
    for name, value in parameters:
        valid = (
            (name in _DEFLATE_FLAGS and value is None)
            or (name == "server_max_window_bits" and value in _WINDOW_BITS)
            or (name == "client_max_window_bits" and (value in _WINDOW_BITS or (offer and value is None)))
        )
        if not valid or name in settings:
            return name
        settings[name] = value
    return settings


def _accepts(offered: dict[str, str | None], answered: dict[str, str | None]) -> bool:
    """Whether a server may answer ``offered`` with ``answered`` (RFC 7692 §7.1.1, §7.1.2): it keeps
    the ``server_no_context_takeover`` and the ``server_max_window_bits`` asked for (a window no
    larger), and sets ``client_max_window_bits`` only if offered (to no more than its value).
    ``client_no_context_takeover``, and ``server_*`` parameters not asked for, it may add."""
    if "server_no_context_takeover" in offered and "server_no_context_takeover" not in answered:
        return False
    server_limit, server_bits = offered.get("server_max_window_bits"), answered.get("server_max_window_bits")
    if server_limit is not None and (server_bits is None or int(server_bits) > int(server_limit)):
        return False
    client_bits = answered.get("client_max_window_bits")
    if client_bits is None:
        return True
    if "client_max_window_bits" not in offered:
        return False
    client_limit = offered["client_max_window_bits"]
    return client_limit is None or int(client_bits) <= int(client_limit)


async def open_raw(
    api: ApiConfig,
    request: UpstreamRequest,
    tls: UpstreamTls,
    *,
    extensions: bool = True,
    max_head: int = MAX_HEAD,
    guard: AddressGuard | None = None,
) -> RawUpstream:
    """Connect to the upstream and complete its handshake within ``api.connect_timeout`` seconds.

    ``tls``: the upstream's TLS contexts; the request's URL picks one (``wss://`` or not, its host).
    ``extensions``: forward the client's ``Sec-WebSocket-Extensions`` offer (False: offer none).
    ``max_head``: bytes of the answer's head read at most (:func:`~asgi_ws_gateway.upstream.head_limits.head_limit`).
    ``guard``: the addresses the connection may reach (the API's ``upstream_networks``); None: any.
    """
    url = split_url(request.url)
    host, port = host_and_port(url)
    label = tls.label(url.scheme, host, port)
    # The URL connected decides TLS (set-backend-service may have changed its scheme and host): the
    # context was the configured upstream's, and a ws:// one sent to wss:// went out in clear text.
    context = checked(label, url.scheme, tls.context(url.scheme, host, port))
    loop = asyncio.get_running_loop()  # asked once for all (each asking is a getpid() call on Python 3.11)
    # As asyncio.timeout(connect_timeout), with one timer for every connect of that timeout (~1.5 % of
    # a handshake's instructions: uvloop's timer set and cancelled, the context manager's coroutines).
    timeout = api.connect_timeout  # (read once: a pydantic model's read is ~4x a plain one's)
    deadlines = _DEADLINES.get(loop, timeout)
    deadline = deadlines.start()
    cancelled = timed_out = False
    try:
        try:
            return await _open(request, url, context, label, extensions, api.dns_ttl, timeout, loop, max_head, guard)
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            timed_out = deadlines.end(deadline, cancelled)
    except asyncio.CancelledError:
        if timed_out:
            raise UpstreamTimeout(f"{label} did not complete the handshake in {timeout:g} s") from None
        raise
    except TimeoutError:  # one address's share of the time (the resolver's), or the name's lookup
        raise UpstreamTimeout(f"{label} did not complete the handshake in {timeout:g} s") from None
    except OSError as exc:
        why = redact_text(str(exc)) or type(exc).__name__  # an SSLEOFError says nothing of itself
        unreachable = UpstreamUnreachable(f"{label} is unreachable: {why}")
        raise local_shortage(label, exc) or unreachable from None


async def _open(
    request: UpstreamRequest,
    url: SplitResult,
    context: ssl.SSLContext | None,
    label: str,
    forward_offer: bool,
    dns_ttl: float,
    within: float,
    loop: asyncio.AbstractEventLoop,
    max_head: int,
    guard: AddressGuard | None,
) -> RawUpstream:
    host, port = host_and_port(url)
    offer = deflate_offer(request.scope) if forward_offer else None
    key = base64.b64encode(os.urandom(16))

    async def attempt(address: str) -> tuple[asyncio.Transport, _HandshakeReader]:
        # Up to the answer's head: an address that accepts TCP and never answers is left for the
        # name's next one (within its share of connect_timeout), as one that refuses is.
        transport, reader = await loop.create_connection(
            lambda: _HandshakeReader(label, loop, max_head),
            address,
            port,
            ssl=context,
            server_hostname=host if context is not None else None,
        )
        try:
            transport.write(_request_bytes(request, url, key, offer))
            await reader.head
        except BaseException:
            transport.abort()
            raise
        return transport, reader

    if guard is not None and request.picked_host:
        guard = guard.picked
    transport, reader = await RESOLVER.connect(host, port, attempt, dns_ttl, within, guard)
    try:
        head, _, rest = bytes(reader.buffer).partition(b"\r\n\r\n")
        status, headers = reader.answer.status, _headers(head)
        if status != 101:
            try:
                body = await _body(reader, headers, len(head) + 4) if status in RELAYED_STATUSES else b""
            except MalformedChunks as exc:
                raise UpstreamUnreachable(f"{label} refused with a malformed chunked body: {exc}") from None
            except MalformedLength as exc:
                raise UpstreamUnreachable(f"{label} refused with {exc}") from None
            raise upstream_refusal(label, status, kept_response_headers(headers), body)
        answer: dict[str, list[str]] = {}
        for name, value in headers:
            answer.setdefault(name.lower(), []).append(value)
        expected = base64.b64encode(hashlib.sha1(key + _GUID).digest()).decode()
        # RFC 6455 §4.1: one Upgrade: websocket, an upgrade token in Connection, one valid Accept (as
        # the websockets client checks on the relay path; a second Accept must not pass as the last).
        if not _switched(answer, expected):
            raise UpstreamUnreachable(f"{label} answered the handshake with an invalid 101")
        chosen = answer.get("sec-websocket-protocol", [])
        subprotocol = chosen[0] if len(chosen) == 1 else None
        if chosen and (len(chosen) > 1 or subprotocol not in request.subprotocols):
            raise UpstreamUnreachable(f"{label} chose a subprotocol that was not offered: {chosen[0][:80]!r}")
        problem = _answer_problem(answer.get("sec-websocket-extensions", []), offer)
        if problem is not None:
            raise UpstreamUnreachable(f"{label} {problem}")
        extensions = ", ".join(answer.get("sec-websocket-extensions", ())) or None
    except BaseException:
        transport.abort()
        raise
    transport.pause_reading()  # until the splice takes the transport over
    # Closed with a FIN, what the upstream still sends read and dropped (a reset lost what it was sent).
    return RawUpstream(
        lingering(transport), subprotocol, extensions, kept_response_headers(headers), rest, reader, loop=loop
    )


def _switched(answer: dict[str, list[str]], expected: str) -> bool:
    """RFC 6455 §4.1: one ``Upgrade: websocket``, an ``upgrade`` token in ``Connection``, one
    ``Sec-WebSocket-Accept`` and the ``expected`` one (``answer``: the values by lower-case name).
    Each token of the ``Connection`` lines is compared in C (two comprehensions were ~2,500
    instructions a handshake)."""
    upgrade = answer.get("upgrade", ())
    return (
        len(upgrade) == 1
        and upgrade[0].lower() == "websocket"
        and "upgrade" in map(str.strip, ",".join(answer.get("connection", ())).lower().split(","))
        and answer.get("sec-websocket-accept") == [expected]
    )


def _request_bytes(request: UpstreamRequest, url: SplitResult, key: bytes, extensions: str | None) -> bytes:
    target = (url.path or "/") + (f"?{url.query}" if url.query else "")
    lines = [
        f"GET {target} HTTP/1.1",
        f"Host: {url.netloc.rpartition('@')[2]}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key.decode()}",
        "Sec-WebSocket-Version: 13",
    ]
    if request.subprotocols:
        lines.append(f"Sec-WebSocket-Protocol: {', '.join(request.subprotocols)}")
    if extensions:
        lines.append(f"Sec-WebSocket-Extensions: {extensions}")
    lines.extend(f"{name}: {value}" for name, value in request.headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _headers(head: bytes) -> list[tuple[str, str]]:
    """The header lines of a head that :class:`~asgi_ws_gateway.upstream.response_head.AnswerHead`
    checked, as name and value."""
    headers = []
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        headers.append((name, value.strip(" \t")))
    return headers


async def _body(reader: _HandshakeReader, headers: list[tuple[str, str]], start: int) -> bytes:
    """A refusal's body as RFC 9112 §6.3 delimits it (chunks, Content-Length bytes, or up to EOF), capped at 64 KiB."""
    body = RefusalBody(headers, start)
    await _wait_for(reader, lambda: body.advance(reader.buffer))
    return body.body(reader.buffer)


async def _wait_for(reader: _HandshakeReader, ready: Callable[[], bool]) -> None:
    """Wait until ``ready()`` or the upstream's EOF (the caller's timeout bounds the wait)."""
    more = reader.more = asyncio.Event()
    while not ready() and not reader.eof:
        more.clear()
        await more.wait()


__all__ = ["RawUpstream", "deflate_offer", "open_raw"]
