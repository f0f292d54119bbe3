"""The gateway's own uvicorn protocols: what ``asgi-ws-gateway run`` serves with.

Under ``uvicorn app:app`` the same behaviour takes two flags::

    uvicorn app:app --ws asgi_ws_gateway.server:GatewayWebSocketProtocol \\
                    --http asgi_ws_gateway.server:GatewayHTTPProtocol

``GatewayWebSocketProtocol`` is uvicorn's ``websockets-sansio`` implementation with the fixes a
gateway needs on its edge, each in the module of one job (named in brackets) that the class composes:

* an upgrade request the parser refuses (request line over 8 KiB: 414; a header line over 8 KiB or
  more than 128 headers: 431; anything malformed: 400) gets its response and the connection is
  closed, instead of hanging with the response unsent (:mod:`.opening_handshake`);
* a refusal (``websocket.http.response`` or ``websocket.close`` before accept) is one INFO line, not
  ``ERROR: ASGI callable returned without completing handshake.`` (:mod:`.client_leg`);
* a misbehaving client (invalid UTF-8, a protocol error, an oversized message) is one INFO line with
  the close code, never a traceback; it gets its close frame and what it still sends is read and
  dropped until it closes (``close_timeout`` at most), where uvicorn reset a client still sending
  (:mod:`.client_faults`);
* the application may lower the largest message the server reads from one client (and so how far
  it inflates a compressed one): ``"asgi_ws_gateway.max_size": <bytes>`` in its ``websocket.accept``
  (the gateway sends its API's ``max_message_size``); a message over it closes the client with 1009
  and tells the application so (``"asgi_ws_gateway.too_big": True`` in the ``websocket.disconnect``);
  and how long to wait for the client's close frame after its own (``"asgi_ws_gateway.close_timeout":
  <seconds>``, the API's ``close_timeout``; uvicorn waited 10 s whatever it was); and the client's
  keepalive and stall window (``"asgi_ws_gateway.ping_interval"`` and ``"asgi_ws_gateway.ping_timeout"``,
  both or neither: seconds, or None for off; the API's, as the splice takes them), in place of uvicorn's
  ``ws_ping_interval`` and ``ws_ping_timeout``, which still serve every other connection (:mod:`.client_leg`,
  :mod:`.client_keepalive`);
* the application's ``websocket.accept`` may answer the client without the permessage-deflate the server
  negotiated at its request (``"asgi_ws_gateway.no_compression": True``): the relay says so when its
  upstream leg has no compression, which uvicorn's ``ws_per_message_deflate`` (every connection) cannot
  (:mod:`.client_leg`);
* the application's ``websocket.accept`` may also carry a callable the server calls with the
  ``websocket.disconnect`` it queues when it sends the client its 1012 at shutdown
  (``"asgi_ws_gateway.on_shutdown"``): the relay, waiting on an upstream that reads nothing, read that
  disconnect only once the wait ended (:mod:`.graceful_shutdown`);
* each fragment of a message but its last counts 64 bytes at least toward the message limit
  (``FRAGMENT_FLOOR``), as on the splice and the frame relay, which refuse the same messages: uvicorn
  counted only their bytes: a message of the limit's size in one-byte fragments passed, and one of empty
  fragments never ended, at ~20 µs of the event loop a frame (:mod:`.server_protocol`, :mod:`.client_leg`);
* what a client sends before its handshake is answered (it did not wait for the 101) is held, unread,
  and read first once the application accepts or splices (uvicorn parsed it before the application
  decided, and a splice lost it with the parser) (:mod:`.client_leg`);
* at shutdown (SIGTERM), a client whose handshake is not answered yet gets the gateway's 503
  draining refusal (``Retry-After``, ``Connection: close``): its task is cancelled with
  ``SHUTDOWN_REFUSAL``, which the gateway answers (another application gets the same 503 from this
  protocol), where uvicorn sent a bare 500 and left the handshake running; an accepted client gets
  1012 and what it still sends is read and dropped until its close, as for a protocol error (uvicorn
  reset a client still sending: 1006), and a client that reads nothing is dropped ``close_timeout``
  (and a second) later, within half of uvicorn's ``timeout_graceful_shutdown`` when that is set:
  uvicorn's close waited for its unread data to drain, and the shutdown never ended (:mod:`.graceful_shutdown`);
* a client that leaves before its handshake is answered (a reset, a close, or a half-close: a FIN before
  the 101) has the application's task cancelled with ``CLIENT_GONE``, which the gateway takes back: its
  leases released at once, no further backend dialled, an upstream being opened dropped, nothing answered
  or logged but the access line (``abandoned``, ``client went away``); another application sees a
  ``CancelledError`` at the await it is in. uvicorn queued a ``websocket.disconnect`` nobody read, and the
  handshake ran to its end holding what it took. A client whose FIN is read in the turn before the accept
  (the transport closing, ``connection_lost`` still to come) is gone too: the accept raises
  ``ClientDisconnected`` (uvicorn skipped it without a word) and the application's return is no ERROR
  (:mod:`.client_leg`, :mod:`.graceful_shutdown`). While early frames are held (reading paused, above), the
  client's TCP state is looked at every ``HANGUP_PROBE_INTERVAL`` (Linux) (:mod:`.client_departure`);
* a client that takes in nothing of what is queued to it for ``ping_timeout`` (the application's, above,
  else uvicorn's ``ws_ping_timeout``; never when the application's ``ping_interval`` or ``ping_timeout``
  is None) while the writes to it are paused is dropped (aborted, no close frame; the application gets
  1006), by the splice's stall probe (:mod:`..progress`), and a pong late behind bytes still
  on their way to it is judged by their progress too: uvicorn's keepalive never dropped a client that
  reads nothing (its close waited for the buffer to drain), and failed one reading slowly with 1011;
  no keepalive ping is written while those writes are paused (without a ``ping_timeout`` uvicorn wrote
  one every ``ping_interval`` behind the rest, without bound) (:mod:`.client_keepalive`);
* as on the splice, a client that sent bytes since a keepalive ping is alive, whether the gateway read
  them or not (Linux's TCP_INFO says what its TCP delivered: :mod:`..progress`), and its
  round ends as if it had answered: uvicorn failed with 1011 a client whose pong waited behind a large
  message it was still sending (a browser on a slow uplink), or waited unread while the application
  did not read it. One that sent nothing and did not answer gets 1011 ``keepalive ping timeout``, read
  or not, unless what it sent before fills the window the gateway announced to it (backpressure: its
  silence is nobody's; the upstream leg's keepalive judges the other side; where the kernel does not
  tell, a client not read is not charged). Before, a client not read was never pinged, and a dead one,
  its message unread, stayed open for ever (:mod:`.client_keepalive`);
* a bad ``Sec-WebSocket-Version`` answers 400 with ``Sec-WebSocket-Version: 13`` (RFC 6455 §4.4)
  (:mod:`.server_protocol`);
* a client that pings while it reads nothing is owed one pong, not one per ping (:mod:`..held_pings`,
  :mod:`.server_protocol`);
* its log lines carry the path but never the query string (credentials travel there:
  :mod:`.log_lines`);
* uvicorn's own line per connection (``"WebSocket /path" [accepted]``, or the refusal's status) is
  written at DEBUG, not INFO, for a connection the gateway writes an access-log line for (one line
  per connection, as nginx and Envoy log); other connections keep it at INFO (:mod:`.log_lines`);
* the ``asgi_ws_gateway.passthrough`` scope extension (:mod:`.passthrough_handover`): instead of
  ``websocket.accept`` the application may send::

    {"type": "asgi_ws_gateway.passthrough.accept", "subprotocol": ..., "headers": [...],
     "extensions": "<Sec-WebSocket-Extensions value or None>", "protocol": <asyncio.Protocol>,
     "on_started": <callable>, "on_shutdown": <callable>}

  The extension's value is ``{"max_size": <the server's ws_max_size>, "taken_in": <callable>}`` (the
  second: a count that grows as the client takes in what is sent to it, which the relay's close wait
  looks at, as the splice's looks at its sides: :mod:`..progress`). The server answers 101
  with those headers (the extensions it negotiated itself are dropped: the application negotiated
  them end to end), stops parsing, and hands the transport to ``protocol``;
  ``on_started()`` follows at once, ``on_shutdown()`` when the server shuts down. The application's
  call must not return before the connection is over, and must not call ``receive`` or ``send``
  again: the server keeps nothing of the connection but the transport it handed over.

``GatewayHTTPProtocol`` (see :mod:`asgi_ws_gateway.server.head_deadline`) closes a client that does not
send a complete request head in time, which the WebSocket protocol cannot see: uvicorn parses the
upgrade request in its HTTP protocol before handing the connection over.

``PassthroughWebSocketProtocol`` is the former name of ``GatewayWebSocketProtocol``.
"""

