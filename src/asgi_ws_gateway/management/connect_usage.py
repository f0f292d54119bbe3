"""``asgi-ws-gateway connect URL``: an interactive terminal client for testing a WebSocket API.

Each line typed (or piped) is sent as a text message; ``/binary HEX`` sends bytes, ``/json {...}``
checks the JSON first, ``/close [CODE [REASON]]`` closes. At the end of the input the client closes
with 1000 (after ``--linger`` seconds for late replies). Every frame is printed with a timestamp,
its direction and size; the close code and reason are printed last. What the server sends (text,
close reason, a refusal's body) is printed with control, line-breaking and bidi characters as
escapes (``\\x1b``, ``\\n``): one event, one line, and nothing for the terminal to obey.

A message may be at most ``--max-size`` bytes (default 16 MiB), counted as it is inflated: a larger
one closes the connection with 1009 (exit code 6), so a server cannot make the client hold gigabytes
(one permessage-deflate message of ~1 MiB on the wire per GiB).

Credentials (``--token``, ``--subscription-key``, a credential ``-H`` header, ``-s``, the URL's) go
over plain ``ws://`` only to this host (``localhost``, ``127.0.0.0/8``, ``::1``): to another, they are
refused before anything is sent (exit 2) unless ``--allow-insecure-http``. An input that cannot be sent
(a ``-H`` without a colon, an ``-s`` with a space or a comma, a URL that is not ``ws://`` or ``wss://``)
is exit 2 naming the argument and what is wrong, never quoting it; the URL connected to is shown
without its credentials.
"""

from __future__ import annotations

DEFAULT_MAX_SIZE = 16 * 1024 * 1024
"""Bytes a received message may have, inflated (16 MiB); more closes the connection with 1009."""

__all__ = ["DEFAULT_MAX_SIZE"]
