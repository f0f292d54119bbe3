"""An admitted handshake's upstream, opened, and what will carry its messages: the splice (bytes
copied, frames scanned), the frame relay (whole messages through the message policies, in the
splice) or the ASGI relay (two pumps); with the ``websocket.accept`` message that answers the client.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from typing import NamedTuple

from ._types import Headers, Message, Receive, Scope, Send
from .admission import Api
from .errors import UpstreamRejected
from .handshake.context import HandshakeContext
from .messages.pipeline import MessagePolicySet
from .passthrough.asgi_extension import (
    CLOSE_TIMEOUT,
    EXTENSION,
    MAX_SIZE,
    NO_COMPRESSION,
    ON_SHUTDOWN,
    PING_INTERVAL,
    PING_TIMEOUT,
    TAKEN_IN,
)
from .passthrough.framed import FramedRelay
from .passthrough.raw_upstream import RawUpstream, open_raw
from .passthrough.splice import Splice
from .relay.lifecycle import RelayHandle
from .relay.pumps import Relay
from .telemetry import HandshakeTrace
from .upstream.backend_caps import ConnectionSlot
from .upstream.balancing import Backend
from .upstream.base import UpstreamConnection, UpstreamRequest
from .upstream.close_secrets import SentCredentials
from .upstream.cookie_scope import cookie_scope, scoped_cookies
from .upstream.refusal_headers import relayed_refusal_headers
from .upstream.refusal_secrets import sent_credentials, without_credentials
from .upstream.set_cookies import drop_reason, kept_cookies
from .upstream.websockets_client import WebSocketsConnection

logger = logging.getLogger(__name__)


class Proxied(NamedTuple):
    """An open upstream and the relay made for it, not yet accepted."""

    backend: Backend
    upstream: UpstreamConnection | RawUpstream
    relay: RelayHandle
    accept: Message
    slot: ConnectionSlot
    """The backend's ``max_connections`` slot the connection holds: given back when it is over."""


async def open_proxy(
    api: Api,
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    handshake: HandshakeContext,
    trace: HandshakeTrace,
    message_policies: MessagePolicySet | None,
    requests: list[UpstreamRequest],
    message_events: bool,
    read_cookies: frozenset[str] = frozenset(),
) -> Proxied:
    """Open a backend of ``api`` (``requests``: one per backend, built) and its relay.

    ``read_cookies``: the folded names of the cookies the configuration's policies read, which the
    upstream's answer (its 101 or its refusal) does not set (``upstream.set_cookies``).

    Raises:
        UpstreamRejected | UpstreamUnreachable | UpstreamTimeout: as the backend pool raises them.
    """
    cfg = api.config
    # With message policies: the frame relay, unless per-message telemetry events are on.
    framed = message_policies is not None and not message_events
    if (message_policies is None or framed) and api.can_splice and _spliceable(api, scope):
        # The frame relay reads payloads: no extension (compression) is negotiated for it; nor for
        # the splice under ``compression: null``, as the relay offers none then.
        extensions = not framed and api.compression is not None
        with _refusal_without_credentials(api, scope, requests, read_cookies, trace):
            backend, raw, slot = await api.pool.open(lambda b: api.traced[b.index].open(
                lambda request: open_raw(
                    cfg, request, api.tls[b.index], extensions=extensions, max_head=api.head_limit, guard=api.guard
                ),
                requests[b.index],
            ))  # fmt: skip
        async with _closed_on_failure(raw, slot):
            splice = _splice(api, scope, raw, message_policies, handshake, SentCredentials(requests[backend.index]))
            return Proxied(
                backend, raw, splice, _without_cookies(api, scope, splice.accept_message(), read_cookies, trace), slot
            )
    with _refusal_without_credentials(api, scope, requests, read_cookies, trace):
        backend, opened, slot = await api.pool.connect(lambda b: requests[b.index])
    async with _closed_on_failure(opened, slot):
        client_receive, upstream = trace.relay_io(receive, opened)
        offer = (scope.get("extensions") or {}).get(EXTENSION)
        progress = offer.get(TAKEN_IN) if isinstance(offer, dict) else None  # the gateway's protocol's
        relay = Relay(client_receive, send, upstream, max_message_size=api.max_message_size,
                      close_timeout=api.close_timeout, policies=message_policies, handshake=handshake,
                      client_progress=progress if callable(progress) else None,
                      sent=SentCredentials(requests[backend.index]))  # fmt: skip
        accept: Message = _without_cookies(api, scope, {
            "type": "websocket.accept", "subprotocol": opened.subprotocol, "headers": opened.response_headers
        }, read_cookies, trace)  # fmt: skip
        if EXTENSION in (scope.get("extensions") or {}):  # the gateway's protocol: it reads (and
            accept[MAX_SIZE] = api.max_message_size  # inflates) no larger message than the API takes
            accept[CLOSE_TIMEOUT] = api.close_timeout  # and waits no longer for the client's close
            accept[PING_INTERVAL] = api.ping_interval  # its keepalive and stall rule: the API's, as
            accept[PING_TIMEOUT] = api.ping_timeout  # the splice's (None: off), not uvicorn's ws_ping_*
            accept[ON_SHUTDOWN] = relay.client_closed_at_shutdown  # the 1012 mirrored now, as the splice does
            if isinstance(opened, WebSocketsConnection) and not opened.compressed:
                # The client's compression mirrors the upstream's: a backend that agreed to none was sent
                # what the client's messages inflate to (1 MiB of zeros for ~1 KB: ~1,000x its bandwidth).
                # An in-process app (``asgi:``) takes messages inflated in any case, in this process.
                accept[NO_COMPRESSION] = True
        return Proxied(backend, opened, relay, accept, slot)