from __future__ import annotations

from .client_departure import ClientDeparture
from .client_faults import ClientFaults
from .client_keepalive import ClientKeepalive
from .client_leg import ClientLeg
from .graceful_shutdown import ABORT_MARGIN, SHUTDOWN_REASON, GracefulShutdown
from .head_deadline import HEADER_TIMEOUT_ENV
from .http import GatewayH11Protocol, GatewayHTTPProtocol
from .opening_handshake import OpeningHandshake
from .passthrough_handover import PassthroughHandover
from .server_protocol import SUPPORTED_VERSION


class GatewayWebSocketProtocol(
    GracefulShutdown, ClientDeparture, ClientFaults, PassthroughHandover, OpeningHandshake, ClientKeepalive, ClientLeg
):
    """uvicorn's sans-I/O WebSocket protocol with the gateway's edge fixes (see the module docstring).

    Each base is one job; :class:`ClientLeg`, last, holds the connection's state and the per-frame
    path, next to uvicorn's class: its calls to uvicorn's methods pass no other class."""


PassthroughWebSocketProtocol = GatewayWebSocketProtocol
"""The former name, kept importable: ``--ws asgi_ws_gateway.server:PassthroughWebSocketProtocol``."""

__all__ = [
    "ABORT_MARGIN",
    "HEADER_TIMEOUT_ENV",
    "SHUTDOWN_REASON",
    "SUPPORTED_VERSION",
    "GatewayH11Protocol",
    "GatewayHTTPProtocol",
    "GatewayWebSocketProtocol",
    "PassthroughWebSocketProtocol",
]