def _splice(
    api: Api,
    scope: Scope,
    raw: RawUpstream,
    message_policies: MessagePolicySet | None,
    handshake: HandshakeContext,
    sent: SentCredentials,
) -> Splice:
    offer = scope["extensions"][EXTENSION]
    server_max = offer.get("max_size") if isinstance(offer, dict) else None
    max_size = api.max_message_size
    if isinstance(server_max, int):  # the server's ws_max_size, as uvicorn enforces it on the relay
        max_size = min(max_size, server_max)
    if message_policies is not None:
        return FramedRelay(
            raw, policies=message_policies, handshake=handshake, max_message_size=max_size,
            close_timeout=api.close_timeout, ping_interval=api.ping_interval, ping_timeout=api.ping_timeout,
            sent=sent,
        )  # fmt: skip
    return Splice(raw, max_message_size=max_size, close_timeout=api.close_timeout,
                  ping_interval=api.ping_interval, ping_timeout=api.ping_timeout, sent=sent)  # fmt: skip


@contextlib.contextmanager
def _refusal_without_credentials(
    api: Api, scope: Scope, requests: list[UpstreamRequest], read_cookies: frozenset[str], trace: HandshakeTrace
) -> Iterator[None]:
    """An upstream's refusal, relayed to the client, without the credentials the gateway sent it: a
    backend's error page may echo the request (``upstream.refusal_secrets``); nor setting a cookie the
    policies read (``upstream.set_cookies``), nor one for more than the API (``upstream.cookie_scope``);
    never stored by a cache (``upstream.refusal_headers``)."""
    try:
        yield
    except UpstreamRejected as exc:
        scrubbed = without_credentials(exc, sent_credentials(requests))
        headers = relayed_refusal_headers(_kept_cookies(api, scope, scrubbed.headers, read_cookies, trace))
        relayed = UpstreamRejected(scrubbed.status, headers, scrubbed.body or b"")
        relayed.__traceback__ = exc.__traceback__
        raise relayed from None


def _without_cookies(
    api: Api, scope: Scope, accept: Message, read_cookies: frozenset[str], trace: HandshakeTrace
) -> Message:
    """``accept`` (a ``websocket.accept``) without the upstream's ``Set-Cookie`` of a cookie the policies
    read, and with the others held to the API's scope."""
    headers = accept["headers"]
    kept = _kept_cookies(api, scope, headers, read_cookies, trace)
    return accept if kept is headers else {**accept, "headers": kept}


def _kept_cookies(
    api: Api, scope: Scope, headers: Headers, read_cookies: frozenset[str], trace: HandshakeTrace
) -> Headers:
    """``headers`` without the Set-Cookie headers the API's upstreams may not send, the others held to its scope;
    each one dropped or narrowed logged (throttled) and counted (``ws_gateway.cookies.changed``)."""
    if not any(name == b"set-cookie" for name, _ in headers):  # nearly every answer: nothing to look at
        return headers
    kept, dropped = kept_cookies(headers, read_cookies, api.response_cookies)
    if dropped and (count := api.cookie_log.event()):
        why = "which the policies read" if all(name in read_cookies for name in dropped) else "not in response_cookies"
        # Names an upstream chose: each cut and quoted, escapes for control characters.
        names = ", ".join(repr(name[:_SHOWN_NAME]) for name in sorted(set(dropped))[:_SHOWN_NAMES])
        logger.warning(
            "API %s: an upstream's answer set a cookie %s (%s): dropped (%d answer%s)",
            api.config.name, why, names, count, "" if count == 1 else "s",
        )  # fmt: skip
    cookies = cookie_scope(scope, api.cookie_path, api.cookie_domains, api.cookie_paths)
    scoped, narrowed = scoped_cookies(kept, cookies)
    if dropped or narrowed:
        reasons = [drop_reason(name, read_cookies) for name in dropped]
        trace.upstream_cookies([*reasons, *(reason for cookie in narrowed for reason in cookie.reasons)])
    if narrowed and (count := api.cookie_scope_log.event()):
        # What an upstream chose: each cut and quoted, escapes for control characters.
        asked = ", ".join(f"{n.name[:_SHOWN_NAME]!r} ({n.asked[:_SHOWN_NAME]!r})" for n in narrowed[:_SHOWN_NAMES])
        logger.warning(
            "API %s: an upstream's answer set a cookie for more than the API (%s): held to the request's host "
            "and the path %r, a __Host- cookie dropped (%d answer%s; response_cookie_domains and "
            "response_cookie_paths allow more)",
            api.config.name, asked, cookies.path[:_SHOWN_NAME], count, "" if count == 1 else "s",
        )  # fmt: skip
    return scoped


_SHOWN_NAME = 64
_SHOWN_NAMES = 8


@contextlib.asynccontextmanager
async def _closed_on_failure(upstream: UpstreamConnection | RawUpstream, slot: ConnectionSlot) -> AsyncIterator[None]:
    """Connected, then failed before the relay was made: the upstream must not be left open, nor its slot held."""
    try:
        yield
    except BaseException:
        slot.release()
        with contextlib.suppress(Exception):
            await upstream.close(1011, "gateway error")
        raise


def _spliceable(api: Api, scope: Scope) -> bool:
    """The server offers passthrough; once per API, a warning when ``passthrough: true`` asked for it."""
    if EXTENSION in (scope.get("extensions") or {}):
        return True
    if not api.splice_warned:
        api.splice_warned = True
        logger.warning(
            "API %s: passthrough: true, but the server does not offer passthrough: relaying (serve with "
            "--ws asgi_ws_gateway.server:GatewayWebSocketProtocol, as 'asgi-ws-gateway run' does)",
            api.config.name,
        )
    return False


__all__ = ["Proxied", "open_proxy"]
